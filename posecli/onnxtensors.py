"""The floating-point weights (initializers) of an ONNX file, read straight from its protobuf
bytes, without the ``onnx`` package: importing it costs more CPU time than a whole second of
video (issue 38), and loading a model only needs to know its weights are finite.

An ONNX file is a ``ModelProto``; its ``graph`` (field 7) holds ``initializer`` tensors
(field 5), each a ``TensorProto`` with ``data_type`` (2), ``name`` (8) and its values in
``raw_data`` (9, little-endian) or a typed field: ``float_data`` (4), ``double_data`` (10), or
``int32_data`` (5) holding the bits of float16 and bfloat16 values. Field numbers from onnx.proto;
protobuf wire format: varints, fixed 32/64-bit values and length-delimited bytes.
Tensors stored outside the file (external data) and initializers of sub-graphs are not read.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: ``TensorProto.DataType`` of the floating-point types, and their little-endian NumPy types
#: (bfloat16: the upper half of a float32, widened on reading).
FLOAT_TYPES = {1: "<f4", 10: "<f2", 11: "<f8", 16: "<u2"}
BFLOAT16 = 16

_GRAPH, _INITIALIZER = 7, 5
_DATA_TYPE, _FLOAT_DATA, _INT32_DATA, _NAME, _RAW_DATA, _DOUBLE_DATA = 2, 4, 5, 8, 9, 10


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it (ValueError when cut short)."""
    value = shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise ValueError("malformed protobuf varint")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def fields(message: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of each field of one protobuf message, in order:
    an int for a varint, the bytes of a fixed or length-delimited value (ValueError when the
    message is malformed)."""
    position = 0
    while position < len(message):
        key, position = _varint(message, position)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == 0:
            value, position = _varint(message, position)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, position = message[position : position + size], position + size
        elif wire == 2:
            size, position = _varint(message, position)
            value, position = message[position : position + size], position + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if position > len(message):
            raise ValueError("protobuf message cut short")
        yield number, wire, value


def float_initializers(model: bytes) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, values)`` of every floating-point initializer of an ONNX file's bytes, values
    a flat array (float16, float32 or float64; bfloat16 widened to float32)."""
    for number, _, graph in fields(memoryview(model)):
        if number != _GRAPH or not isinstance(graph, memoryview):
            continue
        for entry, _, tensor in fields(graph):
            if entry == _INITIALIZER and isinstance(tensor, memoryview):
                found = _float_tensor(tensor)
                if found is not None:
                    yield found


def _float_tensor(tensor: memoryview) -> tuple[str, np.ndarray] | None:
    """Name and flat values of a floating-point ``TensorProto``; ``None`` for other types."""
    data_type, name, chunks, bits = 0, "", [], []
    for number, wire, value in fields(tensor):
        if number == _DATA_TYPE and isinstance(value, int):
            data_type = value
        elif number == _NAME and isinstance(value, memoryview):
            name = bytes(value).decode("utf-8", "replace")
        elif number in (_RAW_DATA, _FLOAT_DATA, _DOUBLE_DATA) and isinstance(value, memoryview):
            chunks.append(bytes(value))  # packed, or one unpacked float / double
        elif number == _INT32_DATA:
            bits.extend(_packed_varints(value) if wire == 2 else [value])  # type: ignore[arg-type]
    if data_type not in FLOAT_TYPES:
        return None
    dtype = FLOAT_TYPES[data_type]
    if bits:
        values = np.asarray(bits, dtype=np.uint16).view(dtype)  # float16 or bfloat16 bits
    else:
        values = np.frombuffer(b"".join(chunks), dtype=dtype)
    if data_type == BFLOAT16:
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return name, values


def _packed_varints(value: memoryview) -> list[int]:
    """The varints of a packed repeated field."""
    found, position = [], 0
    while position < len(value):
        number, position = _varint(value, position)
        found.append(number)
    return found
