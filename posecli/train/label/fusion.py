"""Pseudo-label fusion: teacher detections matched by OKS and fused, then the labels kept.

Every teacher pass yields :class:`Detection` records in image pixels, COCO-17 order. One rule
fuses detections at both levels, across the passes of one teacher (sizes, mirror image) and then
across teachers:

* detections of the same person are matched by OKS;
* each keypoint takes the confidence-weighted mean of the observations that agree with the best
  supported one, and a confidence equal to the agreeing weight minus the contradicting weight,
  divided by the number of passes (a pass that missed the person counts as zero);
* the person score is the mean person score over passes.

So keypoints seen consistently keep a high confidence, keypoints seen by one pass or placed
differently by two teachers lose it. :func:`select_labels` then keeps confident people with their
confident keypoints and turns uncertain people into ``iscrowd`` ignore regions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from posecli.config import LabelConfig
from posecli.pose import keypoint_similarity
from posecli.spec import (
    COCO_FLIP_ORDER,
    NUM_COCO_KEYPOINTS,
)


@dataclass(frozen=True, eq=False)
class Detection:
    """One person found by a teacher pass, or fused from several.

    ``keypoints``: ``(17, 3)`` float64 ``[x, y, score]`` in image pixels, COCO-17 order, score 0 =
    not found. ``box``: ``(4,)`` float64 ``[x0, y0, x1, y1]`` in image pixels. ``score``: person
    score in [0, 1]. ``sources``: how many passes (or teachers) found this person.
    ``box_score``: how sure the box is a person, for top-down teachers (hand-drawn 1, a
    detector's score); 0 when only the keypoints say so (bottom-up teachers).
    """

    keypoints: np.ndarray
    box: np.ndarray
    score: float
    sources: int = 1
    box_score: float = 0.0


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


def oks_nms(people: Sequence[Detection], max_oks: float, config: LabelConfig) -> list[Detection]:
    """People highest score first, without those whose OKS with a better one is ≥ ``max_oks``."""
    kept: list[Detection] = []
    for person in sorted(people, key=lambda p: -p.score):
        if all(detection_oks(person, other, config) < max_oks for other in kept):
            kept.append(person)
    return kept


#: A teacher pass: (teacher name, input size, mirrored).
PassKey = tuple[str, int, bool]


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
    keep_keypoint are labelled with those keypoints. Other people whose box score is ≥
    box_person_score are labelled too, with the keypoints they have (maybe none); the rest
    with score ≥ ignore_person become ignore regions. Both, when they overlap a labelled person
    (box IoU ≥ duplicate_iou), are duplicates and dropped. ``hand_boxes`` ``(B, 4)`` ``[x0, y0,
    x1, y1]`` that match no labelled person become ignore regions too.
    """
    labelled: list[PersonLabel] = []
    boxed: list[Detection] = []
    uncertain: list[Detection] = []
    for person in people:
        kept = person.keypoints[:, 2] >= config.keep_keypoint  # (17,)
        if person.score >= config.confident_person and kept.sum() >= config.min_keypoints:
            labelled.append(_person_label(person, image_size, config))
        elif person.box_score >= config.box_person_score:
            boxed.append(person)
        elif person.score >= config.ignore_person:
            uncertain.append(person)
    labelled_boxes = np.array([label.box for label in labelled]).reshape(-1, 4)
    labelled += [
        _person_label(person, image_size, config)
        for person in _not_duplicates(boxed, labelled_boxes, config.duplicate_iou)
    ]
    labelled_boxes = np.array([label.box for label in labelled]).reshape(-1, 4)
    regions = [
        person.box for person in _not_duplicates(uncertain, labelled_boxes, config.duplicate_iou)
    ]
    regions.extend(_unmatched_boxes(hand_boxes, labelled_boxes, config.box_match_iou))
    ignores = [_ignore_region(box, image_size) for box in regions]
    return labelled + [region for region in ignores if region is not None]


def _person_label(
    person: Detection, image_size: tuple[int, int], config: LabelConfig
) -> PersonLabel:
    """A labelled person: its keypoints of confidence ≥ keep_keypoint (v = 2), box clipped."""
    kept = person.keypoints[:, 2] >= config.keep_keypoint  # (17,)
    keypoints = np.zeros((NUM_COCO_KEYPOINTS, 3))  # (17, 3)
    keypoints[kept, :2] = person.keypoints[kept, :2]
    keypoints[kept, 2] = 2
    box = clip_box(person.box, image_size)
    return PersonLabel(keypoints, person.keypoints[:, 2].copy(), box, person.score, False)


def _not_duplicates(
    people: Sequence[Detection], labelled_boxes: np.ndarray, duplicate_iou: float
) -> list[Detection]:
    """``people`` whose box overlaps every labelled box ``(L, 4)`` by IoU below duplicate_iou."""
    if not people:
        return []
    boxes = np.array([person.box for person in people])  # (P, 4)
    overlap = box_iou(boxes, labelled_boxes).max(axis=1, initial=0.0)  # (P,)
    return [person for person, iou in zip(people, overlap, strict=True) if iou < duplicate_iou]


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
