"""Training a top-down refiner (issue 16, MIPNet): person crops, instance targets, the loss.

**Samples**: one per labelled person of a COCO keypoint file (ground truth, or pseudo-labels of
``posecli label`` with ``keypoint_scores``) with at least two labelled keypoints. Its box is
made as at inference (``posecli.boxes.person_box``: keypoint extent, crop aspect, × 1.25),
then jittered like a detector's errors: side × ``U(1 ± box_scale_jitter)``, centre moved by
``U(± box_shift_jitter)`` × its width and height. The crop is one affine map from image pixels
(rotation ``U(± rotate_degrees)`` about the box centre, mirror with ``flip_probability`` and
left/right keypoints swapped, then colour jitter: the family of ``posecli.train.dataset``).
Without augmentation (validation) the box is used as it is. An occluding patch and blur follow
at their probabilities (off by default: fixed labels would contradict an occluded keypoint).

**Instances** (``instance_order``): the people of the image whose keypoint-extent centre lies
in the crop, ordered by the distance of that centre to the crop centre, the box's person first
(instance 0). Crowd and ignore regions (``iscrowd``, unlabelled or uncertain people) whose box
centre lies in the crop are unknown people: the instances from the first of them on are not
supervised (weight 0), since who they are is not known.

**Targets** (``instance_targets``): for λ = i, the heatmaps of person i when i < n (n people),
else of person 0 (MIPNet); one Gaussian of σ = ``TARGET_SIGMA`` cells per keypoint at stride 4
of the crop. Per-keypoint weights: 0 for keypoints not labelled, outside the crop, or (pseudo-
labels) scored below ``min_keypoint_score``; kept pseudo-label keypoints weigh their score with
``weight_by_score``, others 1. (Distillation from a teacher on the crop instead of labels:
``posecli.train.distill``.)

**Loss** (``refiner_loss``): the weighted heatmap MSE of top-down methods (HRNet's
``JointsMSELoss``), ``0.5 · mean over crops, λ and keypoints of w · mean over pixels of
(prediction − target)²``, every λ of every crop in one forward pass.

Items are ``(image, targets, weights)``: ``(3, H, W)`` float32 normalised per the checkpoint's
``Preprocessing``; ``(N, 17, H/4, W/4)`` float32; ``(N, 17)`` float32. Keys ``(epoch, index)``
(or ``index`` in the epoch of ``set_epoch``), every draw seeded by ``(seed, epoch, index)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from posecli.boxes import CropBox, person_box, refined_score
from posecli.config import (
    REFINER_PRESETS,
    AugmentConfig,
    InferenceConfig,
    Preprocessing,
    PRNConfig,
    RefinerConfig,
    TrainConfig,
)
from posecli.errors import InputError, UsageError
from posecli.evaluate import coco_keypoint_ap, load_annotations
from posecli.io.sources import load_image
from posecli.loader import checkpoint_kind, load_refiner
from posecli.model import REFINER, build_refiner, grow_instances, resize_crop
from posecli.model.refiner import REFINER_STRIDE
from posecli.networks import RefinerModel
from posecli.pose import Pose, to_coco_result
from posecli.refine import Refinement
from posecli.spec import COCO_FLIP_ORDER, COCO_TO_NETWORK, NUM_COCO_KEYPOINTS
from posecli.train.dataset import (
    ConcatKeypointDataset,
    ImageAnnotations,
    blur,
    colour_jitter,
    image_annotations,
    joined_sets,
    occlude,
)
from posecli.train.pretrained import load_pretrained_encoder
from posecli.transforms import normalise

logger = logging.getLogger(__name__)

#: Target Gaussian σ in heatmap cells (HRNet: 2 at 64×48 for 256×192 crops).
TARGET_SIGMA = 2.0

#: Boxes of training samples are at least this tall, image pixels.
MIN_BOX_HEIGHT = 16.0


def is_refiner_task(config: TrainConfig) -> bool:
    """Whether ``config`` trains a refiner: an explicit ``refiner`` shape, a refiner preset, or
    an ``init`` that is a refiner checkpoint (the init's kind wins)."""
    if config.init:
        return checkpoint_kind(config.init) is REFINER
    return config.refiner is not None or config.preset in REFINER_PRESETS


def initial_refiner(config: TrainConfig) -> tuple[nn.Module, RefinerConfig, Preprocessing]:
    """The refiner to train: ``config.init``'s, else fresh from ``refiner`` or the preset, its
    encoder from ImageNet weights when ``config.pretrained``."""
    if config.init:
        model = load_refiner(config.init, device="cpu")
        logger.info("initialised from %s", config.init)
        network = _reshaped(model.network, config)
        return network, network.config, model.preprocessing
    shape = config.refiner if config.refiner is not None else REFINER_PRESETS[config.preset]
    try:
        network = build_refiner(shape)
    except ValueError as error:
        raise UsageError(f"invalid refiner shape: {error}") from None
    if config.pretrained:
        load_pretrained_encoder(network)
    return network, shape, config.preprocessing


def _reshaped(network: nn.Module, config: TrainConfig) -> nn.Module:
    """The ``init`` refiner ``network`` grown to ``config.init_instances`` selectors and resized
    to ``config.init_crop_*`` crops, where those are set and differ from its own."""
    shape = network.config
    if config.init_instances and config.init_instances != shape.instances:
        try:
            network = grow_instances(network, config.init_instances)
        except ValueError as error:
            raise UsageError(f"{config.init}: {error} (--init-instances)") from None
        logger.info("grown to %d instance selectors", config.init_instances)
    crop = (config.init_crop_height, config.init_crop_width)
    if any(crop) and crop != (shape.crop_height, shape.crop_width):
        try:
            network = resize_crop(network, *crop)
        except ValueError as error:
            raise UsageError(f"invalid --init-crop {crop[0]}x{crop[1]}: {error}") from None
        logger.info("trained on %d×%d crops", *crop)
    return network


@dataclass(frozen=True)
class PersonSet:
    """The people of one image in COCO order: ``keypoints`` ``(P, 17, 3)`` ``[x, y, v]`` image
    pixels, ``scores`` ``(P, 17)`` (1 for ground truth), ``unknown`` ``(U, 2)`` centres of the
    ignore regions' boxes."""

    entry: ImageAnnotations
    keypoints: np.ndarray
    scores: np.ndarray
    unknown: np.ndarray


def person_set(entry: ImageAnnotations) -> PersonSet:
    """``entry`` (network order) as COCO-order arrays with its ignore-region centres."""
    keypoints = entry.people[:, list(COCO_TO_NETWORK)]  # (P, 17, 3)
    if entry.scores is None:
        scores = np.ones(keypoints.shape[:2])
    else:
        scores = entry.scores[:, list(COCO_TO_NETWORK)]  # (P, 17)
    centres = [
        (x + w / 2, y + h / 2)
        for x, y, w, h in (a["bbox"] for a in entry.ignore_annotations if a.get("bbox"))
    ]
    return PersonSet(entry, keypoints, scores, np.asarray(centres, dtype=np.float64).reshape(-1, 2))


def jittered_affine(
    rng: np.random.Generator,
    box: CropBox,
    shape: RefinerConfig | PRNConfig,
    augment: AugmentConfig | None,
) -> tuple[np.ndarray, bool]:
    """``(2, 3)`` image → crop affine of a (jittered) box, and whether it mirrors (a PRN's
    crop: its grid of cells).

    The generator is drawn the same number of times with or without ``augment``.
    """
    scale, shift_x, shift_y, angle, flip = rng.random(5)
    height, centre = box.height, np.array([box.centre_x, box.centre_y])
    angle_rad, flipped = 0.0, False
    if augment is not None:
        height *= 1 + (2 * scale - 1) * augment.box_scale_jitter
        centre = centre + (2 * np.array([shift_x, shift_y]) - 1) * augment.box_shift_jitter * (
            box.width,
            box.height,
        )
        angle_rad = np.deg2rad((2 * angle - 1) * augment.rotate_degrees)
        flipped = bool(flip < augment.flip_probability)
    factor = shape.crop_height / height
    cos, sin = np.cos(angle_rad) * factor, np.sin(angle_rad) * factor
    linear = np.array([[cos, sin], [-sin, cos]])
    crop_centre = np.array([(shape.crop_width - 1) / 2, (shape.crop_height - 1) / 2])
    translation = crop_centre - linear @ centre
    if flipped:
        linear = np.diag([-1.0, 1.0]) @ linear
        translation = np.array([shape.crop_width - 1 - translation[0], translation[1]])
    return np.concatenate([linear, translation[:, None]], axis=1), flipped


def augmented_crop(
    image: np.ndarray,
    affine: np.ndarray,
    shape: RefinerConfig,
    preprocessing: Preprocessing,
    augment: AugmentConfig | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """The ``(crop_height, crop_width, 3)`` uint8 RGB crop that ``affine`` (image → crop pixels)
    cuts from the RGB uint8 image, padded with the preprocessing's grey, then (with ``augment``)
    colour-jittered, occluded and blurred."""
    size = (shape.crop_width, shape.crop_height)
    pad = (preprocessing.pad_value,) * 3
    crop = cv2.warpAffine(image, affine, size, flags=cv2.INTER_LINEAR, borderValue=pad)
    if augment is not None:
        crop = colour_jitter(crop, rng, augment)
        crop = blur(occlude(crop, rng, augment), rng, augment)
    return crop


def instance_order(
    keypoints: np.ndarray, person: int, unknown: np.ndarray, height: int, width: int
) -> tuple[list[int], int | None]:
    """The supervised instances of a crop (module docstring).

    Args:
        keypoints: ``(P, 17, 3)`` ``[x, y, v]`` in crop pixels.
        person: the box's person.
        unknown: ``(U, 2)`` ignore-region centres in crop pixels.
        height, width: crop size.

    Returns:
        The people in order (``person`` first), and the rank of the first unknown person
        (instances from that rank on are not supervised), or ``None`` when there is none.
    """
    centre = np.array([(width - 1) / 2, (height - 1) / 2])

    def inside(point: np.ndarray) -> bool:
        return bool(-0.5 <= point[0] < width - 0.5 and -0.5 <= point[1] < height - 0.5)

    ranked: list[tuple[float, int]] = []  # (distance, person index or -1 for unknown)
    for other, points in enumerate(keypoints):
        labelled = points[points[:, 2] > 0, :2]
        if other == person or len(labelled) == 0:
            continue
        middle = (labelled.min(axis=0) + labelled.max(axis=0)) / 2
        if inside(middle):
            ranked.append((float(np.hypot(*(middle - centre))), other))
    ranked += [(float(np.hypot(*(u - centre))), -1) for u in unknown if inside(u)]
    order = [person]
    for _, other in sorted(ranked):
        if other < 0:
            return order, len(order)
        order.append(other)
    return order, None


def instance_targets(
    keypoints: np.ndarray,
    scores: np.ndarray,
    order: tuple[list[int], int | None],
    shape: RefinerConfig,
    min_keypoint_score: float,
    weight_by_score: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps and weights of every λ (module docstring).

    Args:
        keypoints: ``(P, 17, 3)`` ``[x, y, v]`` crop pixels; ``scores``: ``(P, 17)``.
        order: ``instance_order``'s people and rank of the first unknown person.

    Returns:
        ``(N, 17, H/4, W/4)`` float32 targets and ``(N, 17)`` float32 weights.
    """
    people, first_unknown = order
    rows, columns = shape.crop_height // REFINER_STRIDE, shape.crop_width // REFINER_STRIDE
    targets = np.zeros((shape.instances, NUM_COCO_KEYPOINTS, rows, columns), dtype=np.float32)
    weights = np.zeros((shape.instances, NUM_COCO_KEYPOINTS), dtype=np.float32)
    sigma = TARGET_SIGMA * REFINER_STRIDE  # pixels
    y = REFINER_STRIDE * np.arange(rows)[:, None] + (REFINER_STRIDE - 1) / 2  # (h, 1)
    x = REFINER_STRIDE * np.arange(columns)[None, :] + (REFINER_STRIDE - 1) / 2  # (1, w)
    for instance in range(shape.instances):
        rank = instance if instance < len(people) else 0
        if first_unknown is not None and instance >= first_unknown:
            continue  # an unknown person ranks first: who this λ is is not known
        points, confidence = keypoints[people[rank]], scores[people[rank]]  # (17, 3), (17,)
        inside = (
            (points[:, 0] >= -0.5)
            & (points[:, 0] < shape.crop_width - 0.5)
            & (points[:, 1] >= -0.5)
            & (points[:, 1] < shape.crop_height - 0.5)
        )
        kept = (points[:, 2] > 0) & inside & (confidence >= min_keypoint_score)  # (17,)
        weights[instance] = np.where(kept, confidence if weight_by_score else 1.0, 0.0)
        for k in np.flatnonzero(kept):
            squared = (x - points[k, 0]) ** 2 + (y - points[k, 1]) ** 2  # (h, w)
            targets[instance, k] = np.exp(-squared / (2 * sigma * sigma))
    return targets, weights


class RefinerCropDataset(torch.utils.data.Dataset):
    """Training crops of a COCO keypoint file (see the module docstring).

    Args:
        annotations: COCO ``person_keypoints`` JSON; images: its image folder.
        shape: the refiner's crop size and instances.
        augment: random augmentation, or ``None`` for the plain box (validation, tests).
        preprocessing: the network's input convention.
        seed: base of every random draw.
        min_keypoint_score, weight_by_score: pseudo-label keypoint masking and weighting.
    """

    def __init__(
        self,
        annotations: str | Path,
        images: str | Path,
        shape: RefinerConfig,
        augment: AugmentConfig | None = None,
        preprocessing: Preprocessing | None = None,
        seed: int = 0,
        min_keypoint_score: float = 0.0,
        weight_by_score: bool = False,
    ) -> None:
        folder = Path(images)
        if not folder.is_dir():
            raise InputError(f"image folder not found: {folder}")
        self.coco = load_annotations(annotations)
        self.shape, self.augment, self.seed, self.epoch = shape, augment, seed, 0
        self.preprocessing = Preprocessing() if preprocessing is None else preprocessing
        self.min_keypoint_score, self.weight_by_score = min_keypoint_score, weight_by_score
        self.sets = [
            person_set(image_annotations(self.coco, image_id, folder, min_keypoint_score))
            for image_id in sorted(self.coco.imgs)
        ]
        self.samples = [
            (image, person)
            for image, people in enumerate(self.sets)
            for person, points in enumerate(people.keypoints)
            if (points[:, 2] > 0).sum() >= 2
        ]
        if not self.samples:
            raise InputError(f"no people with two or more labelled keypoints in {annotations}")
        self.pseudo_labelled = False  # read by ConcatKeypointDataset; weights always per keypoint
        logger.info("%d training crops from %s", len(self.samples), annotations)

    @classmethod
    def from_config(
        cls, config: TrainConfig, shape: RefinerConfig, preprocessing: Preprocessing
    ) -> RefinerCropDataset | ConcatKeypointDataset:
        """The augmented training crops of a run: ``config.annotations`` with
        ``config.images``, joined by every pair of ``config.more_datasets``."""
        return joined_sets(  # type: ignore[return-value]
            config,
            lambda annotations, images: cls(
                annotations,
                images,
                shape,
                augment=config.augment,
                preprocessing=preprocessing,
                seed=config.seed,
                min_keypoint_score=config.min_keypoint_score,
                weight_by_score=config.weight_by_score,
            ),
        )

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws plain integer keys get (``dataset[index]``)."""
        self.epoch = epoch

    def sample(self, index: int, epoch: int) -> dict[str, Any]:
        """Sample ``index`` of ``epoch`` before targets: ``image`` ``(H, W, 3)`` uint8 RGB crop,
        ``keypoints`` ``(P, 17, 3)`` crop pixels, ``scores`` ``(P, 17)``, ``order``."""
        rng = np.random.default_rng((self.seed, epoch, index))
        image_index, person = self.samples[index]
        people = self.sets[image_index]
        image = load_image(people.entry.path)
        if image.shape[:2] != (people.entry.height, people.entry.width):
            raise InputError(
                f"{people.entry.path} is {image.shape[1]}×{image.shape[0]}, its annotations say "
                f"{people.entry.width}×{people.entry.height}"
            )
        shape = self.shape
        visible = people.keypoints[person].copy()  # (17, 3) [x, y, v]
        box = person_box(visible, shape.crop_width / shape.crop_height, 1.25, MIN_BOX_HEIGHT)
        assert box is not None  # samples have two or more labelled keypoints
        affine, flipped = jittered_affine(rng, box, shape, self.augment)
        crop = augmented_crop(image, affine, shape, self.preprocessing, self.augment, rng)
        keypoints, scores = people.keypoints.copy(), people.scores
        keypoints[..., :2] = people.keypoints[..., :2] @ affine[:, :2].T + affine[:, 2]
        keypoints[people.keypoints[..., 2] <= 0] = 0.0
        unknown = people.unknown @ affine[:, :2].T + affine[:, 2]  # (U, 2)
        if flipped:
            keypoints = keypoints[:, list(COCO_FLIP_ORDER)]
            scores = scores[:, list(COCO_FLIP_ORDER)]
        order = instance_order(keypoints, person, unknown, shape.crop_height, shape.crop_width)
        return {"image": crop, "keypoints": keypoints, "scores": scores, "order": order}

    def __getitem__(
        self, key: int | tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image, targets, weights)`` of ``key``, an index or ``(epoch, index)``."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        sample = self.sample(index, epoch)
        targets, weights = instance_targets(
            sample["keypoints"],
            sample["scores"],
            sample["order"],
            self.shape,
            self.min_keypoint_score,
            self.weight_by_score,
        )
        image = normalise(sample["image"][None], self.preprocessing)[0]  # (3, H, W)
        return torch.from_numpy(image), torch.from_numpy(targets), torch.from_numpy(weights)


def refiner_loss(
    network: nn.Module, images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The MIPNet weighted heatmap MSE of a batch (module docstring), float32 scalar.

    Args:
        network: the refiner (or its DDP wrapper).
        images: ``(B, 3, H, W)`` normalised crops.
        targets: ``(B, N, 17, H/4, W/4)``; weights: ``(B, N, 17)``.
    """
    batch, instances = targets.shape[:2]
    crops = images.repeat(instances, 1, 1, 1)  # (N·B, 3, H, W), λ-major
    selectors = torch.arange(instances, device=images.device).repeat_interleave(batch)  # (N·B,)
    maps = network(crops, selectors)  # (N·B, 17, H/4, W/4)
    maps = maps.reshape(instances, batch, *maps.shape[1:]).transpose(0, 1)  # (B, N, 17, h, w)
    squared = (maps.float() - targets.float()) ** 2  # (B, N, 17, h, w)
    return 0.5 * (squared.mean(dim=(-2, -1)) * weights.float()).mean()


def box_results(
    refiner: RefinerModel, annotations: str, images: str, device: torch.device
) -> list[dict[str, Any]]:
    """COCO results of the refiner (λ = 0) on the annotated people's boxes (keypoint extent,
    as at inference): the refiner's ceiling, with perfect bottom-up people. Scores: the mean
    keypoint score above ``refine_score_keypoint``."""
    coco = load_annotations(annotations)
    config = InferenceConfig(instances=1, device=str(device))
    refinement = Refinement(refiner, config, device)
    aspect = refiner.config.crop_width / refiner.config.crop_height
    results = []
    for image_id in sorted(coco.imgs):
        boxes = []
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False)):
            points = np.asarray(annotation.get("keypoints") or [0] * 51, dtype=np.float64)
            box = person_box(points.reshape(17, 3), aspect, config.refine_box_scale, 1.0)
            if box is not None:
                boxes.append(box)
        if not boxes:
            continue
        image = load_image(Path(images) / coco.imgs[image_id]["file_name"])
        for person in refinement.keypoints(image, boxes)[:, 0]:  # (17, 3) per box
            score = refined_score(person, 1.0, config.refine_score_keypoint)
            results.append(to_coco_result(Pose(keypoints=person, score=score), image_id))
    return results


def box_ap(
    refiner: RefinerModel, annotations: str, images: str, device: torch.device
) -> dict[str, float]:
    """AP, AP50, AP75, APM, APL, AR of ``box_results``."""
    return coco_keypoint_ap(annotations, box_results(refiner, annotations, images, device))
