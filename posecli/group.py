"""Pose Residual Network grouping (issue 20, ``DecodeConfig.grouping == "prn"``).

For one image, its heatmaps and the people the greedy decoder found in them:

1. **Boxes** (``boxes``): each greedy person's keypoint extent at the PRN grid's aspect, × the
   ``prn_box_scale`` (1.25), at least ``prn_min_box`` pixels tall (``posecli.boxes.person_box``,
   as the refiner's boxes). People with fewer than two keypoints get none and stay as they are.
   Boxes from the person-mask channel were measured too (``bench/oracle_ap.py --boxes mask``):
   touching people share one mask blob, so one box holds several of them and all but one are lost.
2. **Crops** (``keypoints``): the 17 keypoint maps (COCO order) sampled bilinearly at the cell
   centres of every box's ``crop_height × crop_width`` grid (zero outside the maps), the crop's
   cells laid on the box as ``posecli.boxes.crop_affine`` lays crop pixels, all boxes of the image
   in one batch through the PRN.
3. **Picks**: per box and keypoint type, the most probable cell of the PRN's softmax, kept when its
   probability is ≥ ``prn_min_probability`` × the uniform one; it snaps to the nearest peak of
   that type in the bottom-up maps (found and refined to sub-cell precision as the decoder does,
   ``posecli.decode.reference.find_all_peaks``) within ``prn_snap_cells`` PRN cells, whose value
   is the keypoint's confidence; with no peak there the keypoint is missing.
4. **People**: a box's person scores its greedy person's score × the mean confidence of its
   keypoints (``posecli.boxes.refined_score``); those with fewer than two keypoints are dropped,
   the rest go through OKS-NMS at ``prn_nms_oks`` (two boxes of one person's fragments pick the
   same person), best first.

Coordinates: keypoints in COCO-17 order, original image pixels (x right, y down, integer values at
pixel centres); heatmaps on their grid with its ``GridTransform`` to pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from posecli.boxes import (
    MIN_BOX_KEYPOINTS,
    CropBox,
    crop_affine,
    oks_nms,
    person_box,
    refined_score,
    to_image,
)
from posecli.config import DecodeConfig
from posecli.decode.reference import Peaks, find_all_peaks
from posecli.errors import DecoderError, UsageError
from posecli.model import cell_probabilities
from posecli.networks import PRNModel
from posecli.pose import Pose
from posecli.spec import COCO_TO_NETWORK, KEYPOINT_CHANNELS, NUM_CHANNELS, NUM_COCO_KEYPOINTS
from posecli.transforms import GridTransform


def checked_maps(maps: np.ndarray) -> np.ndarray:
    """The ``(50, h, w)`` heatmaps as float32 (a DecoderError names a wrong type or shape)."""
    if not isinstance(maps, np.ndarray) or maps.ndim != 3 or maps.shape[0] != NUM_CHANNELS:
        shape = getattr(maps, "shape", type(maps).__name__)
        raise DecoderError(f"heatmaps must have shape ({NUM_CHANNELS}, H, W), got {shape}")
    if 0 in maps.shape or not np.issubdtype(maps.dtype, np.floating):
        raise DecoderError(f"heatmaps must be non-empty floats, got {maps.dtype} {maps.shape}")
    return np.ascontiguousarray(maps, dtype=np.float32)


class PRNGrouping:
    """Regroups the greedy people of images with a PRN; see the module docstring.

    The PRN's network runs on ``device`` in float32 (moved there, in place).
    """

    def __init__(self, prn: PRNModel, config: DecodeConfig, device: torch.device) -> None:
        if prn.network is None:
            raise UsageError(f"PRN {prn.name} has no torch network")
        self.prn, self.config, self.device = prn, config, device
        self.network = prn.network.to(device=device, dtype=torch.float32).eval()

    def boxes(self, poses: Sequence[Pose]) -> list[tuple[int, CropBox]]:
        """``(index into poses, box)`` of every pose that gets a box (image pixels)."""
        aspect = self.prn.config.crop_width / self.prn.config.crop_height
        scale, least = self.config.prn_box_scale, self.config.prn_min_box
        boxes = [
            (i, person_box(pose.keypoints, aspect, scale, least)) for i, pose in enumerate(poses)
        ]
        return [(index, box) for index, box in boxes if box is not None]

    def crops(
        self, maps: np.ndarray, transform: GridTransform, affines: Sequence[np.ndarray]
    ) -> torch.Tensor:
        """``(B, 17, crop_height, crop_width)`` float32 COCO keypoint maps of ``(50, h, w)``
        ``maps`` at the cell centres of each box's grid (``affines``: image → crop cells)."""
        rows, columns = self.prn.config.crop_height, self.prn.config.crop_width
        cells = np.stack(np.meshgrid(np.arange(columns), np.arange(rows)), axis=-1)  # (H, W, 2)
        grid = np.stack([transform.inverse(to_image(cells, a)) for a in affines])  # (B, H, W, 2)
        height, width = maps.shape[1:]
        grid = 2 * grid / (max(width - 1, 1), max(height - 1, 1)) - 1  # align_corners=True
        coco = maps[KEYPOINT_CHANNELS][list(COCO_TO_NETWORK)]  # (17, h, w)
        source = torch.from_numpy(coco).to(self.device)[None].expand(len(affines), -1, -1, -1)
        points = torch.from_numpy(grid).to(self.device, torch.float32)  # (B, H, W, 2)
        return F.grid_sample(source, points, mode="bilinear", align_corners=True)  # (B, 17, H, W)

    @torch.inference_mode()
    def keypoints(
        self, maps: np.ndarray, transform: GridTransform, boxes: Sequence[CropBox]
    ) -> np.ndarray:
        """The PRN's keypoints of every box (module docstring, steps 2–3).

        Args:
            maps: ``(50, h, w)`` heatmaps of one image; transform: their grid → image pixels.
            boxes: person boxes in image pixels.

        Returns:
            ``(len(boxes), 17, 3)`` float64 ``[x, y, confidence]`` image pixels, ``(0, 0, 0)``
            for a missing keypoint.
        """
        maps = checked_maps(maps)
        shape = self.prn.config
        affines = [crop_affine(box, shape.crop_height, shape.crop_width) for box in boxes]
        found = np.zeros((len(boxes), NUM_COCO_KEYPOINTS, 3))
        if not boxes:
            return found
        probabilities = cell_probabilities(self.network(self.crops(maps, transform, affines)))
        best, cell = probabilities.flatten(2).max(dim=2)  # (B, 17) each
        cell = cell.cpu().numpy()
        picks = np.stack([cell % shape.crop_width, cell // shape.crop_width], axis=-1)  # (B, 17, 2)
        picked = np.stack([to_image(p, a) for p, a in zip(picks, affines, strict=True)])
        reach = np.array([box.height / shape.crop_height for box in boxes])  # (B,) px per cell
        peaks = find_all_peaks(maps[KEYPOINT_CHANNELS], self.config)  # grid, network order
        for k, network_type in enumerate(COCO_TO_NETWORK):
            found[:, k] = self._snapped(peaks, network_type, picked[:, k], reach, transform)
        least = self.config.prn_min_probability / (shape.crop_height * shape.crop_width)
        found[best.cpu().numpy() < least] = 0.0
        return found

    def _snapped(
        self,
        peaks: Peaks,
        network_type: int,
        picked: np.ndarray,
        reach: np.ndarray,
        transform: GridTransform,
    ) -> np.ndarray:
        """``(B, 3)`` ``[x, y, peak value]`` image pixels: the nearest peak of one type to each
        of the ``(B, 2)`` image-pixel ``picked`` points within ``prn_snap_cells × reach``
        pixels, ``(0, 0, 0)`` where none is."""
        ids = peaks.ids_of_type(network_type)
        snapped = np.zeros((len(picked), 3))
        if not len(ids):
            return snapped
        pixels = transform.apply(peaks.xy[ids.start : ids.stop])  # (n, 2)
        distance = np.linalg.norm(picked[:, None] - pixels[None], axis=-1)  # (B, n)
        nearest = distance.argmin(axis=1)  # (B,)
        near = distance[np.arange(len(picked)), nearest] <= self.config.prn_snap_cells * reach
        snapped[near, :2] = pixels[nearest[near]]
        snapped[near, 2] = np.clip(peaks.scores[ids.start + nearest[near]], 0.0, 1.0)
        return snapped

    def people(
        self,
        maps: np.ndarray,
        transform: GridTransform,
        boxes: Sequence[CropBox],
        box_scores: Sequence[float],
    ) -> list[Pose]:
        """The people the PRN finds in ``boxes`` (image pixels; module docstring, steps 2–4),
        each box scored ``box_scores``, duplicates suppressed, highest score first."""
        people = []
        for person, box_score in zip(
            self.keypoints(maps, transform, boxes), box_scores, strict=True
        ):
            score = refined_score(person, box_score, 0.0)  # (17, 3) person
            if score > 0 and (person[:, 2] > 0).sum() >= MIN_BOX_KEYPOINTS:
                people.append(Pose(keypoints=person.astype(np.float32), score=score))
        return [people[i] for i in oks_nms(people, self.config.prn_nms_oks, 0.0)]

    def group(
        self, maps: np.ndarray, transform: GridTransform, poses: Sequence[Pose]
    ) -> list[Pose]:
        """The people of one image regrouped by the PRN (module docstring), highest score
        first, from its ``(50, h, w)`` ``maps`` and its greedy ``poses`` (image pixels)."""
        boxes = self.boxes(poses)
        scores = [poses[index].score for index, _ in boxes]
        kept = self.people(maps, transform, [box for _, box in boxes], scores)
        boxed = {index for index, _ in boxes}
        unboxed = [pose for index, pose in enumerate(poses) if index not in boxed]
        return sorted(kept + unboxed, key=lambda pose: -pose.score)
