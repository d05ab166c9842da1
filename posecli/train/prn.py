"""Training a Pose Residual Network (issue 20) on synthetic heatmaps of keypoint annotations.

No image is read: every input is rendered from the annotations, as MultiPoseNet trains its PRN.

**Samples**: one per labelled person of a COCO keypoint file (ground truth, or pseudo-labels of
``posecli label`` with ``keypoint_scores``; keypoints scored below ``min_keypoint_score`` are not
used) with at least two usable keypoints. Its box is made as at inference
(``posecli.boxes.person_box``: keypoint extent at the PRN grid's aspect, × 1.25), then jittered
like the refiner's crops (``posecli.train.refiner.jittered_affine``: side × ``U(1 ± 0.2)``,
centre ± 10 %, rotation, mirror with left/right swapped), onto the ``crop_height × crop_width``
grid of cells.

**Scale**: the box's height at the network input is drawn log-uniformly in
``INPUT_HEIGHTS`` (pixels): the bottom-up maps have Gaussians of σ = 9 input pixels, so a small
person's peaks cover much of its grid and a large one's a cell or two.

**Input** (``render_crop``): the usable keypoints of *every* person of the image, each dropped
with probability ``KEYPOINT_DROPOUT`` (a missed peak), rendered into the grid as the bottom-up
targets are (``posecli.train.targets.put_keypoint``: σ = 9 input pixels, truncated, people
combined by maximum), ``(17, H, W)`` float32 in COCO order.

**Target**: per channel, the box's own person's rendered peak normalised to sum 1; where that
person has no peak in the grid (not labelled, dropped, outside the box) the uniform distribution
("no keypoint of mine here"). Weights ``(17,)``: 0 for own pseudo-label keypoints scored below
``min_keypoint_score`` (unknown), else 1.

**Loss** (``prn_loss``): the weighted mean over boxes and channels of the cross-entropy between
target and the softmax of the PRN's logits over each channel's cells.

Items are ``(inputs, targets, weights)``: ``(17, H, W)``, ``(17, H, W)`` and ``(17,)`` float32;
keys ``(epoch, index)`` (or ``index`` in the epoch of ``set_epoch``), every draw seeded by
``(seed, epoch, index)``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from posecli.boxes import person_box
from posecli.config import PRN_PRESETS, AugmentConfig, Preprocessing, PRNConfig, TrainConfig
from posecli.errors import InputError, UsageError
from posecli.evaluate import load_annotations
from posecli.loader import checkpoint_kind, load_prn
from posecli.model import PRN, build_prn
from posecli.spec import COCO_FLIP_ORDER, NUM_COCO_KEYPOINTS
from posecli.train.dataset import ConcatKeypointDataset, image_annotations
from posecli.train.refiner import jittered_affine, person_set
from posecli.train.targets import KEYPOINT_SIGMA, put_keypoint, support_radius

logger = logging.getLogger(__name__)

#: Range of the box height at the network input, pixels (log-uniform): COCO people at long side
#: 384 are mostly 30–120 px tall, pseudo-labelled ones up to the whole 384 px.
INPUT_HEIGHTS = (24.0, 384.0)

#: Probability that a keypoint of any person is left out of the input (a peak the network missed).
KEYPOINT_DROPOUT = 0.1

#: Boxes of training samples are at least this tall, image pixels.
MIN_BOX_HEIGHT = 16.0


def is_prn_task(config: TrainConfig) -> bool:
    """Whether ``config`` trains a PRN: an explicit ``prn`` shape, a PRN preset, or an ``init``
    that is a PRN checkpoint (the init's kind wins)."""
    if config.init:
        return checkpoint_kind(config.init) is PRN
    return config.prn is not None or config.preset in PRN_PRESETS


def initial_prn(config: TrainConfig) -> tuple[nn.Module, PRNConfig, Preprocessing]:
    """The PRN to train: ``config.init``'s, else fresh from ``prn`` or the preset."""
    if config.val_annotations:
        raise UsageError(
            "a PRN is not validated while training: measure it with bench/oracle_ap.py "
            "--grouping prn (leave out --val-annotations)"
        )
    if config.init:
        model = load_prn(config.init, device="cpu")
        logger.info("initialised from %s", config.init)
        return model.network, model.config, model.preprocessing
    shape = config.prn if config.prn is not None else PRN_PRESETS[config.preset]
    try:
        return build_prn(shape), shape, config.preprocessing
    except ValueError as error:
        raise UsageError(f"invalid PRN shape: {error}") from None


def render_crop(
    keypoints: np.ndarray, usable: np.ndarray, shape: PRNConfig, cell: float
) -> np.ndarray:
    """``(17, H, W)`` float32 peaks of people in crop cells (module docstring, "Input").

    Args:
        keypoints: ``(P, 17, 3)`` ``[x, y, v]`` in crop cells (cell ``(i, j)`` is ``x = j,
            y = i``), COCO order.
        usable: ``(P, 17)`` bool, the keypoints to draw.
        cell: input pixels per cell (σ in cells is 9 / ``cell``).
    """
    maps = np.zeros((NUM_COCO_KEYPOINTS, shape.crop_height, shape.crop_width))
    reach = support_radius(KEYPOINT_SIGMA) / cell  # cells
    size = np.array([shape.crop_width, shape.crop_height])
    near = ((keypoints[..., :2] > -reach) & (keypoints[..., :2] < size - 1 + reach)).all(axis=-1)
    pixels = cell * keypoints[..., :2] + (cell - 1) / 2  # (P, 17, 2) as put_keypoint lays cells
    for person, k in zip(*np.nonzero(usable & near), strict=True):
        put_keypoint(maps[k], pixels[person, k, 0], pixels[person, k, 1], cell)
    return maps.astype(np.float32)


class PRNSampleDataset(torch.utils.data.Dataset):
    """Synthetic PRN samples of a COCO keypoint file (see the module docstring).

    Args:
        annotations: COCO ``person_keypoints`` JSON (its images are never read).
        shape: the PRN's grid.
        augment: box jitter, rotation and mirror, or ``None`` for the plain box (tests).
        seed: base of every random draw.
        min_keypoint_score: pseudo-label keypoints scored below are not used.
    """

    def __init__(
        self,
        annotations: str | Path,
        shape: PRNConfig,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        min_keypoint_score: float = 0.0,
    ) -> None:
        coco = load_annotations(annotations)
        self.shape, self.augment, self.seed, self.epoch = shape, augment, seed, 0
        self.sets = [
            person_set(image_annotations(coco, image_id, Path("."), min_keypoint_score))
            for image_id in sorted(coco.imgs)
        ]
        self.usable = [
            (people.keypoints[..., 2] > 0) & (people.scores >= min_keypoint_score)
            for people in self.sets
        ]
        self.samples = [
            (image, person)
            for image, usable in enumerate(self.usable)
            for person in np.flatnonzero(usable.sum(axis=1) >= 2)
        ]
        if not self.samples:
            raise InputError(f"no people with two or more usable keypoints in {annotations}")
        self.pseudo_labelled = False  # read by ConcatKeypointDataset; weights always per keypoint
        logger.info("%d PRN samples from %s", len(self.samples), annotations)

    @classmethod
    def from_config(
        cls, config: TrainConfig, shape: PRNConfig
    ) -> PRNSampleDataset | ConcatKeypointDataset:
        """The samples of a run: ``config.annotations`` and those of ``config.more_datasets``
        (image folders are not read)."""
        sources = [config.annotations, *(annotations for annotations, _ in config.more_datasets)]
        parts = [
            cls(path, shape, config.augment, config.seed, config.min_keypoint_score)
            for path in sources
        ]
        return parts[0] if len(parts) == 1 else ConcatKeypointDataset(parts)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws plain integer keys get (``dataset[index]``)."""
        self.epoch = epoch

    def __getitem__(
        self, key: int | tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs, targets, weights)`` of ``key``, an index or ``(epoch, index)``."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rng = np.random.default_rng((self.seed, epoch, index))
        image, person = self.samples[index]
        people, usable = self.sets[image], self.usable[image].copy()  # (P, 17, 3), (P, 17)
        shape = self.shape
        box = person_box(
            np.where(usable[person, :, None], people.keypoints[person], 0.0),
            shape.crop_width / shape.crop_height,
            1.25,
            MIN_BOX_HEIGHT,
        )
        assert box is not None  # samples have two or more usable keypoints
        affine, flipped = jittered_affine(rng, box, shape, self.augment)  # image → cells
        low, high = np.log(INPUT_HEIGHTS)
        cell = math.exp(rng.uniform(low, high)) / shape.crop_height  # input pixels per cell
        keypoints = people.keypoints.copy()
        keypoints[..., :2] = keypoints[..., :2] @ affine[:, :2].T + affine[:, 2]
        known = usable[person] | (people.keypoints[person, :, 2] <= 0)  # (17,) not unsure
        usable &= rng.random(usable.shape) >= KEYPOINT_DROPOUT
        if flipped:
            mirror = list(COCO_FLIP_ORDER)
            keypoints, usable, known = keypoints[:, mirror], usable[:, mirror], known[mirror]
        inputs = render_crop(keypoints, usable, shape, cell)  # (17, H, W)
        own = render_crop(keypoints[person : person + 1], usable[person : person + 1], shape, cell)
        mass = own.sum(axis=(1, 2), keepdims=True)  # (17, 1, 1)
        uniform = np.full_like(own, 1.0 / (shape.crop_height * shape.crop_width))
        targets = np.where(mass > 0, own / np.maximum(mass, 1e-12), uniform)  # (17, H, W)
        weights = known.astype(np.float32)  # (17,)
        return torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(weights)


def prn_loss(
    network: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The weighted cross-entropy of a batch (module docstring), float32 scalar.

    Args:
        network: the PRN (or its DDP wrapper).
        inputs, targets: ``(B, 17, H, W)``; weights: ``(B, 17)``.
    """
    logits = network(inputs).flatten(2).float()  # (B, 17, H·W)
    log_probabilities = torch.log_softmax(logits, dim=2)
    entropy = -(targets.flatten(2).float() * log_probabilities).sum(dim=2)  # (B, 17)
    return (entropy * weights).sum() / weights.sum().clamp(min=1.0)
