"""People from OpenPose MobileNet-thin's output: heatmap peaks joined by part affinity fields.

The grouping of the published OpenPose demo code, in NumPy and OpenCV, on the network's
``(h, w, 57)`` output (18 CMU keypoint heatmaps + background, 38 field channels, stride 8),
upsampled 4× before peak finding. CMU-18 is the network order of ``posecli.spec``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from posecli.config import LabelConfig
from posecli.spec import (
    NUM_COCO_KEYPOINTS,
    network_to_coco,
)

#: Fixed input of the OpenPose ONNX graph (height, width); the graph rejects other sizes.
OPENPOSE_INPUT = (368, 432)

OPENPOSE_STRIDE = 8

#: Heatmaps and fields are upsampled by this factor before peak finding (stride 8 → 2).
OPENPOSE_UPSAMPLE = 4

#: Heatmap maxima closer than this (upsampled map pixels, 4 input pixels) are one peak.
PEAK_MIN_DISTANCE = 2.0

OPENPOSE_KEYPOINTS = 18  # CMU-18 heatmap channels; channel 18 is the background

OPENPOSE_PAF_OFFSET = 19  # first part-affinity-field channel of the network output

#: The 19 limbs of the CMU-18 skeleton (the standard OpenPose pair list, CMU-18 = network order
#: of posecli.spec) with the (x, y) part-affinity-field channels of each, counted from
#: OPENPOSE_PAF_OFFSET. The last two (shoulder–ear) only confirm people, they never start one.
OPENPOSE_LIMBS: tuple[tuple[int, int, int, int], ...] = (
    (1, 2, 12, 13), (1, 5, 20, 21), (2, 3, 14, 15), (3, 4, 16, 17), (5, 6, 22, 23),
    (6, 7, 24, 25), (1, 8, 0, 1), (8, 9, 2, 3), (9, 10, 4, 5), (1, 11, 6, 7),
    (11, 12, 8, 9), (12, 13, 10, 11), (1, 0, 28, 29), (0, 14, 30, 31), (14, 16, 34, 35),
    (0, 15, 32, 33), (15, 17, 36, 37), (2, 16, 18, 19), (5, 17, 26, 27),
)  # fmt: skip

OPENPOSE_STARTING_LIMBS = 17  # limbs from this index on never start a new person


def _find_peaks(heatmaps: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Local maxima (3×3) above ``threshold`` of each ``(h, w, K)`` heatmap channel, as one
    ``(n, 3)`` array ``[x, y, value]`` per channel in map pixels. Of maxima closer than
    PEAK_MIN_DISTANCE (plateaus), only the strongest, then first in raster order, is kept."""
    kernel = np.ones((3, 3), dtype=np.uint8)
    peaks = []
    for channel in range(heatmaps.shape[2]):
        heatmap = np.ascontiguousarray(heatmaps[:, :, channel])  # (h, w)
        is_peak = (heatmap >= cv2.dilate(heatmap, kernel)) & (heatmap > threshold)
        ys, xs = np.nonzero(is_peak)
        candidates = np.column_stack([xs, ys, heatmap[ys, xs]]).astype(np.float64)  # (n, 3)
        peaks.append(_separate_peaks(candidates))
    return peaks


def _separate_peaks(candidates: np.ndarray) -> np.ndarray:
    """The ``(n, 3)`` ``[x, y, value]`` candidates without those within PEAK_MIN_DISTANCE of a
    stronger (or equal and earlier) one, in their original order."""
    kept: list[int] = []
    for index in np.argsort(-candidates[:, 2], kind="stable"):
        distances = np.linalg.norm(candidates[kept, :2] - candidates[index, :2], axis=1)
        if not (distances < PEAK_MIN_DISTANCE).any():
            kept.append(int(index))
    return candidates[sorted(kept)]


def _limb_connections(
    starts: np.ndarray, ends: np.ndarray, field: np.ndarray, config: LabelConfig
) -> list[tuple[int, int, float]]:
    """Greedy one-to-one connections ``(start, end, score)`` between ``(A, 3)`` and ``(B, 3)``
    peaks along a limb whose part affinity field is ``field`` (h, w, 2) [x, y], map pixels.

    A candidate's score is the mean projection of the field on the limb direction, minus a
    penalty for limbs longer than half the map height; it needs ``openpose_paf_fraction`` of
    its samples above ``openpose_paf_threshold`` and a positive score.
    """
    if len(starts) == 0 or len(ends) == 0:
        return []
    height, width = field.shape[:2]
    delta = ends[None, :, :2] - starts[:, None, :2]  # (A, B, 2)
    length = np.maximum(np.linalg.norm(delta, axis=-1), 1e-6)  # (A, B)
    steps = np.linspace(0.0, 1.0, config.openpose_paf_samples)  # (S,)
    points = starts[:, None, None, :2] + steps[None, None, :, None] * delta[:, :, None, :]
    xs = np.clip(np.rint(points[..., 0]).astype(int), 0, width - 1)  # (A, B, S)
    ys = np.clip(np.rint(points[..., 1]).astype(int), 0, height - 1)  # (A, B, S)
    direction = delta / length[..., None]  # (A, B, 2)
    projection = (field[ys, xs] * direction[:, :, None, :]).sum(axis=-1)  # (A, B, S)
    score = projection.mean(axis=-1) + np.minimum(0.5 * height / length - 1.0, 0.0)  # (A, B)
    supported = (projection > config.openpose_paf_threshold).mean(axis=-1)  # (A, B)
    valid = (supported >= config.openpose_paf_fraction) & (score > 0)
    connections = []
    used_starts: set[int] = set()
    used_ends: set[int] = set()
    for flat in np.argsort(-np.where(valid, score, -np.inf), axis=None, kind="stable"):
        a, b = np.unravel_index(flat, score.shape)
        if not valid[a, b]:
            break
        if a in used_starts or b in used_ends:
            continue
        connections.append((int(a), int(b), float(score[a, b])))
        used_starts.add(int(a))
        used_ends.add(int(b))
    return connections


def _assemble_people(
    limb_connections: Sequence[list[tuple[int, int, float]]], peaks: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[float]]:
    """Join limb connections into people.

    Returns per person a ``(18,)`` int array of peak indices (-1 = missing) and the total score
    (peak values + connection scores). A connection extends the person that already holds one
    of its ends, merges two people that hold one end each and share no keypoint, or starts a
    new person (only limbs before OPENPOSE_STARTING_LIMBS may).
    """
    members: list[np.ndarray] = []
    totals: list[float] = []
    for limb, connections in enumerate(limb_connections):
        start_kp, end_kp = OPENPOSE_LIMBS[limb][:2]
        for start, end, score in connections:
            owners = [
                p for p, ids in enumerate(members) if ids[start_kp] == start or ids[end_kp] == end
            ]
            if not owners:
                if limb >= OPENPOSE_STARTING_LIMBS:
                    continue
                ids = np.full(OPENPOSE_KEYPOINTS, -1)
                ids[start_kp], ids[end_kp] = start, end
                members.append(ids)
                totals.append(peaks[start_kp][start, 2] + peaks[end_kp][end, 2] + score)
                continue
            first = owners[0]
            if len(owners) > 1 and not ((members[first] >= 0) & (members[owners[1]] >= 0)).any():
                second = owners[1]
                members[first] = np.maximum(members[first], members[second])
                totals[first] += totals[second] + score
                del members[second], totals[second]
            elif members[first][end_kp] != end:
                members[first][end_kp] = end
                totals[first] += peaks[end_kp][end, 2] + score
    return members, totals


def group_openpose(maps: np.ndarray, config: LabelConfig) -> tuple[list[np.ndarray], list[float]]:
    """People from one OpenPose output ``(h, w, 57)`` (stride 8 over the network input).

    Returns a list of ``(18, 3)`` float64 ``[u, v, peak]`` arrays in CMU-18 (= network) order in
    network-input pixels (peak 0 = missing) and a person score each: the sum of its COCO-17
    keypoint peaks divided by 17.
    """
    height, width = maps.shape[:2]
    size = (width * OPENPOSE_UPSAMPLE, height * OPENPOSE_UPSAMPLE)
    heatmaps = cv2.resize(maps[:, :, :OPENPOSE_KEYPOINTS], size, interpolation=cv2.INTER_CUBIC)
    fields = cv2.resize(maps[:, :, OPENPOSE_PAF_OFFSET:], size, interpolation=cv2.INTER_CUBIC)
    peaks = _find_peaks(heatmaps, config.openpose_peak_threshold)  # 18 × (n, 3)
    connections = [
        _limb_connections(peaks[a], peaks[b], fields[:, :, [fx, fy]], config)
        for a, b, fx, fy in OPENPOSE_LIMBS
    ]
    members, totals = _assemble_people(connections, peaks)
    step = OPENPOSE_STRIDE / OPENPOSE_UPSAMPLE
    offset = (OPENPOSE_STRIDE - 1) / 2 - (OPENPOSE_UPSAMPLE - 1) / 2 * step
    people, scores = [], []
    for ids, total in zip(members, totals, strict=True):
        found = ids >= 0
        if found.sum() < config.openpose_min_keypoints:
            continue
        if total / found.sum() < config.openpose_min_mean_score:
            continue
        person = np.zeros((OPENPOSE_KEYPOINTS, 3))  # (18, 3)
        for keypoint in np.nonzero(found)[0]:
            person[keypoint] = peaks[keypoint][ids[keypoint]]
        person[found, :2] = person[found, :2] * step + offset  # map → input pixels
        people.append(person)
        scores.append(float(network_to_coco(person)[:, 2].sum() / NUM_COCO_KEYPOINTS))
    return people, scores
