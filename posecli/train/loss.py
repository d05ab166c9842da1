"""Heatmap loss: plain L2 or the paper's focal L2, over every stack and every output scale.

Focal L2 (Li et al., AAAI 2020; the published ``focal_l2_loss``): for a prediction
``s`` and its target ``t`` at one pixel of one channel,

    s_t    = s − α          where t ≥ foreground_threshold (foreground)
           = 1 − s − β      elsewhere (background)
    ℓ      = (s − t)² · |1 − s_t|^γ

so well-predicted ("easy") pixels, whose ``s_t`` is near 1, are down-weighted; α and β shift the
point at which a pixel counts as easy. ``γ = 0`` with any α, β is plain L2. As in the published
code the factor is not detached: gradients flow through it.

Weights and normalisation (the published ``MultiTaskLoss``): ``ℓ`` is multiplied by the
miss-mask (0 on ignored regions, optionally fractional per channel for pseudo-labels) and by a
channel weight (keypoint channels × ``keypoint_weight``, the person-mask channel ×
``mask_weight``, the others × 1), then **summed** over channels and pixels of each image and
**averaged** over the images of the batch and over the stacks. Scale ``j`` (finest first) gets
weight ``w_j``; the total is ``Σ_j w_j · L_j / Σ_j w_j``. Summing over pixels is what makes the
published scale weights meaningful: the coarsest map has 256× fewer pixels than the finest one
and 64× its weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from posecli.config import LossConfig
from posecli.errors import UsageError
from posecli.spec import KEYPOINT_CHANNELS, MASK_CHANNEL, NUM_CHANNELS

LOSS_KINDS = ("focal", "l2")


def channel_weights(config: LossConfig, num_channels: int = NUM_CHANNELS) -> torch.Tensor:
    """``(num_channels,)`` float32: 1 for body parts and the max map, keypoint and mask weights."""
    weights = torch.ones(num_channels, dtype=torch.float32)
    weights[KEYPOINT_CHANNELS] = config.keypoint_weight
    weights[MASK_CHANNEL] = config.mask_weight
    return weights


def pixel_loss(prediction: torch.Tensor, target: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Unweighted per-pixel loss ``ℓ`` (same shape as the inputs).

    Args:
        prediction: predicted heatmaps ``s``, any shape, float.
        target: target heatmaps ``t``, same shape.
        config: ``kind`` "l2" or "focal" with ``gamma``, ``alpha``, ``beta``,
            ``foreground_threshold``.
    """
    squared_error = (prediction - target) ** 2
    if config.kind == "l2":
        return squared_error
    if config.kind != "focal":
        raise UsageError(f"unknown loss kind {config.kind!r}; choose one of {LOSS_KINDS}")
    foreground = target >= config.foreground_threshold
    s_t = torch.where(foreground, prediction - config.alpha, 1.0 - prediction - config.beta)
    return squared_error * (1.0 - s_t).abs() ** config.gamma


def scale_loss(
    predictions: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, config: LossConfig
) -> torch.Tensor:
    """Loss at one output scale, summed over channels and pixels, mean over images and stacks.

    Args:
        predictions: ``(K, N, C, h, w)`` the K stacks' predictions at this scale.
        target: ``(N, C, h, w)`` target heatmaps.
        mask: ``(N, 1, h, w)`` or ``(N, C, h, w)`` miss-mask (0 ignores a pixel).
        config: loss settings.

    Returns:
        Scalar float32 tensor.
    """
    stacks, batch, channels = predictions.shape[:3]
    weights = channel_weights(config, channels).to(predictions.device).view(1, channels, 1, 1)
    weighted_mask = mask.to(torch.float32) * weights  # (N, C, h, w)
    per_pixel = pixel_loss(predictions.float(), target.float()[None], config)  # (K, N, C, h, w)
    return (per_pixel * weighted_mask[None]).sum() / (stacks * batch)


def heatmap_loss(
    outputs: Sequence[Sequence[torch.Tensor]],
    targets: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    config: LossConfig | None = None,
) -> torch.Tensor:
    """Total training loss of a network's outputs.

    Args:
        outputs: list over stacks of lists over scales (finest first) of
            ``(N, C, H/4·2^-j, W/4·2^-j)`` predictions, as the IMHN returns them.
        targets: list over scales of ``(N, C, h_j, w_j)`` target heatmaps.
        masks: list over scales of ``(N, 1 or C, h_j, w_j)`` miss-masks.
        config: loss settings (default ``LossConfig()``); one scale weight per scale.

    Returns:
        Scalar float32 tensor ``Σ_j w_j · L_j / Σ_j w_j`` (see the module docstring).
    """
    config = LossConfig() if config is None else config
    num_scales = len(targets)
    if len(config.scale_weights) != num_scales or len(masks) != num_scales:
        raise UsageError(
            f"loss needs one weight, target and mask per scale: {len(config.scale_weights)} "
            f"weights, {num_scales} targets, {len(masks)} masks"
        )
    if any(len(stack) != num_scales for stack in outputs):
        raise UsageError(f"every stack must output {num_scales} scales")
    total = torch.zeros((), dtype=torch.float32, device=targets[0].device)
    for j, weight in enumerate(config.scale_weights):
        predictions = torch.stack([stack[j] for stack in outputs])  # (K, N, C, h_j, w_j)
        total = total + weight * scale_loss(predictions, targets[j], masks[j], config)
    return total / sum(config.scale_weights)
