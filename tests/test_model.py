"""The IMHN network: output shapes, the official layout and parameter count, presets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from posecli.config import MODEL_PRESETS, ModelConfig
from posecli.model import IMHN, build_network, grow_stacks, scale_channels
from posecli.model.layers import Merge, Residual

REFERENCE_TSV = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "reference"
    / "imhn_official_state_dict.tsv"
)
SMALL = ModelConfig(stacks=2, width=32, increase=16, head_width=32, dilations=(2, 3))


@pytest.fixture(scope="module")
def official() -> IMHN:
    return build_network(MODEL_PRESETS["imhn-official"]).eval()


def parameter_count(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def expected_shapes(batch: int, height: int, width: int, channels: int = 50) -> list[tuple]:
    return [(batch, channels, height // (4 * 2**j), width // (4 * 2**j)) for j in range(5)]


def test_small_network_gives_every_stack_and_scale() -> None:
    network = build_network(SMALL).eval()
    with torch.inference_mode():
        outputs = network(torch.randn(2, 3, 128, 64))  # (N, 3, H, W)
    assert len(outputs) == 2
    for stack in outputs:
        assert [tuple(p.shape) for p in stack] == expected_shapes(2, 128, 64)


def test_official_network_gives_every_stack_and_scale(official: IMHN) -> None:
    with torch.inference_mode():
        outputs = official(torch.randn(1, 3, 64, 128))
    assert len(outputs) == 4
    for stack in outputs:
        assert [tuple(p.shape) for p in stack] == expected_shapes(1, 64, 128)
        assert all(torch.isfinite(p).all() for p in stack)


def test_official_preset_has_the_published_parameter_count(official: IMHN) -> None:
    assert parameter_count(official) == 128_998_760


def test_official_state_dict_equals_the_published_layout(official: IMHN) -> None:
    if not REFERENCE_TSV.is_file():
        pytest.skip(f"shared reference {REFERENCE_TSV} is absent")
    reference = {}
    for line in REFERENCE_TSV.read_text().splitlines():
        name, shape = line.split("\t")
        reference[name.removeprefix("posenet.")] = shape
    ours = {name: str(tuple(t.shape)) for name, t in official.state_dict().items()}
    assert len(reference) == 1848
    assert list(ours) == list(reference)
    assert ours == reference


def test_cpu_presets_have_their_documented_sizes() -> None:
    assert parameter_count(build_network(MODEL_PRESETS["imhn-cpu"])) == 4_012_814
    assert parameter_count(build_network(MODEL_PRESETS["imhn-tiny"])) == 520_260


def test_scale_channels_grow_by_the_increase() -> None:
    assert scale_channels(MODEL_PRESETS["imhn-official"]) == [256, 384, 512, 640, 768]
    assert scale_channels(SMALL) == [32, 48, 64, 80, 96]


def test_images_in_a_batch_do_not_influence_each_other() -> None:
    network = build_network(SMALL).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        together = network(images)[-1][0]
        alone = network(images[1:])[-1][0]
    torch.testing.assert_close(together[1:], alone, rtol=1e-4, atol=1e-5)


def test_fresh_network_starts_from_identity_blocks_and_near_zero_heatmaps() -> None:
    network = build_network(SMALL).eval()
    residuals = [m for m in network.modules() if isinstance(m, Residual)]
    merges = [m for m in network.modules() if isinstance(m, Merge)]
    assert residuals and merges
    assert all(torch.count_nonzero(m.last_bn.weight) == 0 for m in residuals)
    assert all(torch.count_nonzero(m.conv.bn.weight) == 0 for m in merges)
    with torch.inference_mode():
        heatmaps = network(torch.rand(1, 3, 64, 64))[-1][0]
    assert 0 < heatmaps.abs().max() < 0.5


def test_every_parameter_learns_and_the_loss_falls() -> None:
    torch.manual_seed(0)
    network = build_network(SMALL).train()
    images = torch.randn(2, 3, 64, 64)
    targets = [torch.rand(2, 50, 16 // 2**j, 16 // 2**j) for j in range(5)]
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)

    def loss_now() -> torch.Tensor:
        outputs = network(images)
        return sum(
            ((p - t) ** 2).mean() for stack in outputs for p, t in zip(stack, targets, strict=True)
        )

    first = loss_now()
    first.backward()
    assert all(p.grad is not None for p in network.parameters())
    optimiser.step()
    for _ in range(8):
        optimiser.zero_grad()
        loss = loss_now()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.8 * first.item()


@pytest.mark.parametrize("size", [(60, 64), (64, 96)])
def test_input_sides_must_be_multiples_of_64(size: tuple[int, int]) -> None:
    network = build_network(SMALL).eval()
    with pytest.raises(ValueError, match="multiples of 64"):
        network(torch.zeros(1, 3, *size))


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(stacks=0),
        ModelConfig(width=30),
        ModelConfig(increase=-1),
        ModelConfig(dilations=(0,)),
    ],
)
def test_impossible_configs_are_refused(config: ModelConfig) -> None:
    with pytest.raises(ValueError, match="ModelConfig"):
        build_network(config)


def trained_like(config: ModelConfig) -> IMHN:
    """A network whose weights are all random and non-zero, as after training."""
    torch.manual_seed(0)
    network = build_network(config)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.2)
    return network.eval()


def test_grown_network_keeps_its_predictions_and_new_stacks_repeat_the_last() -> None:
    one = trained_like(replace(SMALL, stacks=1))
    images = torch.randn(2, 3, 64, 128)  # (N, 3, H, W)
    with torch.inference_mode():
        before = one(images)[0]  # [(N, 50, H/4·2^-j, W/4·2^-j)]
    grown = grow_stacks(one, 3)
    assert grown.config.stacks == 3 and grown.training
    with torch.inference_mode():
        after = grown.eval()(images)
    assert len(after) == 3
    for stack in after:
        for old, new in zip(before, stack, strict=True):
            assert new.abs().max() > 0.1
            torch.testing.assert_close(new, old)
    grown_state = grown.state_dict()
    for key, tensor in one.state_dict().items():
        assert torch.equal(grown_state[key], tensor)
        if key.startswith("hourglass.0."):
            assert torch.equal(grown_state[key.replace("hourglass.0.", "hourglass.2.", 1)], tensor)


def test_networks_only_grow() -> None:
    two = build_network(SMALL)
    with pytest.raises(ValueError, match="only grow"):
        grow_stacks(two, 2)
