"""The network ↔ decoder contract travels with the model: checkpoints state their output layout,
loading checks it, and the Estimator reads which output to decode from it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import TINY_CONFIG

from posecli.assemble import build_estimator
from posecli.config import InferenceConfig, RefinerConfig
from posecli.errors import CheckpointError
from posecli.loader import load_model
from posecli.model import build_network, output_layout
from posecli.networks import PoseModel
from posecli.spec import NUM_CHANNELS, STRIDE


def test_checkpoints_state_the_layout_of_either_kind(checkpoint: Path) -> None:
    stored = torch.load(checkpoint, weights_only=True)
    assert stored["output"] == output_layout(TINY_CONFIG).to_dict()
    assert stored["output"]["kind"] == "imhn"
    assert stored["output"]["channels"] == NUM_CHANNELS
    assert stored["output"]["stride"] == STRIDE
    assert output_layout(RefinerConfig()).to_dict()["kind"] == "refiner"
    assert load_model(checkpoint).layout.to_dict() == stored["output"]


def test_a_checkpoint_stating_another_layout_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    stored = torch.load(checkpoint, weights_only=True)
    stored["output"] = {**stored["output"], "decode_stack": 0, "stride": 8}
    torch.save(stored, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="decode_stack, stride"):
        load_model(tmp_path / "other.pt")


def test_an_older_checkpoint_without_a_layout_still_loads(checkpoint: Path, tmp_path: Path) -> None:
    stored = torch.load(checkpoint, weights_only=True)
    del stored["output"]
    torch.save(stored, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").layout == output_layout(TINY_CONFIG)  # typed


class _LayoutModel(PoseModel):
    """A model whose stated layout is replaced (what another network kind would state)."""

    stated: object = None

    @property
    def layout(self) -> object:
        return self.stated


def _model_stating(layout: object) -> PoseModel:
    network = build_network(TINY_CONFIG)
    model = _LayoutModel.from_network(network, TINY_CONFIG)
    model.stated = layout
    return model


def test_the_estimator_decodes_the_output_the_layout_names() -> None:
    """Decoding the first stack's finest output instead of the last changes the heatmaps."""
    torch.manual_seed(0)
    network = build_network(TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "stacks": 2}))
    with torch.no_grad():  # a fresh second stack starts as the first: make them differ
        for parameter in network.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    config = network.config
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    inference = InferenceConfig(box_size=64, flip=False)
    last = build_estimator(PoseModel.from_network(network, config), inference).heatmaps([image])[0]
    first_model = _LayoutModel.from_network(network, config)
    first_model.stated = replace(output_layout(config), decode_stack=0)
    first = build_estimator(first_model, inference).heatmaps([image])[0]
    with torch.inference_mode():
        outputs = network(torch.zeros(1, 3, 64, 64))
    assert outputs[0][0].shape == outputs[-1][0].shape
    assert last.maps.shape == first.maps.shape
    assert not np.allclose(last.maps, first.maps)


IMHN_STATED = output_layout(TINY_CONFIG)


@pytest.mark.parametrize(
    ("layout", "named"),
    [
        (output_layout(RefinerConfig()), "kind"),
        (replace(IMHN_STATED, channels=17), "channels"),
        (replace(IMHN_STATED, stride=8), "stride"),
    ],
)
def test_the_estimator_refuses_a_layout_the_decoder_cannot_read(layout: object, named: str) -> None:
    with pytest.raises(CheckpointError, match=named):
        build_estimator(_model_stating(layout), InferenceConfig(box_size=64))
