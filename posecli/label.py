"""Pseudo-labels for training: teacher models, test-time augmentation and label fusion.

Two third-party teachers run with onnxruntime on the CPU (an optional dependency, the ``train``
extra): MoveNet MultiPose and an OpenPose MobileNet-thin network whose part affinity fields are
grouped into people here. Every teacher pass yields :class:`Detection` records in image pixels,
COCO-17 order. One rule fuses detections at both levels, across the passes of one teacher (sizes,
mirror image) and then across teachers:

* detections of the same person are matched by OKS;
* each keypoint takes the confidence-weighted mean of the observations that agree with the best
  supported one, and a confidence equal to the agreeing weight minus the contradicting weight,
  divided by the number of passes (a pass that missed the person counts as zero);
* the person score is the mean person score over passes.

So keypoints seen consistently keep a high confidence, keypoints seen by one pass or placed
differently by two teachers lose it. :func:`select_labels` then keeps confident people with their
confident keypoints and turns uncertain people into ``iscrowd`` ignore regions.

:func:`label_images` writes COCO keypoint JSON atomically and resumably (a ``.partial`` file of
finished images is saved after every chunk; a restart continues from it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posecli.config import LabelConfig
from posecli.errors import (
    InputError,
    OutputError,
    PoseCliError,
    ResumableInterruptError,
    UsageError,
)
from posecli.io.files import error_reason, write_atomically
from posecli.pose import keypoint_similarity
from posecli.spec import (
    COCO_KEYPOINTS,
    COCO_SKELETON,
    COCO_TO_NETWORK,
    KEYPOINT_FLIP_ORDER,
    NUM_COCO_KEYPOINTS,
    network_to_coco,
)

logger = logging.getLogger(__name__)

MOVENET_FILE = "movenet-multipose.onnx"
OPENPOSE_FILE = "openpose_mobilenet_thin.onnx"
THUNDER_FILE = "movenet-thunder.onnx"
#: "thunder": top-down, MoveNet Thunder on person boxes; the others: bottom-up teacher fusion.
TEACHER_CHOICES = ("thunder", "movenet", "openpose", "both")
#: Square crop side (pixels) of MoveNet Thunder's fixed input.
THUNDER_INPUT = 256
PERSON_BOXES_FILE = "person_boxes.json"

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


def _coco_flip_order() -> tuple[int, ...]:
    """Index of each COCO keypoint's mirror image, derived from the network flip order."""
    coco_index = {network: coco for coco, network in enumerate(COCO_TO_NETWORK)}
    return tuple(coco_index[KEYPOINT_FLIP_ORDER[network]] for network in COCO_TO_NETWORK)


#: ``COCO_FLIP_ORDER[c]`` is the COCO keypoint that ``c`` becomes in a mirrored image.
COCO_FLIP_ORDER: tuple[int, ...] = _coco_flip_order()


#: LabelConfig fields that do not change labels (a resumed run may change them).
RUNTIME_FIELDS = ("threads", "chunk_size")


@dataclass(frozen=True, eq=False)
class Detection:
    """One person found by a teacher pass, or fused from several.

    ``keypoints``: ``(17, 3)`` float64 ``[x, y, score]`` in image pixels, COCO-17 order, score 0 =
    not found. ``box``: ``(4,)`` float64 ``[x0, y0, x1, y1]`` in image pixels. ``score``: person
    score in [0, 1]. ``sources``: how many passes (or teachers) found this person.
    """

    keypoints: np.ndarray
    box: np.ndarray
    score: float
    sources: int = 1


@dataclass(frozen=True, eq=False)
class PersonLabel:
    """A labelled person or an ignore region.

    ``keypoints``: ``(17, 3)`` float64 ``[x, y, v]`` in image pixels, COCO-17 order, ``v = 2`` kept
    and ``[0, 0, 0]`` dropped. ``keypoint_scores``: ``(17,)`` fused confidences. ``box``: ``(4,)``
    ``[x0, y0, x1, y1]`` image pixels. ``ignore``: an ``iscrowd`` region to mask out in training.
    """

    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    box: np.ndarray
    score: float
    ignore: bool


# --------------------------------------------------------------------------- geometry


def person_area(box: np.ndarray, area_per_box: float) -> float:
    """Estimated segmentation area of a person with box ``[x0, y0, x1, y1]``, at least 1 px²."""
    width, height = max(box[2] - box[0], 0.0), max(box[3] - box[1], 0.0)
    return max(area_per_box * width * height, 1.0)


def detection_oks(a: Detection, b: Detection, config: LabelConfig) -> float:
    """OKS of two detections over the keypoints both found with score ≥ match_keypoint_score."""
    both = (a.keypoints[:, 2] >= config.match_keypoint_score) & (
        b.keypoints[:, 2] >= config.match_keypoint_score
    )  # (17,)
    if not both.any():
        return 0.0
    area = (person_area(a.box, config.area_per_box) + person_area(b.box, config.area_per_box)) / 2
    similarity = keypoint_similarity(a.keypoints[:, :2], b.keypoints[:, :2], area)  # (17,)
    return float(similarity[both].mean())


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(A, B)`` of ``(A, 4)`` and ``(B, 4)`` boxes ``[x0, y0, x1, y1]``."""
    boxes_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (A, B, 2)
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (A, B, 2)
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)  # (A, B)
    area_a = np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0, None).prod(axis=-1)  # (A,)
    area_b = np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0, None).prod(axis=-1)  # (B,)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def keypoint_box(keypoints: np.ndarray, margin: float) -> np.ndarray:
    """Box ``[x0, y0, x1, y1]`` around the found keypoints of ``(K, 3)``, grown by ``margin``."""
    found = keypoints[keypoints[:, 2] > 0, :2]  # (F, 2)
    if len(found) == 0:
        return np.zeros(4)
    low, high = found.min(axis=0), found.max(axis=0)
    grow = margin * (high - low).max()
    return np.concatenate([low - grow, high + grow])


def unflip_detection(detection: Detection, width: int) -> Detection:
    """Map a detection made on the mirrored image back to the original image of ``width`` px.

    x becomes ``width - 1 - x`` (pixel centres) and left/right keypoints swap names.
    """
    keypoints = detection.keypoints[list(COCO_FLIP_ORDER)].copy()  # (17, 3)
    keypoints[:, 0] = width - 1 - keypoints[:, 0]
    x0, y0, x1, y1 = detection.box
    box = np.array([width - 1 - x1, y0, width - 1 - x0, y1])
    return Detection(keypoints, box, detection.score, detection.sources)


def letterbox(
    image: np.ndarray, scale: float, canvas: tuple[int, int]
) -> tuple[np.ndarray, float, float]:
    """Resize ``image`` (H, W, 3) by ``scale`` into the top-left of a zero canvas (height, width).

    Returns the canvas (same dtype and colour order as the image) and the per-axis scales
    ``(sx, sy)``: an input pixel ``u`` shows image pixel ``(u + 0.5) / s - 0.5``.
    """
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    new_width = min(max(round(width * scale), 1), canvas[1])
    new_height = min(max(round(height * scale), 1), canvas[0])
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_width, new_height), interpolation=method)
    out = np.zeros((canvas[0], canvas[1], image.shape[2]), dtype=image.dtype)  # (h, w, 3)
    out[:new_height, :new_width] = resized
    return out, new_width / width, new_height / height


def _to_image(points: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Map ``(..., 2)`` input-pixel positions ``(u, v)`` back to image pixels (see letterbox)."""
    scale = np.array([sx, sy])
    return (points + 0.5) / scale - 0.5


# --------------------------------------------------------------------------- teachers


def _onnxruntime() -> Any:
    """Import onnxruntime, which only labelling needs (the ``train`` extra)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise PoseCliError(
            "labelling needs onnxruntime, which is not installed: pip install 'posecli[train]'"
        ) from error
    return onnxruntime


def open_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session of the ONNX file ``path`` with ``threads`` intra-op threads."""
    onnxruntime = _onnxruntime()
    if not path.is_file():
        raise InputError(f"teacher model not found: {path}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped exceptions
        raise InputError(f"cannot load teacher model {path}: {error}") from error


class MoveNet:
    """MoveNet MultiPose: int32 ``(1, H, W, 3)`` RGB 0–255 in, ``(1, 6, 56)`` people out."""

    def __init__(self, session: Any, config: LabelConfig) -> None:
        self.session = session
        self.config = config
        self.input_name = session.get_inputs()[0].name

    def detect(
        self,
        image: np.ndarray,
        long_side: int,
        flip: bool = False,
        min_score: float | None = None,
    ) -> list[Detection]:
        """People in an RGB uint8 ``(H, W, 3)`` image, run with long side ``long_side`` (a
        multiple of 32; the image is letterboxed, not distorted), optionally on its mirror image;
        those scored below ``min_score`` (default ``config.movenet_min_score``) are dropped.
        """
        min_score = self.config.movenet_min_score if min_score is None else min_score
        height, width = image.shape[:2]
        view = image[:, ::-1] if flip else image
        scale = long_side / max(height, width)
        canvas_height = -(-round(height * scale) // 32) * 32
        canvas_width = -(-round(width * scale) // 32) * 32
        canvas, sx, sy = letterbox(view, scale, (canvas_height, canvas_width))
        batch = canvas[None].astype(np.int32)  # (1, h, w, 3) RGB
        people = self.session.run(None, {self.input_name: batch})[0][0]  # (6, 56)
        canvas_size = np.array([canvas_width, canvas_height], dtype=np.float64)
        detections = []
        for row in people.astype(np.float64):
            if row[55] < min_score:
                continue
            yx = row[:51].reshape(NUM_COCO_KEYPOINTS, 3)  # (17, 3) [y, x, score], normalised
            xy = _to_image(yx[:, 1::-1] * canvas_size - 0.5, sx, sy)  # (17, 2) image pixels
            corners = row[51:55].reshape(2, 2)[:, ::-1] * canvas_size - 0.5  # (2, 2) [x, y]
            box = _to_image(corners, sx, sy).reshape(4)
            detection = Detection(np.column_stack([xy, yx[:, 2]]), box, float(row[55]))
            detections.append(unflip_detection(detection, width) if flip else detection)
        return detections


class OpenPose:
    """OpenPose MobileNet-thin: float ``(1, 368, 432, 3)`` BGR 0–255 in, ``(1, 46, 54, 57)``
    out (18 CMU keypoint heatmaps + background, 38 part affinity fields, stride 8)."""

    def __init__(self, session: Any, config: LabelConfig) -> None:
        self.session = session
        self.config = config
        self.input_name = session.get_inputs()[0].name

    def detect(self, image: np.ndarray, flip: bool = False) -> list[Detection]:
        """People in an RGB uint8 ``(H, W, 3)`` image (letterboxed into 368×432), optionally
        run on its mirror image."""
        height, width = image.shape[:2]
        view = image[:, ::-1, ::-1] if flip else image[:, :, ::-1]  # BGR
        scale = min(OPENPOSE_INPUT[0] / height, OPENPOSE_INPUT[1] / width)
        canvas, sx, sy = letterbox(view, scale, OPENPOSE_INPUT)
        batch = canvas[None].astype(np.float32)  # (1, 368, 432, 3) BGR
        maps = self.session.run(None, {self.input_name: batch})[0][0]  # (46, 54, 57)
        people, scores = group_openpose(maps, self.config)
        detections = []
        for person, score in zip(people, scores, strict=True):
            coco = network_to_coco(person).copy()  # (17, 3) [u, v, score] input pixels
            coco[:, :2] = _to_image(coco[:, :2], sx, sy)
            coco[coco[:, 2] <= 0] = 0.0
            box = keypoint_box(coco, self.config.box_margin)
            detection = Detection(coco, box, float(score))
            detections.append(unflip_detection(detection, width) if flip else detection)
        return detections


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


def square_crop(box: np.ndarray, crop_scale: float, size: int) -> np.ndarray:
    """Affine ``(2, 3)`` from image pixels to the pixels of a ``size × size`` crop: a square of
    side ``crop_scale × max(width, height)`` of ``box`` ``[x0, y0, x1, y1]``, centred on it."""
    centre = (box[:2] + box[2:]) / 2  # (2,) [x, y]
    side = max(crop_scale * float((box[2:] - box[:2]).max()), 1.0)
    scale = size / side
    offset = (size - 1) / 2 - scale * centre  # (2,)
    return np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]]])


class Thunder:
    """MoveNet SinglePose Thunder, top-down: int32 ``(1, 256, 256, 3)`` RGB crop in,
    ``(1, 1, 17, 3)`` ``[y, x, score]`` normalised to the crop out. It always returns one
    person: the crop decides who."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def detect(
        self, image: np.ndarray, box: np.ndarray, crop_scale: float, flip: bool = False
    ) -> np.ndarray:
        """The person of ``box`` ``[x0, y0, x1, y1]`` (image pixels) in an RGB uint8
        ``(H, W, 3)`` image, from a square crop (zero padding) optionally mirrored: ``(17, 3)``
        float64 ``[x, y, score]`` in image pixels, COCO order."""
        affine = square_crop(np.asarray(box, dtype=np.float64), crop_scale, THUNDER_INPUT)
        shape = (THUNDER_INPUT, THUNDER_INPUT)
        crop = cv2.warpAffine(np.ascontiguousarray(image), affine, shape, flags=cv2.INTER_LINEAR)
        if flip:
            crop = crop[:, ::-1]
        batch = np.ascontiguousarray(crop[None]).astype(np.int32)  # (1, 256, 256, 3) RGB
        output = self.session.run(None, {self.input_name: batch})[0]
        yx = np.asarray(output, dtype=np.float64).reshape(NUM_COCO_KEYPOINTS, 3)
        uv = yx[:, 1::-1] * THUNDER_INPUT - 0.5  # (17, 2) crop pixels [u, v]
        scores = yx[:, 2]
        if flip:
            uv[:, 0] = THUNDER_INPUT - 1 - uv[:, 0]
            uv, scores = uv[list(COCO_FLIP_ORDER)], scores[list(COCO_FLIP_ORDER)]
        xy = (uv - affine[:, 2]) / np.diag(affine[:, :2])  # (17, 2) image pixels
        return np.column_stack([xy, scores])


def oks_nms(people: Sequence[Detection], max_oks: float, config: LabelConfig) -> list[Detection]:
    """People highest score first, without those whose OKS with a better one is ≥ ``max_oks``."""
    kept: list[Detection] = []
    for person in sorted(people, key=lambda p: -p.score):
        if all(detection_oks(person, other, config) < max_oks for other in kept):
            kept.append(person)
    return kept


#: A teacher pass: (teacher name, input size, mirrored).
PassKey = tuple[str, int, bool]


class Teachers:
    """The teachers chosen by ``config.teacher``, loaded from ``teachers_dir``."""

    def __init__(self, teachers_dir: Path, config: LabelConfig) -> None:
        check_config(config)
        self.config = config
        self.movenet: MoveNet | None = None
        self.openpose: OpenPose | None = None
        self.thunder: Thunder | None = None
        if config.teacher == "thunder":
            self.thunder = Thunder(open_session(teachers_dir / THUNDER_FILE, config.threads))
        if config.teacher in ("thunder", "movenet", "both"):
            self.movenet = MoveNet(
                open_session(teachers_dir / MOVENET_FILE, config.threads), config
            )
        if config.teacher in ("openpose", "both"):
            session = open_session(teachers_dir / OPENPOSE_FILE, config.threads)
            self.openpose = OpenPose(session, config)

    def passes(self, image: np.ndarray) -> dict[PassKey, list[Detection]]:
        """Every test-time-augmentation pass over an RGB uint8 ``(H, W, 3)`` image."""
        flips = (False, True) if self.config.flip else (False,)
        results: dict[PassKey, list[Detection]] = {}
        if self.movenet is not None:
            for size in self.config.movenet_sizes:
                for flip in flips:
                    results[("movenet", size, flip)] = self.movenet.detect(image, size, flip)
        if self.openpose is not None:
            for flip in flips:
                results[("openpose", OPENPOSE_INPUT[0], flip)] = self.openpose.detect(image, flip)
        return results

    def people(self, image: np.ndarray, hand_boxes: np.ndarray | None = None) -> list[Detection]:
        """People of an RGB uint8 ``(H, W, 3)`` image, highest score first: top-down on the
        ``(B, 4)`` ``[x0, y0, x1, y1]`` hand-drawn boxes (else on MoveNet MultiPose's) for the
        teacher "thunder", fused over the passes of the bottom-up teachers otherwise."""
        if self.thunder is None:
            return fuse_teachers(self.passes(image), self.config)
        if hand_boxes is not None and len(hand_boxes):
            boxes = np.asarray(hand_boxes, dtype=np.float64).reshape(-1, 4)
            box_scores, crop_scale = np.ones(len(boxes)), self.config.thunder_crop_scale
        else:
            found = self.movenet.detect(
                image, self.config.thunder_box_size, min_score=self.config.thunder_box_score
            )
            boxes = np.array([d.box for d in found]).reshape(-1, 4)
            box_scores = np.array([d.score for d in found])
            crop_scale = self.config.thunder_detected_crop_scale
        people = [
            self.top_down_person(image, box, float(score), crop_scale)
            for box, score in zip(boxes, box_scores, strict=True)
        ]
        return oks_nms(people, self.config.nms_oks, self.config)

    def top_down_person(
        self, image: np.ndarray, box: np.ndarray, box_score: float, crop_scale: float
    ) -> Detection:
        """Thunder's person in ``box`` (and its mirrored pass, fused, with ``config.flip``);
        person score = mean keypoint score × ``box_score``."""
        flips = (False, True) if self.config.flip else (False,)
        passes = []
        for flip in flips:
            keypoints = self.thunder.detect(image, box, crop_scale, flip)  # (17, 3)
            passes.append(Detection(keypoints, box, float(keypoints[:, 2].mean()) * box_score))
        if len(passes) == 1:
            return passes[0]
        return fuse_person(passes, len(passes), self.config)


# --------------------------------------------------------------------------- fusion


def match_people(
    passes: Sequence[Sequence[Detection]], config: LabelConfig
) -> list[list[Detection]]:
    """Group detections of several passes into people: greedily, highest score first, each
    joins the group whose first detection it matches best (OKS ≥ same_person_oks) among groups
    without a detection from its pass, or starts a group."""
    ordered = sorted(
        ((detection, index) for index, found in enumerate(passes) for detection in found),
        key=lambda item: -item[0].score,
    )
    groups: list[list[Detection]] = []
    group_passes: list[set[int]] = []
    for detection, index in ordered:
        best, best_oks = -1, config.same_person_oks
        for g, group in enumerate(groups):
            if index in group_passes[g]:
                continue
            similarity = detection_oks(group[0], detection, config)
            if similarity >= best_oks:
                best, best_oks = g, similarity
        if best < 0:
            groups.append([detection])
            group_passes.append({index})
        else:
            groups[best].append(detection)
            group_passes[best].add(index)
    return groups


def fuse_person(group: Sequence[Detection], num_passes: int, config: LabelConfig) -> Detection:
    """Fuse the detections of one person from ``num_passes`` passes (see the module docstring).

    Per keypoint, the anchor is the observation with the most agreeing weight; observations
    that agree with it (keypoint similarity ≥ agree_similarity) are averaged, weighted by
    their scores; confidence = (agreeing weight - contradicting weight) / num_passes.
    """
    observed = np.stack([d.keypoints for d in group])  # (n, 17, 3)
    weights = observed[..., 2]  # (n, 17)
    area = float(np.mean([person_area(d.box, config.area_per_box) for d in group]))
    similarity = keypoint_similarity(observed[:, None, :, :2], observed[None, :, :, :2], area)
    agree = similarity >= config.agree_similarity  # (n, n, 17)
    support = (agree * weights[None, :, :]).sum(axis=1)  # (n, 17)
    anchor = support.argmax(axis=0)  # (17,)
    inlier = agree[anchor, :, np.arange(NUM_COCO_KEYPOINTS)].T  # (n, 17)
    agreeing = (weights * inlier).sum(axis=0)  # (17,)
    contradicting = (weights * ~inlier).sum(axis=0)  # (17,)
    position = (weights * inlier)[..., None] * observed[..., :2]  # (n, 17, 2)
    position = position.sum(axis=0) / np.maximum(agreeing, 1e-9)[:, None]  # (17, 2)
    confidence = np.clip((agreeing - contradicting) / num_passes, 0.0, 1.0)  # (17,)
    person_scores = np.array([d.score for d in group])  # (n,)
    box = (person_scores[:, None] * np.stack([d.box for d in group])).sum(axis=0)
    box /= max(person_scores.sum(), 1e-9)
    keypoints = np.column_stack([np.where(agreeing[:, None] > 0, position, 0.0), confidence])
    return Detection(keypoints, box, float(person_scores.sum() / num_passes), len(group))


def fuse_passes(passes: Sequence[Sequence[Detection]], config: LabelConfig) -> list[Detection]:
    """Fuse the people of several passes (or of several teachers), highest score first."""
    groups = match_people(passes, config)
    fused = [fuse_person(group, len(passes), config) for group in groups]
    return sorted(fused, key=lambda person: -person.score)


def fuse_teachers(
    passes: Mapping[PassKey, list[Detection]], config: LabelConfig
) -> list[Detection]:
    """Fuse the passes of each teacher, then the teachers with each other."""
    teachers = sorted({key[0] for key in passes})
    per_teacher = [
        fuse_passes([found for key, found in passes.items() if key[0] == name], config)
        for name in teachers
    ]
    if len(per_teacher) == 1:
        return per_teacher[0]
    return fuse_passes(per_teacher, config)


def select_labels(
    people: Sequence[Detection],
    hand_boxes: np.ndarray,
    image_size: tuple[int, int],
    config: LabelConfig,
) -> list[PersonLabel]:
    """Decide what to write for one image of ``image_size`` (height, width).

    People with fused score ≥ confident_person and ≥ min_keypoints keypoints of confidence ≥
    keep_keypoint are labelled with those keypoints. Other people with score ≥ ignore_person,
    unless they overlap a labelled person (box IoU ≥ duplicate_iou), become ignore regions, and
    so do ``hand_boxes`` ``(B, 4)`` ``[x0, y0, x1, y1]`` that match no labelled person.
    """
    labelled: list[PersonLabel] = []
    uncertain: list[Detection] = []
    for person in people:
        kept = person.keypoints[:, 2] >= config.keep_keypoint  # (17,)
        if person.score >= config.confident_person and kept.sum() >= config.min_keypoints:
            keypoints = np.zeros((NUM_COCO_KEYPOINTS, 3))  # (17, 3)
            keypoints[kept, :2] = person.keypoints[kept, :2]
            keypoints[kept, 2] = 2
            box = clip_box(person.box, image_size)
            labelled.append(
                PersonLabel(keypoints, person.keypoints[:, 2].copy(), box, person.score, False)
            )
        elif person.score >= config.ignore_person:
            uncertain.append(person)
    labelled_boxes = np.array([label.box for label in labelled]).reshape(-1, 4)
    regions = [person.box for person in uncertain]
    if len(regions):
        overlap = box_iou(np.array(regions), labelled_boxes).max(axis=1, initial=0.0)
        regions = [
            box for box, iou in zip(regions, overlap, strict=True) if iou < config.duplicate_iou
        ]
    regions.extend(_unmatched_boxes(hand_boxes, labelled_boxes, config.box_match_iou))
    ignores = [_ignore_region(box, image_size) for box in regions]
    return labelled + [region for region in ignores if region is not None]


def _unmatched_boxes(
    hand_boxes: np.ndarray, labelled_boxes: np.ndarray, min_iou: float
) -> list[np.ndarray]:
    """Hand-drawn boxes left over after one-to-one matching (highest IoU first) with labels."""
    hand_boxes = np.asarray(hand_boxes, dtype=np.float64).reshape(-1, 4)
    iou = box_iou(hand_boxes, labelled_boxes)  # (B, L)
    matched_hands: set[int] = set()
    matched_labels: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        hand, label = np.unravel_index(flat, iou.shape)
        if iou[hand, label] < min_iou:
            break
        if hand in matched_hands or label in matched_labels:
            continue
        matched_hands.add(int(hand))
        matched_labels.add(int(label))
    return [box for index, box in enumerate(hand_boxes) if index not in matched_hands]


def clip_box(box: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """``[x0, y0, x1, y1]`` clipped to an image of ``image_size`` (height, width)."""
    height, width = image_size
    return np.clip(box, 0.0, [width - 1, height - 1, width - 1, height - 1])


def _ignore_region(box: np.ndarray, image_size: tuple[int, int]) -> PersonLabel | None:
    """An ignore region for ``box`` clipped to the image, or None if nothing is left of it."""
    box = clip_box(box, image_size)
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None
    return PersonLabel(
        np.zeros((NUM_COCO_KEYPOINTS, 3)), np.zeros(NUM_COCO_KEYPOINTS), box, 0.0, True
    )


# --------------------------------------------------------------------------- COCO output


def check_config(config: LabelConfig) -> None:
    """Raise UsageError for settings that cannot work."""
    if config.teacher not in TEACHER_CHOICES:
        raise UsageError(f"unknown teacher {config.teacher!r}: choose from {TEACHER_CHOICES}")
    if not config.movenet_sizes or any(s <= 0 or s % 32 for s in config.movenet_sizes):
        raise UsageError(f"MoveNet sizes must be positive multiples of 32: {config.movenet_sizes}")
    if config.chunk_size < 1 or config.threads < 1:
        raise UsageError("chunk_size and threads must be at least 1")
    if not (0 <= config.keep_keypoint <= 1 and 0 <= config.confident_person <= 1):
        raise UsageError("--keep-keypoint and --confident-person must lie in 0–1")
    if not 1 <= config.min_keypoints <= NUM_COCO_KEYPOINTS:
        raise UsageError(f"--min-keypoints must lie in 1–{NUM_COCO_KEYPOINTS}")


def label_settings(config: LabelConfig) -> dict[str, Any]:
    """The settings that determine labels, as JSON values (used to check a resumed run)."""
    settings = {k: v for k, v in asdict(config).items() if k not in RUNTIME_FIELDS}
    return json.loads(json.dumps(settings))


def annotation_record(label: PersonLabel, area_per_box: float) -> dict[str, Any]:
    """COCO annotation fields of a label (without ids), rounded for a compact file. ``area``
    is the box area for ignore regions and ``area_per_box`` × box area for people."""
    x0, y0, x1, y1 = (round(float(v), 2) for v in label.box)
    width, height = round(x1 - x0, 2), round(y1 - y0, 2)
    record: dict[str, Any] = {
        "category_id": 1,
        "iscrowd": int(label.ignore),
        "bbox": [x0, y0, width, height],
        "num_keypoints": int((label.keypoints[:, 2] > 0).sum()),
        "keypoints": [
            round(float(v), 2) if i % 3 < 2 else int(v)
            for i, v in enumerate(label.keypoints.reshape(-1))
        ],
        "keypoint_scores": [round(float(s), 3) for s in label.keypoint_scores],
        "score": round(float(label.score), 3),
    }
    if label.ignore:
        record["area"] = round(width * height, 2)
        record["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    else:
        record["area"] = round(area_per_box * width * height, 2)
    return record


def coco_categories() -> list[dict[str, Any]]:
    """The COCO person category with its keypoint names and 1-based skeleton."""
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(COCO_KEYPOINTS),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON],
        }
    ]


def write_json_atomic(path: Path, document: Any) -> None:
    """Write ``document`` as compact JSON to ``path`` (``posecli.io.files.write_atomically``),
    creating its folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error_reason(error)}") from error
    write_atomically(path, json.dumps(document, separators=(",", ":")).encode())


def partial_path(out: Path) -> Path:
    """The file of finished images that an interrupted run of ``out`` continues from."""
    return out.with_name(out.name + ".partial")


def _load_partial(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Finished image records of a partial file, by file name; empty if there is none."""
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        records = {record["file_name"]: record for record in document["images"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OutputError(f"unreadable partial labels {path}: {error}; delete it") from error
    if document.get("settings") != settings:
        raise OutputError(
            f"{path} was made with other label settings; delete it or use the same settings"
        )
    logger.info("resuming from %s: %d images already labelled", path, len(records))
    return records


def read_image_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)``."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read image {path}")
    return np.ascontiguousarray(image[:, :, ::-1])


def _images_root(images: Sequence[Path]) -> Path:
    """The deepest folder containing every image."""
    return Path(os.path.commonpath([str(path.resolve().parent) for path in images]))


def load_person_boxes(images: Sequence[Path]) -> dict[Path, np.ndarray]:
    """Hand-drawn boxes from the person_boxes.json in each image's folder or its parent.

    Each file holds ``{"person_boxes": {relative path: [[x, y, w, h], ...]}}`` with paths
    relative to its folder, so one run over several labelled folders finds each folder's boxes.
    Returns ``(B, 4)`` ``[x0, y0, x1, y1]`` boxes by resolved image path.
    """
    files = {_person_boxes_file(folder) for folder in {path.resolve().parent for path in images}}
    boxes: dict[Path, np.ndarray] = {}
    for path in sorted(file for file in files if file is not None):
        boxes.update(_read_person_boxes(path))
    return boxes


def _person_boxes_file(folder: Path) -> Path | None:
    """The person_boxes.json in ``folder`` or its parent, if any."""
    for candidate in (folder / PERSON_BOXES_FILE, folder.parent / PERSON_BOXES_FILE):
        if candidate.is_file():
            return candidate
    return None


def _read_person_boxes(path: Path) -> dict[Path, np.ndarray]:
    """One person_boxes.json: ``(B, 4)`` ``[x0, y0, x1, y1]`` boxes by resolved image path."""
    try:
        listing = json.loads(path.read_text(encoding="utf-8"))["person_boxes"]
        boxes = {}
        for name, xywh in listing.items():
            array = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)  # (B, 4) [x, y, w, h]
            array[:, 2:] += array[:, :2]
            boxes[(path.parent / name).resolve()] = array
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(f"malformed person boxes {path}: {error}") from error
    logger.info("using %d images' hand-drawn person boxes from %s", len(boxes), path)
    return boxes


#: Labels one image: (path, RGB uint8 (H, W, 3) image) -> people to write.
ImageLabeller = Callable[[Path, np.ndarray], Sequence[PersonLabel]]


def run_labelling(
    images: Sequence[Path],
    label_image: ImageLabeller,
    out: Path,
    config: LabelConfig,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Label ``images`` with ``label_image`` into the COCO keypoint file ``out``.

    Images are labelled in chunks of ``config.chunk_size``; after each chunk the finished
    images are saved to ``out.partial``, from which a restart with the same settings continues
    (the final file is the same as that of an uninterrupted run). Ctrl-C saves every finished
    image there too, then raises ``ResumableInterruptError``. ``progress(done, total)`` is
    called after every image. Image ids follow the order of ``images``; ``file_name`` is
    relative to the deepest folder holding all images, which ``info.images_root`` records.
    """
    check_config(config)
    if not images:
        raise UsageError("no images to label")
    root = _images_root(images)
    names = [path.resolve().relative_to(root).as_posix() for path in images]
    settings = label_settings(config)
    partial = partial_path(out)
    finished = _load_partial(partial, settings)
    todo = [index for index, name in enumerate(names) if name not in finished]
    done = len(images) - len(todo)

    def save_partial() -> None:
        write_json_atomic(partial, {"settings": settings, "images": list(finished.values())})

    try:
        for start in range(0, len(todo), config.chunk_size):
            for index in todo[start : start + config.chunk_size]:
                image = read_image_rgb(images[index])
                people = label_image(images[index], image)
                finished[names[index]] = {
                    "file_name": names[index],
                    "height": int(image.shape[0]),
                    "width": int(image.shape[1]),
                    "annotations": [
                        annotation_record(person, config.area_per_box) for person in people
                    ],
                }
                done += 1
                if progress is not None:
                    progress(done, len(images))
            save_partial()
    except KeyboardInterrupt:
        save_partial()
        raise ResumableInterruptError(
            f"labelling interrupted after {done} of {len(images)} images; saved {partial}, "
            "run the same command again to continue"
        ) from None
    write_json_atomic(out, _coco_document(names, finished, root, settings))
    partial.unlink(missing_ok=True)
    return out


def _coco_document(
    names: Sequence[str], records: Mapping[str, dict[str, Any]], root: Path, settings: dict
) -> dict[str, Any]:
    """The COCO keypoint document of the images ``names`` (ids 1… in that order)."""
    images, annotations = [], []
    for image_id, name in enumerate(names, start=1):
        record = records[name]
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "height": record["height"],
                "width": record["width"],
            }
        )
        for annotation in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
    info = {
        "description": "posecli pseudo-labels (teacher fusion)",
        "images_root": str(root),
        "label_settings": settings,
    }
    return {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }


def label_images(
    images: Sequence[Path],
    teachers_dir: Path,
    out: Path,
    config: LabelConfig,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Pseudo-label ``images`` with the teachers in ``teachers_dir`` into COCO keypoint JSON.

    Each annotation carries ``keypoints`` 17 × ``[x, y, v]`` (image pixels, v = 2 kept, 0
    dropped), ``keypoint_scores`` (17 fused confidences), ``num_keypoints``, ``bbox`` (xywh),
    ``area``, ``score`` and ``iscrowd``; uncertain people are ``iscrowd = 1`` ignore regions
    with a box-shaped ``segmentation`` polygon. Resumable: see :func:`run_labelling`.
    Returns ``out``.
    """
    check_config(config)  # before loading the teachers
    teachers = Teachers(Path(teachers_dir), config)
    hand_boxes = load_person_boxes(images) if config.use_person_boxes else {}
    no_boxes = np.zeros((0, 4))

    def label_image(path: Path, image: np.ndarray) -> list[PersonLabel]:
        boxes = hand_boxes.get(path.resolve(), no_boxes)
        return select_labels(teachers.people(image, boxes), boxes, image.shape[:2], config)

    return run_labelling(images, label_image, Path(out), config, progress)
