"""Person boxes and crop geometry, and the box-level pose comparisons, shared by the stages
that work on one person's box: the PRN grouping (``posecli.group``) and the top-down refinement
(``posecli.refine``), and the training sets of both.

* ``person_box``: a person's keypoint extent (found keypoints), widened or heightened about its
  centre to a crop aspect (width / height), enlarged by ``scale`` and made at least
  ``min_height`` pixels tall; ``None`` below two found keypoints.
* ``crop_affine``: the box mapped onto a ``crop_height × crop_width`` crop by a scale and a
  translation, pixel centres to pixel centres: crop pixel ``u`` ↔ image
  ``x = centre_x + (u − (crop_width − 1) / 2) · width / crop_width``; ``to_image`` is its exact
  inverse.
* ``pose_oks``, ``oks_nms``: COCO OKS between two poses and OKS non-maximum suppression;
  ``refined_score``: a box's score × the mean of its keypoints' scores.

Coordinates: image pixels of the original image, x right, y down, integer values at pixel
centres; keypoints ``(17, 3)`` ``[x, y, score]`` in COCO-17 order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from posecli.pose import Pose, keypoint_similarity

#: People need at least this many found keypoints for a box.
MIN_BOX_KEYPOINTS = 2


@dataclass(frozen=True)
class CropBox:
    """A person box in image pixels: centre and size, ``width / height`` = the crop's aspect."""

    centre_x: float
    centre_y: float
    width: float
    height: float


def person_box(
    keypoints: np.ndarray, aspect: float, scale: float = 1.25, min_height: float = 0.0
) -> CropBox | None:
    """The crop box of one person (module docstring), or ``None`` below two keypoints.

    Args:
        keypoints: ``(17, 3)`` ``[x, y, score]`` image pixels; found where ``score > 0``.
        aspect: crop width / crop height.
        scale: enlargement of the aspect-fixed extent.
        min_height: smallest box height, pixels.
    """
    found = keypoints[keypoints[:, 2] > 0, :2]  # (k, 2)
    if len(found) < MIN_BOX_KEYPOINTS:
        return None
    low, high = found.min(axis=0), found.max(axis=0)  # (2,) each
    centre = (low + high) / 2
    width, height = float(high[0] - low[0]), float(high[1] - low[1])
    height = max(height, width / aspect) * scale
    height = max(height, min_height, 1.0)
    return CropBox(float(centre[0]), float(centre[1]), height * aspect, height)


def crop_affine(box: CropBox, crop_height: int, crop_width: int) -> np.ndarray:
    """``(2, 3)`` float64 ``M`` with ``crop = M[:, :2] @ image + M[:, 2]`` (pixel centres)."""
    factor = crop_width / box.width  # = crop_height / box.height: one scale for both axes
    return np.array(
        [
            [factor, 0.0, (crop_width - 1) / 2 - factor * box.centre_x],
            [0.0, factor, (crop_height - 1) / 2 - factor * box.centre_y],
        ]
    )


def to_image(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map ``(..., 2)`` crop pixels ``[x, y]`` through the inverse of ``affine`` (any
    invertible ``(2, 3)`` image → crop map) to ``(..., 2)`` float64 image pixels."""
    linear, offset = affine[:, :2], affine[:, 2]
    return (np.asarray(points, dtype=np.float64) - offset) @ np.linalg.inv(linear).T


def pose_oks(a: np.ndarray, b: np.ndarray, area: float, min_score: float) -> float:
    """COCO OKS of two ``(17, 3)`` poses over the keypoints both found with ``score ≥
    min_score`` (0 when none), at object area ``area`` (pixels²)."""
    both = (a[:, 2] >= min_score) & (b[:, 2] >= min_score) & (a[:, 2] > 0) & (b[:, 2] > 0)
    if not both.any():
        return 0.0
    similarity = keypoint_similarity(a[:, :2], b[:, :2], max(area, 1.0))  # (17,)
    return float(similarity[both].mean())


def pose_area(pose: Pose) -> float:
    """Area of the box of a pose's found keypoints, pixels² (the OKS scale of the merge)."""
    _, _, width, height = pose.bbox
    return width * height


def oks_nms(poses: Sequence[Pose], threshold: float, min_score: float) -> list[int]:
    """Indices of ``poses``, highest score first, without those with OKS ≥ ``threshold`` to a
    better one kept."""
    kept: list[int] = []
    for index in sorted(range(len(poses)), key=lambda i: -poses[i].score):
        pose = poses[index]
        if all(
            pose_oks(pose.keypoints, poses[k].keypoints, pose_area(poses[k]), min_score) < threshold
            for k in kept
        ):
            kept.append(index)
    return kept


def refined_score(keypoints: np.ndarray, box_score: float, score_keypoint: float) -> float:
    """``box_score`` × the mean of the ``(17, 3)`` keypoints' scores above ``score_keypoint``
    (0 when none is)."""
    scores = keypoints[:, 2]
    above = scores[scores > score_keypoint]
    return float(box_score * above.mean()) if len(above) else 0.0
