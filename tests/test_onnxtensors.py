"""Reading an ONNX file's float weights without the onnx package (posecli.onnxtensors): the
same tensors as onnx's own reader, every storage form, and NaN found in a shipped file's copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posecli.errors import CheckpointError
from posecli.onnxfile import check_finite
from posecli.onnxtensors import float_initializers

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

INT8_REFINER = Path(__file__).resolve().parents[1] / "weights" / "posecli-refiner-int8.onnx"


def _model(*tensors: TensorProto) -> bytes:
    graph = helper.make_graph([], "g", [], [], initializer=list(tensors))
    return helper.make_model(graph).SerializeToString()


def test_the_shipped_int8_refiner_reads_as_onnx_reads_it() -> None:
    model = onnx.load(str(INT8_REFINER))
    expected = {
        t.name: numpy_helper.to_array(t).ravel()
        for t in model.graph.initializer
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
    }
    found = dict(float_initializers(INT8_REFINER.read_bytes()))
    assert found.keys() == expected.keys() and len(found) > 50
    for name, values in expected.items():
        assert np.array_equal(found[name], values), name


def test_every_storage_form_of_float_tensors() -> None:
    values = np.array([1.5, -2.25, 0.0, 3.0], dtype=np.float32)
    raw = numpy_helper.from_array(values, "raw")
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [4], values.tolist())
    double = helper.make_tensor("double", TensorProto.DOUBLE, [4], values.astype(float).tolist())
    half = numpy_helper.from_array(values.astype(np.float16), "half")
    # make_tensor stores float16 and bfloat16 values as their bits in int32_data
    half_bits = helper.make_tensor("half_bits", TensorProto.FLOAT16, [4], values.tolist())
    brain = helper.make_tensor("brain", TensorProto.BFLOAT16, [4], values.tolist())
    assert half_bits.int32_data and brain.int32_data and not brain.raw_data
    integers = numpy_helper.from_array(np.arange(4, dtype=np.int64), "integers")
    found = dict(float_initializers(_model(raw, typed, double, half, half_bits, brain, integers)))
    assert sorted(found) == ["brain", "double", "half", "half_bits", "raw", "typed"]
    for name, array in found.items():
        assert np.array_equal(array.astype(np.float32), values), name


def test_a_nan_weight_is_found_and_a_cut_file_refused(tmp_path: Path) -> None:
    values = np.ones(8, dtype=np.float32)
    values[5] = np.nan
    path = tmp_path / "nan.onnx"
    path.write_bytes(_model(numpy_helper.from_array(values, "conv.weight")))
    with pytest.raises(CheckpointError, match="NaN or infinite values in conv.weight"):
        check_finite(path)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(INT8_REFINER.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="cannot read ONNX model"):
        check_finite(cut)
    check_finite(INT8_REFINER)  # the shipped file is finite
