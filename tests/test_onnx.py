"""ONNX export and the onnxruntime backend (issue 19): same heatmaps as torch for every preset
and the refiner, same poses on a real image, bad files refused in one line, the export cache.

The published 4-stack layout (``imhn-official``, 129 M parameters) takes 18 s to export here
(a 383 MB graph), too slow for a unit test, so its layout (stacks joined by merges, six dilated
convolutions, no encoder) is tested with 2 stacks at width 32 (:data:`OFFICIAL_LAYOUT`). The full
network, checked once the same way: 6.7e-6 and 9.6e-6 relative at 128×128 and 256×192.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from tiny_model import TINY_CONFIG

from posecli import backends, onnxfile
from posecli.assemble import build_estimator
from posecli.checkpoint import save_checkpoint
from posecli.cli import run
from posecli.config import MODEL_PRESETS, REFINER_PRESETS, InferenceConfig, Preprocessing
from posecli.errors import CheckpointError, UsageError
from posecli.loader import load_model, load_refiner
from posecli.model import build_network, build_refiner
from posecli.networks import PoseModel, RefinerModel

CPU = torch.device("cpu")
EVAL_IMAGES = Path(__file__).resolve().parents[2] / "shared/data/eval/cocomini-train/images"

#: imhn-official's layout (merged stacks, 6 dilated convs, no encoder) at a testable size.
OFFICIAL_LAYOUT = replace(
    MODEL_PRESETS["imhn-official"], stacks=2, width=32, increase=16, head_width=32
)

IMHN_CONFIGS = {**MODEL_PRESETS, "imhn-official": OFFICIAL_LAYOUT}


def randomised(network: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``network`` in eval mode with random BatchNorm statistics and affine parameters, so that
    every layer matters (fresh BatchNorms are identities, fresh outputs near 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
    return network.eval()


def exported(model: PoseModel | RefinerModel, path: Path) -> PoseModel | RefinerModel:
    """``model`` written with ``onnxfile.export_onnx`` and loaded back from ``path``."""
    onnxfile.export_onnx(model, path)
    loader = load_refiner if isinstance(model, RefinerModel) else load_model
    return loader(path)


def assert_close(found: torch.Tensor, expected: torch.Tensor) -> None:
    """Within 1e-4 of the largest magnitude (relative), same shape."""
    assert found.shape == expected.shape
    scale = float(expected.abs().max())
    assert scale > 0 and float((found - expected).abs().max()) <= 1e-4 * scale


@pytest.mark.parametrize("preset", sorted(IMHN_CONFIGS))
def test_imhn_heatmaps_match_torch_for_every_preset(preset: str, tmp_path: Path) -> None:
    config = IMHN_CONFIGS[preset]
    torch.manual_seed(0)
    network = randomised(build_network(config), seed=1)
    model = PoseModel.from_network(network, config, name=preset)
    loaded = exported(model, tmp_path / f"{preset}.onnx")
    assert loaded.network is None and loaded.config == config and loaded.layout == model.layout
    on_torch = backends.make_runner(model, backends.TORCH, CPU)
    on_onnx = backends.make_runner(loaded, backends.ONNXRUNTIME, CPU, threads=1)
    rng = np.random.default_rng(2)
    for batch, height, width in ((1, 64, 128), (2, 192, 128)):  # dynamic batch, height, width
        images = rng.normal(size=(batch, 3, height, width)).astype(np.float32)
        expected = on_torch(images)
        assert expected.shape == (batch, 50, height // 4, width // 4)
        assert_close(on_onnx(images), expected)


@pytest.mark.parametrize("preset", ["refiner-lite0-128x96", "refiner-lite0-256x192-n3"])
def test_refiner_heatmaps_match_torch(preset: str, tmp_path: Path) -> None:
    """Both crop sizes, one and several instance selectors, batches of 1 and 3."""
    config = REFINER_PRESETS[preset]
    torch.manual_seed(0)
    network = randomised(build_refiner(config), seed=3)
    model = RefinerModel.from_network(network, config, name=preset)
    loaded = exported(model, tmp_path / f"{preset}.onnx")
    assert loaded.config == config and loaded.layout == model.layout
    on_torch = backends.make_runner(model, backends.TORCH, CPU)
    on_onnx = backends.make_runner(loaded, backends.ONNXRUNTIME, CPU, threads=1)
    rng = np.random.default_rng(4)
    for batch in (1, 3):
        crops = rng.normal(size=(batch, 3, config.crop_height, config.crop_width))
        selectors = np.arange(batch) % config.instances  # (batch,) int64
        expected = on_torch(crops.astype(np.float32), selectors)
        assert_close(on_onnx(crops.astype(np.float32), selectors), expected)


def test_metadata_holds_the_checkpoint_header(checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    assert run(["export", "-m", str(checkpoint), "-o", str(path), "--format", "onnx", "-q"]) == 0
    proto = onnx.load(str(path))
    stated = {entry.key: entry.value for entry in proto.metadata_props}
    assert set(stated) == set(onnxfile.HEADER_KEYS)
    assert proto.opset_import[0].version >= 17
    model = load_model(path)
    assert model.config == TINY_CONFIG and model.preprocessing == Preprocessing()
    assert model.provenance["exported_from"] == "tiny" and model.file == path


@pytest.fixture
def bundled_default() -> PoseModel:
    try:
        return load_model("default")
    except CheckpointError as error:
        pytest.skip(str(error))


@pytest.mark.skipif(not EVAL_IMAGES.is_dir(), reason="needs ../shared/data/eval")
def test_same_poses_from_both_backends_on_a_real_image(bundled_default: PoseModel) -> None:
    path = sorted(EVAL_IMAGES.glob("*.jpg"))[0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    config = InferenceConfig(device="cpu", threads=1)
    on_torch = build_estimator(bundled_default, replace(config, backend="torch")).predict([image])[
        0
    ]
    estimator = build_estimator(bundled_default, config)  # auto: a model file on the CPU
    assert estimator.backend == "onnxruntime"
    on_onnx = estimator.predict([image])[0]
    assert len(on_torch) == len(on_onnx) > 0
    for a, b in zip(on_torch, on_onnx, strict=True):
        np.testing.assert_allclose(b.keypoints, a.keypoints, atol=0.01)
        assert abs(a.score - b.score) < 1e-4


def tiny_onnx(checkpoint: Path, folder: Path) -> Path:
    path = folder / "tiny.onnx"
    onnxfile.export_onnx(load_model(checkpoint), path)
    return path


def with_metadata(source: Path, path: Path, **changes: str) -> Path:
    """A copy of the ONNX file ``source`` at ``path`` with some metadata values replaced."""
    proto = onnx.load(str(source))
    for entry in proto.metadata_props:
        entry.value = changes.get(entry.key, entry.value)
    onnx.save(proto, str(path))
    return path


def refuses(model: Path, image: Path, folder: Path, capsys: pytest.CaptureFixture) -> str:
    """The one-line error of ``posecli images`` with ``--model model`` (exit 1)."""
    out = folder / "poses.json"
    code = run(["images", str(image), "--json", str(out), "--model", str(model), "-q"])
    error = capsys.readouterr().err.strip()
    assert code == 1 and not out.exists()
    assert error.startswith("posecli: error: ") and "\n" not in error and "Traceback" not in error
    return error


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.full((48, 64, 3), 90, dtype=np.uint8))
    return path


def test_a_truncated_or_foreign_onnx_file_is_refused_in_one_line(
    checkpoint: Path, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    whole = tiny_onnx(checkpoint, tmp_path).read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(whole[: len(whole) // 2])
    assert "truncated.onnx" in refuses(truncated, image, tmp_path, capsys)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all\n" * 10)
    assert "cannot read ONNX model" in refuses(garbage, image, tmp_path, capsys)
    plain = tmp_path / "plain.onnx"  # a real ONNX graph without posecli's metadata
    proto = onnx.load_from_string(whole)
    del proto.metadata_props[:]
    onnx.save(proto, str(plain))
    assert "without posecli metadata" in refuses(plain, image, tmp_path, capsys)


def test_an_onnx_file_that_does_not_match_its_metadata_is_refused(
    checkpoint: Path, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = tiny_onnx(checkpoint, tmp_path)
    layout = load_model(source).layout.to_dict()
    stride = with_metadata(source, tmp_path / "stride.onnx", output=str({**layout, "stride": 8}))
    assert "not JSON" in refuses(stride, image, tmp_path, capsys)
    bad_layout = json.dumps({**layout, "stride": 8})
    stride = with_metadata(source, tmp_path / "stride.onnx", output=bad_layout)
    assert "output layout" in refuses(stride, image, tmp_path, capsys)
    shallow = replace(TINY_CONFIG, depth=2)  # a network taking 16-pixel multiples: not this one
    stated = PoseModel.from_network(build_network(shallow), shallow)
    header = {
        "config": json.dumps(shallow.to_dict()),
        "output": json.dumps(stated.layout.to_dict()),
    }
    shallow_file = with_metadata(source, tmp_path / "shallow.onnx", **header)
    assert "does not run as its stated network" in refuses(shallow_file, image, tmp_path, capsys)
    refiner = REFINER_PRESETS["refiner-lite0-128x96"]
    refiner_layout = RefinerModel.from_network(build_refiner(refiner), refiner).layout
    as_refiner = with_metadata(
        source, tmp_path / "refiner.onnx", kind='"refiner"', config=json.dumps(refiner.to_dict()),
        output=json.dumps(refiner_layout.to_dict()),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="does not match its stated network"):
        load_refiner(as_refiner)
    assert "is a 'refiner' checkpoint" in refuses(as_refiner, image, tmp_path, capsys)


def test_the_export_cache_exports_once(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(checkpoint)
    config = InferenceConfig(device="cpu", backend="onnxruntime", threads=1)
    build_estimator(model, config)
    cached = onnxfile.cached_onnx(model)
    assert cached.parent == onnxfile.cache_folder() and cached.is_file()

    def no_export(*args: object) -> None:
        raise AssertionError("exported twice")

    monkeypatch.setattr(onnxfile, "export_onnx", no_export)
    estimator = build_estimator(load_model(checkpoint), config)
    runtime = estimator.runner.runtime  # type: ignore[attr-defined]
    assert runtime.get_session_options().intra_op_num_threads == 1
    cached.write_bytes(cached.read_bytes()[:1000])  # a damaged entry is exported again
    monkeypatch.undo()
    build_estimator(load_model(checkpoint), config)
    load_model(cached)  # whole again (the cache holds the metadata too)


def test_backend_choice(checkpoint: Path, tmp_path: Path) -> None:
    model = load_model(checkpoint)
    cpu = InferenceConfig(device="cpu")
    assert build_estimator(model, cpu).backend == "onnxruntime"  # a model file on the CPU
    in_memory = PoseModel.from_network(build_network(TINY_CONFIG), TINY_CONFIG)
    assert build_estimator(in_memory, cpu).backend == "torch"  # a network that may be training
    onnx_model = load_model(tiny_onnx(checkpoint, tmp_path))
    with pytest.raises(UsageError, match="ONNX file"):
        build_estimator(onnx_model, replace(cpu, backend="torch"))
    with pytest.raises(UsageError, match="backend: must be one of"):
        build_estimator(model, replace(cpu, backend="tensorflow"))


def test_cli_backend_option_and_export_format(
    checkpoint: Path, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    common = ["images", str(image), "--model", str(checkpoint), "--box-size", "64", "-q"]
    assert run([*common, "--json", str(tmp_path / "a.json"), "--backend", "torch"]) == 0
    assert run([*common, "--json", str(tmp_path / "b.json"), "--backend", "onnxruntime"]) == 0
    assert run([*common, "--json", str(tmp_path / "c.json"), "--backend", "tf"]) == 2
    out = tmp_path / "model.pt"
    assert run(["export", "-m", str(checkpoint), "-o", str(out), "--format", "onnx"]) == 2
    onnx_path = tiny_onnx(checkpoint, tmp_path)
    assert run(["export", "-m", str(onnx_path), "-o", str(out), "-q"]) == 1
    assert "ONNX model" in capsys.readouterr().err


def _float_and_int8(tmp_path: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[Path, Path]:
    """A random ``refiner-lite0-128x96`` exported to ONNX, and its int8 copy calibrated on
    ``feeds``."""
    config = REFINER_PRESETS["refiner-lite0-128x96"]
    torch.manual_seed(0)
    model = RefinerModel.from_network(randomised(build_refiner(config), seed=5), config, name="r")
    source = onnxfile.export_onnx(model, tmp_path / "float.onnx")
    return source, onnxfile.quantize_onnx(source, tmp_path / "int8.onnx", feeds, note="test")


def test_an_int8_refiner_loads_like_its_float_one_and_keeps_its_heatmaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    crops = [rng.normal(size=(2, 3, 128, 96)).astype(np.float32) for _ in range(4)]
    source, int8 = _float_and_int8(tmp_path, [{"crops": batch} for batch in crops])
    original, loaded = load_refiner(source), load_refiner(int8)
    assert loaded.config == original.config and loaded.layout == original.layout
    assert loaded.provenance == {**original.provenance, "quantized": "test"}
    graph = onnx.load(str(int8)).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    weights = [node.input[1] for node in graph.node if node.op_type == "Conv"]
    assert weights[0] not in dequantized and weights[-1] not in dequantized  # float ends
    assert all(weight in dequantized for weight in weights[1:-1])  # int8 in between
    on_float = backends.make_runner(original, backends.ONNXRUNTIME, CPU, threads=1)
    on_int8 = backends.make_runner(loaded, backends.ONNXRUNTIME, CPU, threads=1)
    expected, found = on_float(crops[0]).flatten(), on_int8(crops[0]).flatten()
    assert not torch.equal(found, expected)
    correlation = torch.corrcoef(torch.stack([found, expected]))[0, 1]
    assert float(correlation) > 0.95  # random weights: int8 noise on the same signal


def test_int8_without_calibration_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nothing to calibrate"):
        _float_and_int8(tmp_path, [])
    assert not (tmp_path / "int8.onnx").exists()


def test_cli_export_int8_checks_its_options_before_loading(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = REFINER_PRESETS["refiner-lite0-128x96"]
    refiner = save_checkpoint(tmp_path / "r.pt", build_refiner(config), config, Preprocessing(), {})
    out = tmp_path / "r.onnx"
    int8 = ["export", "-m", str(refiner), "-o", str(out), "--format", "onnx-int8", "-q"]
    assert run(int8) == 2  # no --calibration
    assert run([*int8[:-3], "--format", "onnx", "--calibration", str(tmp_path), "-q"]) == 2
    assert run([*int8, "--calibration", str(tmp_path / "none")]) == 1
    assert "not found" in capsys.readouterr().err
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((64, 48, 3), 127, np.uint8))
    imhn = ["export", "-m", str(checkpoint), "-o", str(out), "--format", "onnx-int8", "-q"]
    assert run([*imhn, "--calibration", str(photo)]) == 2 and not out.exists()
    assert "quantises refiners" in capsys.readouterr().err


@pytest.mark.skipif(not EVAL_IMAGES.is_dir(), reason="needs ../shared/data/eval")
def test_cli_export_int8_calibrates_on_the_people_of_real_images(
    bundled_default: PoseModel, tmp_path: Path
) -> None:
    config = replace(REFINER_PRESETS["refiner-lite0-128x96"], instances=2)
    torch.manual_seed(0)
    network = randomised(build_refiner(config), seed=7)
    refiner = save_checkpoint(tmp_path / "r.pt", network, config, Preprocessing(), {})
    image = sorted(EVAL_IMAGES.glob("*.jpg"))[0]  # people the bundled model finds
    out = tmp_path / "r-int8.onnx"
    args = ["export", "-m", str(refiner), "-o", str(out), "--format", "onnx-int8"]
    assert run([*args, "--calibration", str(image), "-q"]) == 0
    loaded = load_refiner(out)
    assert loaded.config == config and "in 1 images" in loaded.provenance["quantized"]


def test_the_int8_refiner_is_chosen_on_onnxruntime_only(bundled_default: PoseModel) -> None:
    config = InferenceConfig(device="cpu", refine=True, refine_int8=True, threads=1)
    on_onnx = build_estimator(bundled_default, config)
    assert on_onnx.refinement is not None and on_onnx.refinement.refiner.name == "refiner-int8"
    on_torch = build_estimator(bundled_default, replace(config, backend="torch"))
    assert on_torch.refinement is not None and on_torch.refinement.refiner.name == "refiner"
    named = build_estimator(bundled_default, replace(config, refiner="refiner"))
    assert named.refinement is not None and named.refinement.refiner.name == "refiner"
