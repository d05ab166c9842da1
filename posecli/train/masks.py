"""Miss-masks and the multi-scale pyramid of training targets.

The network predicts heatmaps at 5 scales (strides 4, 8, 16, 32, 64). Targets are rendered once
at stride 4 (``posecli.train.targets.render_heatmaps``); the coarser scales are their adaptive
average pools, as in the published code (``F.adaptive_avg_pool2d`` of the stride-4 targets).

The miss-mask says where the loss counts. It starts as a binary *ignore map* in input pixels
(crowd regions and people annotated without keypoints). A grid cell of stride ``s`` is ignored
(mask 0) when at least half of its ``s × s`` input pixels are ignored, at every scale alike,
straight from the input-pixel map. (The published code resizes its stride-4 mask bilinearly to
each coarser scale and zeroes values below 0.5: the same threshold, applied to a resampled
mask.) Pseudo-labels add per-channel weights in ``[0, 1]`` at stride 4 (``keypoint_weights``);
their coarser scales are average pools too, multiplied into the binary mask.

Coordinates: input pixels have integer values at pixel centres; a stride-``s`` cell ``(i, j)``
has its centre at ``(s*j + (s-1)/2, s*i + (s-1)/2)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from posecli.spec import (
    BODY_PARTS,
    KEYPOINT_CHANNELS,
    MASK_CHANNEL,
    MAX_KEYPOINT_CHANNEL,
    NUM_CHANNELS,
    NUM_SCALES,
    STRIDE,
)
from posecli.train.targets import KEYPOINT_SIGMA, PART_SIGMA, support_radius

#: A cell is ignored when at least this fraction of its pixels is.
IGNORED_FRACTION = 0.5


def scale_shapes(height: int, width: int, num_scales: int = NUM_SCALES) -> list[tuple[int, int]]:
    """``(rows, columns)`` of each output scale for an input of ``height × width`` pixels."""
    return [
        (math.ceil(height / (STRIDE * 2**j)), math.ceil(width / (STRIDE * 2**j)))
        for j in range(num_scales)
    ]


def target_pyramid(heatmaps: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Stride-4 maps and their adaptive average pools to every scale.

    Args:
        heatmaps: ``(C, h, w)`` float32 maps at stride 4, ``shapes[0] == (h, w)``.
        shapes: ``(rows, columns)`` per scale, finest first.

    Returns:
        List over scales of ``(C, rows_j, columns_j)`` float32 tensors.
    """
    return [heatmaps] + [F.adaptive_avg_pool2d(heatmaps, shape) for shape in shapes[1:]]


def miss_mask_pyramid(ignored: np.ndarray, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Binary miss-masks at every scale from an ignore map in input pixels.

    Args:
        ignored: ``(H, W)`` bool or uint8, nonzero where the loss must not count.
        shapes: ``(rows, columns)`` per scale, finest first (stride 4·2^j).

    Returns:
        List over scales of ``(1, rows_j, columns_j)`` float32 tensors, 0 where at least half of
        the cell's pixels are ignored, else 1.
    """
    height, width = ignored.shape
    ignored_pixels = torch.from_numpy(np.ascontiguousarray(ignored, dtype=np.float32))
    masks = []
    for j, (rows, columns) in enumerate(shapes):
        stride = STRIDE * 2**j
        padded = F.pad(  # (1, 1, rows·s, columns·s): pixels past the input are never ignored
            ignored_pixels[None, None], (0, columns * stride - width, 0, rows * stride - height)
        )
        fraction = F.avg_pool2d(padded, stride)[0]  # (1, rows, columns)
        masks.append((fraction < IGNORED_FRACTION).to(torch.float32))
    return masks


def _cell_centres(rows: int, columns: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, 1)`` y and ``(1, columns)`` x input-pixel coordinates of the cell centres."""
    offset = (stride - 1) / 2
    y = (stride * np.arange(rows, dtype=np.float64) + offset)[:, None]
    x = (stride * np.arange(columns, dtype=np.float64) + offset)[None, :]
    return y, x


def _segment_distance(
    y: np.ndarray, x: np.ndarray, start: np.ndarray, end: np.ndarray
) -> np.ndarray:
    """Distance in pixels from each grid point to the segment ``start``–``end`` (``[x, y]``)."""
    direction = end - start
    length_squared = float(direction @ direction)
    if length_squared == 0.0:
        return np.hypot(x - start[0], y - start[1])
    along = ((x - start[0]) * direction[0] + (y - start[1]) * direction[1]) / length_squared
    along = np.clip(along, 0.0, 1.0)
    return np.hypot(x - (start[0] + along * direction[0]), y - (start[1] + along * direction[1]))


def keypoint_weights(
    people: np.ndarray,
    scores: np.ndarray,
    min_score: float,
    by_score: bool,
    height: int,
    width: int,
) -> np.ndarray:
    """Per-channel loss weights at stride 4 for pseudo-labelled people.

    A keypoint with a location (``v > 0``) and a score below ``min_score`` is *ignored*: its
    keypoint channel, the person-mask and the max-keypoint channels get weight 0 where its
    target Gaussian would be non-zero (``support_radius``, ≈ 26 px), and every body part
    touching it gets weight 0 where the part's target would be (≈ 20 px) around the segment to
    its other end (or around the keypoint alone when the other end has no location). With
    ``by_score``, a kept keypoint's channel weighs at most its score there, and a body part at
    most the smaller score of its two ends. Overlaps take the minimum; everything else weighs 1.

    Args:
        people: ``(P, 18, 3)`` network order ``[x, y, v]`` in input pixels (after
            augmentation); ``v > 0`` where the keypoint has a location.
        scores: ``(P, 18)`` keypoint confidences in ``[0, 1]``.
        min_score: keypoints scored below this are ignored.
        by_score: weight kept keypoints by their score.
        height, width: input size in pixels.

    Returns:
        ``(50, ceil(H/4), ceil(W/4))`` float32 weights in ``[0, 1]``.
    """
    rows, columns = math.ceil(height / STRIDE), math.ceil(width / STRIDE)
    weights = np.ones((NUM_CHANNELS, rows, columns), dtype=np.float32)
    y, x = _cell_centres(rows, columns, STRIDE)
    keypoint_radius = support_radius(KEYPOINT_SIGMA)
    part_radius = support_radius(PART_SIGMA)
    first_keypoint = KEYPOINT_CHANNELS.start
    for person, person_scores in zip(people, scores, strict=True):
        located = person[:, 2] > 0
        kept_weight = np.where(person_scores < min_score, 0.0, person_scores if by_score else 1.0)
        kept_weight = np.where(located, kept_weight, 1.0)
        for k in np.flatnonzero(located & (kept_weight < 1.0)):
            near = _segment_distance(y, x, person[k, :2], person[k, :2]) <= keypoint_radius
            channel = weights[first_keypoint + k]
            channel[near] = np.minimum(channel[near], kept_weight[k])
            if kept_weight[k] == 0.0:
                weights[[MASK_CHANNEL, MAX_KEYPOINT_CHANNEL]] *= ~near
        for p, (a, b) in enumerate(BODY_PARTS):
            weight = min(kept_weight[a], kept_weight[b])
            if weight >= 1.0:
                continue
            start = person[a, :2] if located[a] else person[b, :2]
            end = person[b, :2] if located[b] else start
            near = _segment_distance(y, x, start, end) <= part_radius
            weights[p][near] = np.minimum(weights[p][near], weight)
    return weights
