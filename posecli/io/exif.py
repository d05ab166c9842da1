"""EXIF orientation of encoded JPEG, PNG and WebP images, and turning pixels upright.

A small parser of the TIFF structure of the EXIF block (only the Orientation tag is read), so
that still images are upright whatever OpenCV's build applies. Standard library and NumPy only.
"""

from __future__ import annotations

import struct

import numpy as np


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1–8, 1 = upright) of an encoded JPEG, PNG or WebP image."""
    tiff = _exif_block(data)
    if tiff is None or len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (entries,) = struct.unpack_from(order + "H", tiff, ifd)
    for entry in range(ifd + 2, min(ifd + 2 + 12 * entries, len(tiff) - 11), 12):
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag == 0x0112 and kind == 3:  # Orientation, SHORT
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def _exif_block(data: bytes) -> bytes | None:
    """The TIFF-structured EXIF payload of a JPEG (APP1), PNG (eXIf) or WebP (EXIF) file."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_exif(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _chunk(data, 8, b"eXIf", ">", pad=False, crc=True)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        block = _chunk(data, 12, b"EXIF", "<", pad=True, crc=False)
        return block[6:] if block is not None and block.startswith(b"Exif\0\0") else block
    return None


def _jpeg_exif(data: bytes) -> bytes | None:
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no EXIF before the pixels
            return None
        (length,) = struct.unpack_from(">H", data, position + 2)
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            return segment[6:]
        position += 2 + length
    return None


def _chunk(data: bytes, position: int, name: bytes, order: str, *, pad: bool, crc: bool):
    """Payload of the first chunk called ``name`` in a PNG (big-endian) or RIFF file."""
    while position + 8 <= len(data):
        if order == ">":
            (length,) = struct.unpack_from(">I", data, position)
            kind = data[position + 4 : position + 8]
        else:
            kind = data[position : position + 4]
            (length,) = struct.unpack_from("<I", data, position + 4)
        if kind == name:
            return data[position + 8 : position + 8 + length]
        position += 8 + length + (4 if crc else 0) + (length % 2 if pad else 0)
    return None


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an ``(H, W, C)`` image stored with EXIF ``orientation`` upright (a view, no copy)."""
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # upside down
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # needs a quarter turn clockwise
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # transversed
        8: lambda a: np.rot90(a, 1),  # needs a quarter turn counter-clockwise
    }
    return transforms.get(orientation, transforms[1])(image)
