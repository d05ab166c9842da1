"""Top-down refinement of the bottom-up people (issue 16): boxes, crops, the refiner, the merge.

For one image and the people the IMHN found in it:

1. **Boxes** (``posecli.boxes.person_box``, ``crop_boxes``): each person's keypoint extent
   (found keypoints), widened or heightened about its centre to the refiner's crop aspect
   (width / height), then enlarged by ``refine_box_scale`` (1.25) and made at least
   ``refine_min_box`` pixels tall. People with fewer than two found keypoints get no box and
   stay as they are.
2. **Crops** (``posecli.boxes.crop_affine``, ``crop_people``, ``refiner_crops``): the box is
   mapped onto the ``crop_height × crop_width`` crop by a scale and a translation, pixel
   centres to pixel centres (``cv2.warpAffine``, bilinear, the checkpoint's pad value outside
   the image): crop pixel ``u`` ↔ image
   ``x = centre_x + (u − (crop_width − 1) / 2) · width / crop_width``;
   ``posecli.boxes.to_image`` is its exact inverse.
3. **Refiner**: every crop goes through the network once per instance selector λ (``instances``
   of them, default all N), ``refine_batch_size`` crops per forward pass; ``heatmap_keypoints``
   gives ``[x, y, score]`` in crop pixels, mapped back to image pixels.
4. **Merge** (``merge_poses``): a refined pose's score is its box's bottom-up score × the mean
   of its keypoint scores above ``refine_score_keypoint``. Refined poses go through OKS-NMS
   (``refine_nms_oks``), best first. A bottom-up person is replaced when the λ = 0 pose of its
   own box is kept, or when a kept refined pose matches it (OKS ≥ ``refine_nms_oks``). The
   others are kept with their own score: those the refiner never saw (no box), and those whose
   refined pose it dropped (suppressed as a duplicate, or empty) if they score at least
   ``refine_keep_score``. Refined keypoints scored below ``refine_keypoint_threshold`` are
   reported missing (``[0, 0, 0]``); refined poses left with fewer than two keypoints, or
   scoring 0, are dropped.

Coordinates: image pixels of the original image, x right, y down, integer values at pixel
centres; keypoints in COCO-17 order. Images are RGB uint8 ``(H, W, 3)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from posecli.backends import TORCH, choose_backend, make_runner
from posecli.boxes import (
    MIN_BOX_KEYPOINTS,
    CropBox,
    crop_affine,
    oks_nms,
    person_box,
    pose_area,
    pose_oks,
    refined_score,
    to_image,
)
from posecli.config import InferenceConfig
from posecli.errors import UsageError
from posecli.model import heatmap_keypoints
from posecli.networks import RefinerModel
from posecli.pose import Pose
from posecli.spec import COCO_FLIP_ORDER
from posecli.transforms import normalise

logger = logging.getLogger(__name__)


def crop_people(
    image: np.ndarray, affines: Sequence[np.ndarray], crop_height: int, crop_width: int, pad: int
) -> np.ndarray:
    """``(B, crop_height, crop_width, 3)`` uint8 crops of an ``(H, W, 3)`` uint8 image (any
    channel order kept), one per ``(2, 3)`` affine; ``pad`` outside the image."""
    crops = np.empty((len(affines), crop_height, crop_width, 3), dtype=np.uint8)
    for index, affine in enumerate(affines):
        crops[index] = cv2.warpAffine(
            image, affine, (crop_width, crop_height), flags=cv2.INTER_LINEAR, borderValue=(pad,) * 3
        )
    return crops


def crop_boxes(
    poses: Sequence[Pose], refiner: RefinerModel, config: InferenceConfig
) -> list[tuple[int, CropBox]]:
    """``(index into poses, box)`` of every pose that gets a box (module docstring, step 1) at
    ``refiner``'s crop aspect, ``config.refine_box_scale`` and ``config.refine_min_box``."""
    aspect = refiner.config.crop_width / refiner.config.crop_height
    boxes = []
    for index, pose in enumerate(poses):
        box = person_box(pose.keypoints, aspect, config.refine_box_scale, config.refine_min_box)
        if box is not None:
            boxes.append((index, box))
    return boxes


def refiner_crops(
    image: np.ndarray, boxes: Sequence[CropBox], refiner: RefinerModel
) -> tuple[list[np.ndarray], np.ndarray]:
    """The ``(2, 3)`` affines (``crop_affine``) and ``(B, h, w, 3)`` uint8 crops of ``boxes``
    in an ``(H, W, 3)`` uint8 image, at ``refiner``'s crop size and pad value."""
    height, width = refiner.config.crop_height, refiner.config.crop_width
    affines = [crop_affine(box, height, width) for box in boxes]
    pad = refiner.preprocessing.pad_value
    return affines, crop_people(image, affines, height, width, pad)


@dataclass(frozen=True)
class RefinedPose:
    """A refiner's pose: from the box of bottom-up person ``source``, instance selector
    ``instance`` (0: the box's own person)."""

    pose: Pose
    source: int
    instance: int


def merge_poses(
    bottom_up: Sequence[Pose],
    refined: Sequence[RefinedPose],
    boxed: set[int],
    config: InferenceConfig,
) -> list[Pose]:
    """The merge of the module docstring (step 4), highest score first.

    Args:
        bottom_up: the image's bottom-up people.
        refined: the refiner's poses, with their final scores.
        boxed: indices of the bottom-up people the refiner was given a box of.
        config: ``refine_nms_oks``, ``refine_keypoint_threshold`` and ``refine_keep_score``.
    """
    threshold, min_score = config.refine_nms_oks, config.refine_keypoint_threshold
    kept = [refined[i] for i in oks_nms([r.pose for r in refined], threshold, min_score)]
    replaced = {r.source for r in kept if r.instance == 0}
    leftovers = []
    for index, pose in enumerate(bottom_up):
        if index in replaced or (index in boxed and pose.score < config.refine_keep_score):
            continue
        if all(
            pose_oks(pose.keypoints, r.pose.keypoints, pose_area(r.pose), min_score) < threshold
            for r in kept
        ):
            leftovers.append(pose)
    return sorted([r.pose for r in kept] + leftovers, key=lambda p: -p.score)


def at_edge(keypoints: np.ndarray, height: int, width: int, edge: float) -> bool:
    """Whether the found ``(17, 3)`` image-pixel keypoints (score > 0) of a person come within
    ``edge`` × the image's width (or height) of the border of a ``height × width`` image, or lie
    beyond it; never with ``edge`` 0 or no keypoint found."""
    found = keypoints[keypoints[:, 2] > 0, :2]  # (k, 2) x, y
    if not edge or not len(found):
        return False
    size = np.array([width, height], dtype=np.float64)  # (2,)
    margin = edge * size
    return bool((found.min(axis=0) < margin).any() or (found.max(axis=0) > size - margin).any())


def still_seen(now: np.ndarray, then: np.ndarray, config: InferenceConfig) -> bool:
    """Whether the refiner still sees a followed person: the mean of the 17 scores of its
    ``(17, 3)`` refined keypoints ``now`` is at least ``follow_min_score``, or at least
    ``follow_min_ratio`` × that of the pose followed, ``then`` (a person it never saw well, and
    still sees as well, stays followed)."""
    mean_now = float(now[:, 2].mean())
    return mean_now >= min(config.follow_min_score, config.follow_min_ratio * then[:, 2].mean())


class Refinement:
    """Runs a refiner on the bottom-up people of images; see the module docstring.

    It runs on ``backend`` (``posecli.backends``, the Estimator's; ``"auto"`` resolved here):
    on torch its network is moved to ``device`` in ``dtype`` (eval mode, channels-last on CPU),
    in place.
    """

    def __init__(
        self,
        refiner: RefinerModel,
        config: InferenceConfig,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        backend: str = TORCH,
    ) -> None:
        available = refiner.config.instances
        if not 0 <= config.instances <= available:
            raise UsageError(
                f"--instances {config.instances}: refiner {refiner.name} has {available} "
                "instance selector(s) (0: all of them)"
            )
        self.refiner = refiner
        self.config = config
        self.backend, self.device = choose_backend(backend, device, str(device), refiner)
        self.dtype = dtype
        self.instances = config.instances or available
        self.runner = make_runner(refiner, self.backend, self.device, dtype, config.threads)

    @torch.inference_mode()
    def keypoints(
        self, image: np.ndarray, boxes: Sequence[CropBox], instances: int = 0
    ) -> np.ndarray:
        """Refined keypoints of every box and instance selector.

        Args:
            image: RGB uint8 ``(H, W, 3)``.
            boxes: person boxes in its pixels.
            instances: λ run per box, the first ones (0: the configured ``instances``).

        Returns:
            ``(len(boxes), instances, 17, 3)`` float64 ``[x, y, score]``, image pixels.
        """
        instances = instances or self.instances
        affines, crops = refiner_crops(image, boxes, self.refiner)  # crops (P, h, w, 3)
        count = len(boxes) * instances
        crop_index = np.repeat(np.arange(len(boxes)), instances)  # (count,) box of each run
        selector = np.tile(np.arange(instances), len(boxes))  # (count,) λ of each run
        found = np.zeros((count, 17, 3), dtype=np.float64)
        step = self.config.refine_batch_size
        for start in range(0, count, step):
            chosen = slice(start, min(start + step, count))
            batch = normalise(crops[crop_index[chosen]], self.refiner.preprocessing)  # (b, 3, h, w)
            maps = self.heatmaps(batch, selector[chosen])  # (b, 17, h/4, w/4)
            found[chosen] = heatmap_keypoints(maps).cpu().numpy()  # (b, 17, 3) crop pixels
        for run in range(count):
            found[run, :, :2] = to_image(found[run, :, :2], affines[crop_index[run]])
        return found.reshape(len(boxes), instances, 17, 3)

    def heatmaps(self, crops: np.ndarray, selectors: np.ndarray) -> torch.Tensor:
        """The refiner's ``(b, 17, h/4, w/4)`` heatmaps of normalised ``(b, 3, h, w)`` crops for
        λ ``selectors`` ``(b,)``; with ``refine_flip`` averaged with those of the mirrored crops
        (one forward pass of 2b), mirrored back and their keypoints swapped left ↔ right.

        Mirroring a crop of width ``w`` maps pixel ``u`` to ``w − 1 − u``, and the cell centred on
        ``4j + 1.5`` to the one on ``4(w/4 − 1 − j) + 1.5``: flipping the grid is exact.
        """
        if not self.config.refine_flip:
            return self.runner(crops, selectors)
        both = np.concatenate([crops, crops[..., ::-1]])  # (2b, 3, h, w)
        maps = self.runner(both, np.concatenate([selectors, selectors]))  # (2b, 17, h/4, w/4)
        direct, mirrored = maps.chunk(2)  # (b, 17, h/4, w/4) each
        return 0.5 * (direct + mirrored.flip(-1)[:, list(COCO_FLIP_ORDER)])

    def refine(self, image: np.ndarray, poses: Sequence[Pose]) -> list[Pose]:
        """The merged people of one RGB uint8 ``(H, W, 3)`` image, highest score first,
        from its bottom-up ``poses`` (COCO-17 image pixels)."""
        boxes = crop_boxes(poses, self.refiner, self.config)
        if not boxes:
            return list(poses)
        keypoints = self.keypoints(image, [box for _, box in boxes])  # (P, λ, 17, 3)
        refined = []
        for (index, _), runs in zip(boxes, keypoints, strict=True):
            for instance, person in enumerate(runs):  # (17, 3)
                pose = self.refined_pose(person, poses[index].score)
                if pose is not None:
                    refined.append(RefinedPose(pose, index, instance))
        return merge_poses(poses, refined, {index for index, _ in boxes}, self.config)

    def follow(self, image: np.ndarray, people: Sequence[Pose]) -> tuple[list[Pose], int]:
        """``people`` (predicted from earlier frames, COCO-17 image pixels) found again in one
        RGB uint8 ``(H, W, 3)`` image (issue 38) by the λ = 0 pose the refiner places in each
        one's box (step 1 at ``follow_box_scale``).

        Returns:
            The people found, highest score first, after OKS-NMS (``refine_nms_oks``: a
            duplicate of a better one is dropped, not lost), and how many the refiner lost: no
            box, a pose step 4 drops, or one it no longer sees (:func:`still_seen`) unless their
            predicted keypoints were at the image's edge (:func:`at_edge`, ``follow_edge``):
            those left the frame, and are dropped without being counted.

        A found person's score is the one they had × how much better or worse the refiner sees
        them now (the mean keypoint score of step 4, now over then), at most 1: when they had a
        refined pose, the score step 4 gives it on the same bottom-up box score.
        """
        config = self.config
        aspect = self.refiner.config.crop_width / self.refiner.config.crop_height
        boxes = [
            person_box(person.keypoints, aspect, config.follow_box_scale, config.refine_min_box)
            for person in people
        ]
        boxed = [index for index, box in enumerate(boxes) if box is not None]
        if not boxed:
            return [], len(people)
        refined = self.keypoints(image, [boxes[i] for i in boxed], instances=1)[:, 0]  # (B, 17, 3)
        found, left = [], 0
        height, width = image.shape[:2]
        for index, keypoints in zip(boxed, refined, strict=True):
            person = people[index]
            if not still_seen(keypoints, person.keypoints, config):
                left += at_edge(person.keypoints, height, width, config.follow_edge)
            else:
                before = refined_score(person.keypoints, 1.0, config.refine_score_keypoint)
                box_score = min(person.score / before, 1.0) if before > 0 else 0.0
                pose = self.refined_pose(keypoints, box_score)
                found += [pose] if pose is not None else []
        kept = oks_nms(found, config.refine_nms_oks, config.refine_keypoint_threshold)
        return [found[index] for index in kept], len(people) - len(found) - left

    def refined_pose(self, keypoints: np.ndarray, box_score: float) -> Pose | None:
        """The pose of ``(17, 3)`` refined image-pixel keypoints from a box scored
        ``box_score`` (module docstring, step 4), or ``None`` when it is dropped."""
        config = self.config
        score = refined_score(keypoints, box_score, config.refine_score_keypoint)
        missing = keypoints[:, 2] < max(config.refine_keypoint_threshold, 1e-9)  # (17,)
        keypoints = np.where(missing[:, None], 0.0, keypoints)  # (17, 3)
        if score <= 0 or (~missing).sum() < MIN_BOX_KEYPOINTS:
            return None
        return Pose(keypoints=keypoints, score=score)
