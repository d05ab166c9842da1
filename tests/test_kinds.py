"""The table of network kinds: a new kind is its own module plus one row of ``KINDS``.

This file is that module for a throwaway kind (a two-convolution bottom-up network): its config
record, builder and layout live here, and one ``KINDS`` entry registers it. Nothing else is
touched, yet a checkpoint of it saves and loads, exports to ONNX and loads back, and runs through
the Estimator on both backends.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from posecli.assemble import build_estimator
from posecli.checkpoint import save_checkpoint
from posecli.config import DecodeConfig, InferenceConfig, Preprocessing
from posecli.errors import CheckpointError
from posecli.loader import checkpoint_kind, load, load_model, load_refiner
from posecli.model import KINDS, NetworkKind
from posecli.model.kinds import BOTTOM_UP_ROLE
from posecli.networks import PoseModel
from posecli.onnxfile import export_onnx
from posecli.spec import NUM_CHANNELS, STRIDE

TAG = "throwaway"


@dataclass(frozen=True)
class ThrowawayConfig:
    """The throwaway kind's shape: hidden channels."""

    hidden: int = 8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ThrowawayConfig:
        return cls(**values)


@dataclass(frozen=True)
class ThrowawayLayout:
    """Decodable heatmaps: 50 channels at stride 4 in posecli's order."""

    kind: ClassVar[str] = TAG
    channels: int = NUM_CHANNELS
    stride: int = STRIDE
    channel_order: str = "posecli-50"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


class ThrowawayNetwork(nn.Module):
    """``(N, 3, H, W)`` → ``(N, 50, H/4, W/4)`` heatmaps."""

    def __init__(self, config: ThrowawayConfig) -> None:
        super().__init__()
        self.config = config
        self.down = nn.Conv2d(3, config.hidden, 4, stride=STRIDE)
        self.out = nn.Conv2d(config.hidden, NUM_CHANNELS, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.down(images)))


THROWAWAY = NetworkKind(
    tag=TAG,
    role=BOTTOM_UP_ROLE,
    label="throwaway network",
    config_type=ThrowawayConfig,
    presets={},
    build=ThrowawayNetwork,
    layout=lambda config: ThrowawayLayout(),
    graph=lambda network, layout: network,
    graph_inputs=lambda config: ("images",),
    probe_inputs=lambda config: (np.zeros((1, 3, 64, 64), dtype=np.float32),),
    use="--model",
)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> NetworkKind:
    """The throwaway kind, registered for one test (the one table entry)."""
    monkeypatch.setitem(KINDS, TAG, THROWAWAY)
    return THROWAWAY


def test_a_new_kind_saves_loads_exports_and_runs_through_the_estimator(
    registered: NetworkKind, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    config = ThrowawayConfig()
    network = ThrowawayNetwork(config)
    path = save_checkpoint(tmp_path / "throwaway.pt", network, config, Preprocessing(), {})
    assert torch.load(path, weights_only=True)["kind"] == TAG
    assert checkpoint_kind(path) is registered
    model = load(path, registered.role)
    assert isinstance(model, PoseModel) and isinstance(model.network, ThrowawayNetwork)
    assert load_model(path).config == config  # a bottom-up kind is taken where the IMHN is
    onnx_path = export_onnx(model, tmp_path / "throwaway.onnx")
    exported = load(onnx_path, registered.role)
    assert exported.network is None and exported.config == config
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    settings = InferenceConfig(box_size=64, device="cpu")
    decode = DecodeConfig(peak_threshold=0.001, part_threshold=-1.0, min_mean_part_score=0.0)
    on_torch = build_estimator(model, replace(settings, backend="torch"), decode)
    on_onnx = build_estimator(exported, settings, decode)
    assert (on_torch.backend, on_onnx.backend) == ("torch", "onnxruntime")
    torch_maps = on_torch.heatmaps([image])[0].maps
    onnx_maps = on_onnx.heatmaps([image])[0].maps
    assert torch_maps.shape == (NUM_CHANNELS, 16, 21)  # 48×64 at height 64, stride 4
    np.testing.assert_allclose(onnx_maps, torch_maps, rtol=1e-4, atol=1e-4)
    assert len(on_torch.predict([image])[0]) == len(on_onnx.predict([image])[0])


def test_a_kind_is_named_where_another_is_expected(registered: NetworkKind, tmp_path: Path) -> None:
    config = ThrowawayConfig()
    path = save_checkpoint(tmp_path / "t.pt", ThrowawayNetwork(config), config, Preprocessing(), {})
    with pytest.raises(
        CheckpointError, match="'throwaway' checkpoint, not a refiner network; use it with"
    ):
        load_refiner(path)


def test_without_its_table_entry_the_kind_is_unknown(tmp_path: Path) -> None:
    config = ThrowawayConfig()
    with pytest.raises(ValueError, match="no network config"):
        save_checkpoint(tmp_path / "t.pt", ThrowawayNetwork(config), config, Preprocessing(), {})


#: Modules that may name the kinds' types or tags: the table and the kinds' own modules.
KIND_MODULES = {"kinds.py", "imhn.py", "refiner.py", "prn.py"}

#: The handle types and kind tags nothing outside the table may branch on.
HANDLE_TYPES = {"PoseModel", "RefinerModel", "PRNModel"}
KIND_TAGS = {"imhn", "refiner", "prn"}


def _branches_on_kind(tree: ast.AST) -> list[int]:
    """Lines of ``isinstance(x, <handle type>)`` calls and comparisons with a kind tag."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
            names = {getattr(n, "id", "") for n in ast.walk(node.args[1])}
            if names & HANDLE_TYPES:
                lines.append(node.lineno)
        if isinstance(node, ast.Compare) and getattr(node.left, "attr", "") != "grouping":
            constants = {getattr(n, "value", None) for n in [node.left, *node.comparators]}
            if constants & KIND_TAGS:  # (a grouping method named "prn" is no kind)
                lines.append(node.lineno)
    return lines


def test_nothing_outside_the_table_branches_on_a_kind() -> None:
    package = Path(__file__).resolve().parents[1] / "posecli"
    found = [
        f"{path.relative_to(package)}:{line}"
        for path in sorted(package.rglob("*.py"))
        if path.name not in KIND_MODULES
        for line in _branches_on_kind(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert found == []


def test_the_kind_check_finds_a_branch() -> None:
    branch = "if isinstance(model, RefinerModel) or model.kind == 'prn':\n    pass\n"
    assert _branches_on_kind(ast.parse(branch)) == [1, 1]
