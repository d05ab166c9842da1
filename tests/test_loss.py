"""Heatmap loss: hand-computed values for plain L2, the paper's focal L2 and the published one."""

from __future__ import annotations

import pytest
import torch

from posecli.config import LossConfig
from posecli.errors import UsageError
from posecli.spec import MASK_CHANNEL, MAX_KEYPOINT_CHANNEL, NUM_CHANNELS
from posecli.train.loss import heatmap_loss, pixel_loss

L2 = LossConfig(kind="l2")
PAPER = LossConfig(kind="focal", gamma=2.0, alpha=0.1, beta=0.02)
PUBLISHED = LossConfig(kind="focal", gamma=1.0, alpha=0.0, beta=0.0)


@pytest.mark.parametrize(
    ("config", "foreground", "background"),
    [
        # foreground s = 0.2, t = 0.85: (0.65)² = 0.4225
        # background s = 0.3, t = 0:    (0.3)²  = 0.09
        (L2, 0.4225, 0.09),
        # paper: s_t = 0.2 - 0.1 = 0.1 → ×0.9² = 0.81; s_t = 1 - 0.3 - 0.02 = 0.68 → ×0.32²
        (PAPER, 0.4225 * 0.81, 0.09 * 0.1024),
        # published: s_t = 0.2 → ×0.8; s_t = 0.7 → ×0.3
        (PUBLISHED, 0.4225 * 0.8, 0.09 * 0.3),
    ],
)
def test_pixel_loss_hand_computed(config: LossConfig, foreground: float, background: float):
    prediction = torch.tensor([0.2, 0.3])
    target = torch.tensor([0.85, 0.0])
    loss = pixel_loss(prediction, target, config)
    assert loss.tolist() == pytest.approx([foreground, background], rel=1e-6)


def test_foreground_threshold_is_inclusive():
    prediction = torch.tensor([0.5, 0.5])
    target = torch.tensor([0.01, 0.009])  # foreground, background
    loss = pixel_loss(prediction, target, PUBLISHED)
    # foreground: (0.49)² × |1 - 0.5|; background: (0.491)² × |1 - (1 - 0.5)|: both × 0.5
    assert loss.tolist() == pytest.approx([0.49**2 * 0.5, 0.491**2 * 0.5], rel=1e-6)


def test_zero_gamma_is_plain_l2():
    prediction, target = torch.rand(3, 50, 4, 4), torch.rand(3, 50, 4, 4)
    focal = pixel_loss(prediction, target, LossConfig(kind="focal", gamma=0.0))
    assert torch.allclose(focal, pixel_loss(prediction, target, L2))


def _scenario(batch: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Two scales (2×2 and 1×1) with three wrong pixels at scale 0 and one at scale 1.

    Scale 0: keypoint channel 30 at (0, 0) predicts 0 for 1 (×3 → 3), the person mask at (0, 1)
    predicts 0.5 for 1 (0.25 × 0.1 → 0.025), body part 0 at (1, 1) predicts 0.2 for 0 (0.04):
    sum 3.065. Scale 1: the max-keypoint channel predicts 1 for 0: sum 1.
    """
    predictions = [torch.zeros(batch, NUM_CHANNELS, 2, 2), torch.zeros(batch, NUM_CHANNELS, 1, 1)]
    targets = [torch.zeros(batch, NUM_CHANNELS, 2, 2), torch.zeros(batch, NUM_CHANNELS, 1, 1)]
    targets[0][:, 30, 0, 0] = 1.0
    targets[0][:, MASK_CHANNEL, 0, 1] = 1.0
    predictions[0][:, MASK_CHANNEL, 0, 1] = 0.5
    predictions[0][:, 0, 1, 1] = 0.2
    predictions[1][:, MAX_KEYPOINT_CHANNEL, 0, 0] = 1.0
    masks = [torch.ones(batch, 1, 2, 2), torch.ones(batch, 1, 1, 1)]
    return predictions, targets, masks


def test_channel_and_scale_weights_hand_computed():
    predictions, targets, masks = _scenario()
    config = LossConfig(kind="l2", scale_weights=(1.0, 3.0))
    loss = heatmap_loss([predictions], targets, masks, config)
    assert loss.item() == pytest.approx((1.0 * 3.065 + 3.0 * 1.0) / 4.0, rel=1e-6)


def test_sum_over_pixels_mean_over_images_and_stacks():
    predictions, targets, masks = _scenario(batch=2)
    perfect = [t.clone() for t in targets]  # a second stack that predicts the targets exactly
    config = LossConfig(kind="l2", scale_weights=(1.0, 3.0))
    loss = heatmap_loss([predictions, perfect], targets, masks, config)
    assert loss.item() == pytest.approx((3.065 + 3.0) / 4.0 / 2.0, rel=1e-6)


def test_focal_paper_setting_in_the_full_loss():
    predictions, targets, masks = _scenario()
    config = LossConfig(kind="focal", gamma=2.0, alpha=0.1, beta=0.02, scale_weights=(1.0, 3.0))
    # keypoint: fg, s_t = -0.1 → ×1.21; mask: fg, s_t = 0.4 → ×0.36;
    # part: bg, s_t = 0.78 → ×0.0484; max map: bg, s = 1 → s_t = -0.02 → ×1.0404
    scale0 = 3.0 * 1.21 + 0.025 * 0.36 + 0.04 * 0.0484
    loss = heatmap_loss([predictions], targets, masks, config)
    assert loss.item() == pytest.approx((scale0 + 3.0 * 1.0404) / 4.0, rel=1e-6)


def test_miss_mask_zeroes_the_loss_and_its_gradient():
    predictions, targets, masks = _scenario()
    predictions = [p.requires_grad_() for p in predictions]
    zero_masks = [torch.zeros_like(m) for m in masks]
    loss = heatmap_loss([predictions], targets, zero_masks, LossConfig(scale_weights=(1.0, 1.0)))
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in predictions)


def test_miss_mask_per_pixel_and_per_channel():
    predictions, targets, masks = _scenario()
    config = LossConfig(kind="l2", scale_weights=(1.0, 3.0))
    masks[0][0, 0, 0, 0] = 0.0  # ignore the keypoint pixel: scale 0 keeps 0.065
    assert heatmap_loss([predictions], targets, masks, config).item() == pytest.approx(
        (0.065 + 3.0) / 4.0, rel=1e-6
    )
    per_channel = [torch.ones(1, NUM_CHANNELS, 2, 2), torch.ones(1, NUM_CHANNELS, 1, 1)]
    per_channel[0][0, 30] = 0.5  # half weight on the keypoint channel: 1.5 instead of 3
    assert heatmap_loss([predictions], targets, per_channel, config).item() == pytest.approx(
        (1.565 + 3.0) / 4.0, rel=1e-6
    )


def test_default_scale_weights_on_network_shaped_outputs():
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    outputs = [[torch.full((1, NUM_CHANNELS, *s), 0.5) for s in shapes]]
    targets = [torch.zeros(1, NUM_CHANNELS, *s) for s in shapes]
    masks = [torch.ones(1, 1, *s) for s in shapes]
    # L2 is 0.25 per pixel and channel; channel weights: 30 parts, 18 keypoints ×3, mask, max
    channel_sum = 30 * 1.0 + 18 * 3.0 + 0.1 + 1.0
    per_scale = [0.25 * channel_sum * h * w for h, w in shapes]
    weights = (0.1, 0.2, 0.4, 1.6, 6.4)
    expected = sum(w * s for w, s in zip(weights, per_scale, strict=True)) / sum(weights)
    assert heatmap_loss(outputs, targets, masks, L2).item() == pytest.approx(expected, rel=1e-6)


def test_mismatched_scales_and_unknown_kind_fail_clearly():
    predictions, targets, masks = _scenario()
    with pytest.raises(UsageError, match="per scale"):
        heatmap_loss([predictions], targets, masks, LossConfig())  # 5 weights, 2 scales
    with pytest.raises(UsageError, match="unknown loss kind"):
        heatmap_loss([predictions], targets, masks, LossConfig(kind="l1", scale_weights=(1, 1)))
