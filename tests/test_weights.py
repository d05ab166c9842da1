"""Checkpoints: the official layout, our format, unsafe pickles, the registry and devices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from posecli import registry
from posecli.checkpoint import OFFICIAL_PREPROCESSING, save_checkpoint
from posecli.config import MODEL_PRESETS, ModelConfig, Preprocessing
from posecli.errors import CheckpointError, ModelNotFoundError, OutputError, UsageError
from posecli.loader import load_model
from posecli.model import build_network
from posecli.networks import PoseModel
from posecli.registry import list_models

REFERENCE_TSV = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "reference"
    / "imhn_official_state_dict.tsv"
)
TINY = MODEL_PRESETS["imhn-tiny"]
SMALL = ModelConfig(stacks=2, width=32, increase=16, head_width=32, dilations=(2, 3))


def reference_layout() -> list[tuple[str, tuple[int, ...]]]:
    """(name with the ``posenet.`` prefix, shape) of every tensor of the official checkpoint."""
    if not REFERENCE_TSV.is_file():
        pytest.skip(f"shared reference {REFERENCE_TSV} is absent")
    layout = []
    for line in REFERENCE_TSV.read_text().splitlines():
        name, shape = line.split("\t")
        layout.append((name, tuple(int(n) for n in shape.strip("()").split(",") if n.strip())))
    return layout


def random_official_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator):
    if name.endswith("num_batches_tracked"):
        return torch.tensor(1000, dtype=torch.int64)
    if name.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator)
    return 0.05 * torch.randn(shape, generator=generator)


def placeholder(shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``shape`` stored as a single float (stride 0), to keep files tiny."""
    return torch.zeros(1).expand(shape) if shape else torch.tensor(0)


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A random state dict in the official layout, saved as the published trainer saved it."""
    generator = torch.Generator().manual_seed(0)
    state_dict = {
        name: random_official_tensor(name, shape, generator) for name, shape in reference_layout()
    }
    path = tmp_path_factory.mktemp("official") / "PoseNet_52_epoch.pth"
    torch.save({"weights": state_dict, "train_loss": 0.5, "epoch": 52}, path)
    return path, state_dict


def save_official_like(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    torch.save({"weights": state_dict, "epoch": 52}, path)
    return path


def randomised(config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """A network whose every parameter and BatchNorm statistic is random (not the init)."""
    generator = torch.Generator().manual_seed(seed)
    network = build_network(config)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            else:
                tensor.copy_(0.2 * torch.randn(tensor.shape, generator=generator))
    return network.eval()


def heatmaps(network: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [p.contiguous() for stack in network(images) for p in stack]


def test_official_checkpoint_loads_strictly_and_runs(official_checkpoint) -> None:
    path, saved = official_checkpoint
    model = load_model(path)
    assert model.config == MODEL_PRESETS["imhn-official"]
    assert model.preprocessing == OFFICIAL_PREPROCESSING
    assert model.preprocessing.colour_order == "BGR"
    assert model.name == "PoseNet_52_epoch"
    assert model.provenance["epoch"] == 52
    assert not model.network.training
    loaded = model.network.state_dict()
    for name in ("pre.conv1.weight", "hourglass.3.hg.3.4.convBlock.6.weight", "outs.2.4.conv.bias"):
        torch.testing.assert_close(loaded[name], saved["posenet." + name], rtol=0, atol=0)
    with torch.inference_mode():
        outputs = model.network(torch.rand(1, 3, 64, 64))
    assert [len(stack) for stack in outputs] == [5, 5, 5, 5]
    assert tuple(outputs[-1][0].shape) == (1, 50, 16, 16)
    assert all(torch.isfinite(p).all() for stack in outputs for p in stack)


def test_official_checkpoint_with_a_misshapen_tensor_is_refused(tmp_path: Path) -> None:
    state_dict = {name: placeholder(shape) for name, shape in reference_layout()}
    state_dict["posenet.outs.0.0.conv.weight"] = placeholder((17, 256, 1, 1))
    path = save_official_like(tmp_path / "misshapen.pth", state_dict)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "imhn-official" in message
    assert "shape of outs.0.0.conv.weight is (17, 256, 1, 1), expected (50, 256, 1, 1)" in message


def test_official_checkpoint_with_a_missing_tensor_is_refused(tmp_path: Path) -> None:
    state_dict = {name: placeholder(shape) for name, shape in reference_layout()}
    del state_dict["posenet.hourglass.0.hg.0.0.convBlock.0.weight"]
    path = save_official_like(tmp_path / "missing.pth", state_dict)
    with pytest.raises(
        CheckpointError, match=r"missing hourglass\.0\.hg\.0\.0\.convBlock\.0\.weight"
    ):
        load_model(path)


def test_official_layout_accepts_a_dataparallel_prefix(tmp_path: Path) -> None:
    layout = reference_layout()
    state_dict = {"module." + name: placeholder(shape) for name, shape in layout}
    model = load_model(save_official_like(tmp_path / "parallel.pth", state_dict))
    assert len(model.network.state_dict()) == len(layout)


def test_official_layout_with_one_stack_is_read_as_one_stack(tmp_path: Path) -> None:
    kept = [
        (name, shape)
        for name, shape in reference_layout()
        if "merge_" not in name
        and not any(
            f".{part}.{i}." in name for part in ("hourglass", "features", "outs") for i in (1, 2, 3)
        )
    ]
    model = load_model(
        save_official_like(tmp_path / "one.pth", {n: placeholder(s) for n, s in kept})
    )
    assert model.config == ModelConfig(stacks=1)


class Payload:
    """Any custom class: its pickle refers to code outside torch's allow-list."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_carrying_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weights": {"pre.conv1.weight": Payload(marker)}}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model(path)
    assert not marker.exists()


def test_a_custom_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "object.pt"
    torch.save({"format": "posecli", "config": SMALL}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated"])
def test_corrupt_files_raise_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read checkpoint|not a posecli or PyTorch"):
        load_model(path)


def test_foreign_checkpoints_raise_checkpoint_error(tmp_path: Path) -> None:
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_model(tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="neither a posecli checkpoint"):
        load_model(tmp_path / "other.pt")


def test_our_format_round_trips(tmp_path: Path) -> None:
    network = randomised(SMALL)
    preprocessing = Preprocessing(colour_order="RGB", mean=(0.485, 0.456, 0.406))
    provenance = {"data": "corpus", "teacher": ["movenet"], "epochs": 3, "loss": 0.25}
    path = save_checkpoint(tmp_path / "small.pt", network, SMALL, preprocessing, provenance)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.pt"]  # no temporary left over

    model = load_model(path)
    assert (model.config, model.preprocessing, model.provenance) == (
        SMALL,
        preprocessing,
        provenance,
    )
    assert model.name == "small"
    assert not model.network.training
    for name, tensor in network.state_dict().items():
        assert torch.equal(model.network.state_dict()[name], tensor), name
    images = torch.randn(1, 3, 64, 128)
    for expected, actual in zip(
        heatmaps(network, images), heatmaps(model.network, images), strict=True
    ):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_half_storage_round_trips_within_fp16_precision(tmp_path: Path) -> None:
    network = randomised(SMALL, seed=1)
    full = save_checkpoint(tmp_path / "full.pt", network, SMALL, Preprocessing(), {})
    half = save_checkpoint(tmp_path / "half.pt", network, SMALL, Preprocessing(), {}, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model = load_model(half)
    loaded = model.network.state_dict()
    assert all(t.dtype == torch.float32 for t in loaded.values() if t.is_floating_point())
    for name, tensor in network.state_dict().items():
        torch.testing.assert_close(loaded[name], tensor, rtol=1e-3, atol=1e-4)
    images = torch.randn(1, 3, 64, 64)
    for expected, actual in zip(
        heatmaps(network, images), heatmaps(model.network, images), strict=True
    ):
        assert (actual - expected).abs().max() <= 0.02 * expected.abs().max() + 1e-4


def test_our_format_refuses_a_different_shape(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "tiny.pt", build_network(TINY), TINY, Preprocessing(), {})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["head_width"] = 48
    torch.save(checkpoint, path)
    with pytest.raises(
        CheckpointError, match=r"shape of features\.0\.before_regress\.0\.0\.conv\.weight"
    ):
        load_model(path)


def test_our_format_refuses_other_versions_and_channel_counts(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "tiny.pt", build_network(TINY), TINY, Preprocessing(), {})
    checkpoint = torch.load(path, weights_only=True)
    torch.save({**checkpoint, "format_version": 2}, tmp_path / "v2.pt")
    with pytest.raises(CheckpointError, match="format version 2"):
        load_model(tmp_path / "v2.pt")
    torch.save(
        {**checkpoint, "config": {**checkpoint["config"], "channels": 17}}, tmp_path / "c.pt"
    )
    with pytest.raises(CheckpointError, match="differs in channels"):
        load_model(tmp_path / "c.pt")


def test_provenance_must_be_plain_data(tmp_path: Path) -> None:
    network = build_network(TINY)
    with pytest.raises(UsageError, match=r"provenance\.ap is a float64"):
        save_checkpoint(tmp_path / "x.pt", network, TINY, Preprocessing(), {"ap": np.float64(0.5)})
    with pytest.raises(UsageError, match=r"provenance\.data"):
        save_checkpoint(tmp_path / "x.pt", network, TINY, Preprocessing(), {"data": tmp_path})
    assert not list(tmp_path.iterdir())


def test_saving_with_the_wrong_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="imhn-tiny"):
        save_checkpoint(tmp_path / "x.pt", build_network(TINY), SMALL, Preprocessing(), {})


def test_unknown_names_and_missing_paths_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    with pytest.raises(ModelNotFoundError):
        load_model(tmp_path / "absent.pt")
    with pytest.raises(ModelNotFoundError, match="not a checkpoint file"):
        load_model(tmp_path)


def test_missing_default_model_says_no_trained_weights_are_bundled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelNotFoundError, match="no trained default weights") as caught:
        load_model("default")
    assert "--model PATH" in str(caught.value)


def test_registered_names_load_from_the_weights_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    assert {entry.name: entry.present for entry in list_models()} == {
        "default": False,
        "refiner": False,
        "refiner-int8": False,
        "prn": False,
        "simplepose-official": False,
    }
    save_checkpoint(tmp_path / "posecli-default.pt", build_network(TINY), TINY, Preprocessing(), {})
    assert {entry.name: entry.present for entry in list_models()}["default"] is True
    model = load_model("default")
    assert (model.name, model.config) == ("default", TINY)


def test_from_network_wraps_in_eval_mode() -> None:
    network = build_network(TINY).train()
    model = PoseModel.from_network(network, TINY)
    assert model.network is network and not network.training
    assert (model.name, model.preprocessing) == ("random", Preprocessing())
    assert model.device == torch.device("cpu")
    with pytest.raises(UsageError):
        PoseModel.from_network(network, SMALL)


def test_loaded_cpu_network_uses_channels_last(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "tiny.pt", build_network(TINY), TINY, Preprocessing(), {})
    weight = load_model(path).network.pre.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_saving_into_a_missing_folder_raises_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write checkpoint"):
        save_checkpoint(tmp_path / "no" / "x.pt", build_network(TINY), TINY, Preprocessing(), {})
