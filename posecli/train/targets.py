"""Ground-truth heatmaps: the 50 target channels of one image, rendered on the stride-s grid.

``render_heatmaps(people, height, width, stride)`` draws the labelled keypoints of every person
(network order, input pixels) into a ``(50, ceil(H/s), ceil(W/s))`` float32 stack whose cell
``(i, j)`` has its centre at input pixel ``(s·j + (s-1)/2, s·i + (s-1)/2)`` (4j + 1.5 at stride
4). Values are in [0, 1]:

* **Keypoints** (channels 30–47): a Gaussian of σ = 9 input pixels around each labelled keypoint
  (``v > 0``), people combined by maximum (two close keypoints keep two peaks).
* **Body parts** (channels 0–29): for each part whose two ends are labelled, a Gaussian of the
  distance to the *segment* between them with σ = 7 px: 1 all along the segment, falling off
  across it and rounding off past its ends; people combined by maximum. A zero-length part is
  a round Gaussian at its point.
* **Truncation**: keypoint and part values below 0.015 are 0 (keypoints reach ≈ 26 px, parts
  ≈ 20 px from their skeleton).
* **Person mask** (channel 48): 1 where any keypoint or body-part map of any person is non-zero
  (the union of the truncated supports: a thick stick figure), else 0.
* **Max keypoint map** (channel 49): the maximum over the 18 keypoint maps.

Where the paper and the published code differ, and what we chose:

* Body parts: the paper describes an elliptical Gaussian region around the limb; the published
  code uses the distance to the infinite *line* through the two keypoints, cut to the segment's
  bounding box grown by one stride and rounded to cells, and *averages* overlapping parts of the
  same type. We use the distance to the segment (equal to the published value between the two
  ends, smooth and rotation-invariant past them) and the *maximum* over people, so a limb's ridge
  keeps its height of 1 where it crosses another person's limb of the same type — the decoder
  samples exactly that ridge. The published code skips zero-length parts; we draw a blob.
* Truncation: the published code crops keypoint Gaussians to a square window derived from its
  threshold and zeroes part values ≤ its threshold; we zero both below 0.015, so every support
  is a disc or capsule.
* Person mask: the published channel 48 is the eroded COCO segmentation of all people, crowds
  included; ``render_heatmaps`` sees keypoints only, so it uses the union of the supports above.
* Channel 49: the published code stores ``1 - max`` over the keypoint maps (a background map);
  ours stores the maximum itself (``posecli.spec``: "the maximum over the keypoint maps").
"""

from __future__ import annotations

import math

import numpy as np

from posecli.spec import (
    BODY_PARTS,
    KEYPOINT_CHANNELS,
    MASK_CHANNEL,
    MAX_KEYPOINT_CHANNEL,
    NUM_CHANNELS,
    NUM_KEYPOINTS,
    PART_CHANNELS,
    STRIDE,
)

KEYPOINT_SIGMA = 9.0  # input pixels (published `sigma` for 512-pixel inputs)
PART_SIGMA = 7.0  # input pixels, across the segment (published `paf_sigma`)
TRUNCATION = 0.015  # values below this are 0


def support_radius(sigma: float) -> float:
    """Distance (input pixels) at which a Gaussian of ``sigma`` falls to :data:`TRUNCATION`."""
    return sigma * math.sqrt(2.0 * math.log(1.0 / TRUNCATION))


def _cell_window(low: float, high: float, cells: int, stride: int) -> np.ndarray:
    """Indices of the cells whose centres lie in ``[low, high]`` (input pixels), within the map."""
    offset = (stride - 1) / 2
    first = max(math.ceil((low - offset) / stride), 0)
    last = min(math.floor((high - offset) / stride), cells - 1)
    return np.arange(first, last + 1)


def _cell_centres(indices: np.ndarray, stride: int) -> np.ndarray:
    return indices * stride + (stride - 1) / 2


def _truncated_gaussian(squared_distance: np.ndarray, sigma: float) -> np.ndarray:
    values = np.exp(-squared_distance / (2.0 * sigma * sigma))
    return np.where(values >= TRUNCATION, values, 0.0)


def put_keypoint(heatmap: np.ndarray, x: float, y: float, stride: int) -> None:
    """Max a keypoint Gaussian at input pixel ``(x, y)`` into one ``(h, w)`` grid map."""
    reach = support_radius(KEYPOINT_SIGMA)
    rows = _cell_window(y - reach, y + reach, heatmap.shape[0], stride)
    cols = _cell_window(x - reach, x + reach, heatmap.shape[1], stride)
    if len(rows) == 0 or len(cols) == 0:
        return
    dy = _cell_centres(rows, stride)[:, None] - y  # (r, 1)
    dx = _cell_centres(cols, stride)[None, :] - x  # (1, c)
    window = np.ix_(rows, cols)
    gaussian = _truncated_gaussian(dx * dx + dy * dy, KEYPOINT_SIGMA)
    heatmap[window] = np.maximum(heatmap[window], gaussian)


def put_body_part(heatmap: np.ndarray, start: np.ndarray, end: np.ndarray, stride: int) -> None:
    """Max the Gaussian of the distance to the segment ``start → end`` (input pixels) into one
    ``(h, w)`` grid map."""
    reach = support_radius(PART_SIGMA)
    rows = _cell_window(
        min(start[1], end[1]) - reach, max(start[1], end[1]) + reach, heatmap.shape[0], stride
    )
    cols = _cell_window(
        min(start[0], end[0]) - reach, max(start[0], end[0]) + reach, heatmap.shape[1], stride
    )
    if len(rows) == 0 or len(cols) == 0:
        return
    px = _cell_centres(cols, stride)[None, :] - start[0]  # (1, c) offsets from the start
    py = _cell_centres(rows, stride)[:, None] - start[1]  # (r, 1)
    ux, uy = end[0] - start[0], end[1] - start[1]
    squared_length = ux * ux + uy * uy
    if squared_length > 0:  # (r, c) position of the nearest point of the segment, in [0, 1]
        along = np.clip((px * ux + py * uy) / squared_length, 0.0, 1.0)
    else:
        along = np.zeros((len(rows), len(cols)))
    squared_distance = (px - along * ux) ** 2 + (py - along * uy) ** 2
    window = np.ix_(rows, cols)
    gaussian = _truncated_gaussian(squared_distance, PART_SIGMA)
    heatmap[window] = np.maximum(heatmap[window], gaussian)


def render_heatmaps(
    people: np.ndarray, height: int, width: int, stride: int = STRIDE
) -> np.ndarray:
    """Render the target stack of one image.

    Args:
        people: ``(P, 18, 3)`` ``[x, y, v]`` in network order, input pixels (x right, y down,
            integer values at pixel centres); a keypoint is labelled when ``v > 0``.
        height, width: input size in pixels.
        stride: input pixels per grid cell.

    Returns:
        ``(50, ceil(height/stride), ceil(width/stride))`` float32 in [0, 1] (see module doc).
    """
    people = np.asarray(people, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    heatmaps = np.zeros(
        (NUM_CHANNELS, math.ceil(height / stride), math.ceil(width / stride)), dtype=np.float64
    )
    keypoint_maps = heatmaps[KEYPOINT_CHANNELS]  # (18, h, w) view
    part_maps = heatmaps[PART_CHANNELS]  # (30, h, w) view
    for person in people:
        labelled = (person[:, 2] > 0) & np.isfinite(person[:, :2]).all(axis=1)
        for keypoint in np.flatnonzero(labelled):
            put_keypoint(keypoint_maps[keypoint], person[keypoint, 0], person[keypoint, 1], stride)
        for part, (a, b) in enumerate(BODY_PARTS):
            if labelled[a] and labelled[b]:
                put_body_part(part_maps[part], person[a, :2], person[b, :2], stride)
    heatmaps[MASK_CHANNEL] = (heatmaps[:MASK_CHANNEL] > 0).any(axis=0)
    heatmaps[MAX_KEYPOINT_CHANNEL] = keypoint_maps.max(axis=0)
    return heatmaps.astype(np.float32)
