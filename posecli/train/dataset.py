"""COCO-format keypoint dataset: augmentation, multi-scale targets and miss-masks.

Each item is ``(image, targets, masks)``:

* ``image``: ``(3, S, S)`` float32, the augmented square crop normalised per the checkpoint's
  ``Preprocessing`` (``posecli.transforms.normalise``: channel order, scale, mean, std);
* ``targets``: list over the 5 scales (finest first) of ``(50, S/4·2^-j, S/4·2^-j)`` float32
  heatmaps: stride-4 targets from ``render_heatmaps`` and their adaptive average pools;
* ``masks``: list over the 5 scales of ``(1, …)`` float32 miss-masks, or ``(50, …)`` when the
  annotations carry per-keypoint scores (pseudo-labels), see ``posecli.train.masks``.

Annotations: the official COCO ``person_keypoints`` format read by pycocotools. People with
labelled keypoints are rendered; crowd annotations (``iscrowd``) and people without labelled
keypoints become ignore regions (their segmentation through ``annToMask``, or their box when they
have none). Pseudo-labels add ``"keypoint_scores"``: 17 confidences in COCO order; keypoints
scored below ``min_keypoint_score`` are ignored (neither taught present nor absent), kept ones
can be weighted by their score, and a person left without keypoints becomes an ignore region.

Augmentation (training only) is one affine map from image pixels to crop pixels: fit the long
side into the crop, random zoom, rotation about the image centre, shift of the centre, optional
mirror (keypoints swap sides with ``KEYPOINT_FLIP_ORDER``), then colour jitter. With
``mosaic_probability`` an item is instead a 2×2 mosaic: itself and three random images, each
augmented as above into a quarter of the crop (so people appear at half the size, and the crop is
filled with pictures instead of padding); keypoints that leave their quarter are dropped. Every
random draw of item ``i`` in epoch ``e`` comes from generators seeded with ``(seed, e, i, …)``, so
a sample is the same whatever the worker, process count or resume point. Items are addressed as
``dataset[(epoch, index)]`` (or ``dataset[index]`` in the epoch chosen by ``set_epoch``).
Images are read upright as RGB (``posecli.io.sources.load_image``); pixel coordinates have
integer values at pixel centres (OpenCV's convention, which ``warpAffine`` follows, so keypoints
and pixels move together exactly).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from posecli.config import AugmentConfig, Preprocessing, TrainConfig
from posecli.errors import InputError, UsageError
from posecli.evaluate import load_annotations
from posecli.io.sources import load_image
from posecli.spec import (
    COCO_TO_NETWORK,
    KEYPOINT_FLIP_ORDER,
    LEFT_SHOULDER,
    NECK,
    NUM_COCO_KEYPOINTS,
    NUM_KEYPOINTS,
    RIGHT_SHOULDER,
    coco_to_network,
)
from posecli.train.masks import keypoint_weights, miss_mask_pyramid, scale_shapes, target_pyramid
from posecli.train.targets import render_heatmaps
from posecli.transforms import normalise

logger = logging.getLogger(__name__)

#: The input size must be a multiple of the coarsest network stride.
INPUT_MULTIPLE = 64


@dataclass(frozen=True)
class ImageAnnotations:
    """The people of one image, in its pixels.

    Attributes:
        image_id: COCO image id.
        path: image file.
        height, width: image size from the annotation file, pixels.
        people: ``(P, 18, 3)`` float64 network order ``[x, y, v]``, ``v > 0`` where labelled.
        scores: ``(P, 18)`` float64 keypoint confidences (neck: the smaller shoulder score),
            or ``None`` for ground truth.
        ignore_annotations: COCO annotation dicts whose regions the loss ignores.
    """

    image_id: int
    path: Path
    height: int
    width: int
    people: np.ndarray
    scores: np.ndarray | None
    ignore_annotations: tuple[dict, ...]


@dataclass
class AugmentedSample:
    """One image after augmentation, before targets.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB crop.
        people: ``(P, 18, 3)`` float64 network order ``[x, y, v]`` in crop pixels.
        scores: ``(P, 18)`` keypoint confidences or ``None``.
        ignored: ``(S, S)`` bool, True where the loss is ignored.
    """

    image: np.ndarray
    people: np.ndarray
    scores: np.ndarray | None
    ignored: np.ndarray


def _network_scores(coco_scores: np.ndarray) -> np.ndarray:
    """``(17,)`` COCO-order scores → ``(18,)`` network order, neck = min of the shoulders."""
    scores = np.zeros(NUM_KEYPOINTS, dtype=np.float64)
    scores[list(COCO_TO_NETWORK)] = coco_scores
    scores[NECK] = min(scores[RIGHT_SHOULDER], scores[LEFT_SHOULDER])
    return scores


def image_annotations(
    coco: COCO, image_id: int, images: Path, min_keypoint_score: float
) -> ImageAnnotations:
    """Split one image's person annotations into people to render and regions to ignore."""
    info = coco.imgs[image_id]
    people, scores, ignore = [], [], []
    for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        keypoints = np.asarray(annotation.get("keypoints") or np.zeros(3 * NUM_COCO_KEYPOINTS))
        keypoints = keypoints.reshape(NUM_COCO_KEYPOINTS, 3).astype(np.float64)
        if "keypoint_scores" in annotation:
            coco_scores = np.asarray(annotation["keypoint_scores"], dtype=np.float64)
            usable = (keypoints[:, 2] > 0) & (coco_scores >= min_keypoint_score)
        else:
            coco_scores = None
            usable = keypoints[:, 2] > 0
        if annotation.get("iscrowd", 0) or not usable.any():
            ignore.append(annotation)
            continue
        people.append(coco_to_network(keypoints))
        if coco_scores is not None:
            scores.append(_network_scores(coco_scores))
    if scores and len(scores) != len(people):
        raise InputError(f"image {image_id}: keypoint_scores on some people only")
    return ImageAnnotations(
        image_id=image_id,
        path=images / info["file_name"],
        height=int(info["height"]),
        width=int(info["width"]),
        people=np.asarray(people, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3),
        scores=np.asarray(scores, dtype=np.float64) if scores else None,
        ignore_annotations=tuple(ignore),
    )


def _warn_if_kept_keypoints_are_masked(
    coco: COCO, annotations: str | Path, min_keypoint_score: float
) -> None:
    """Warn when ``posecli label`` kept keypoints (``info.label_settings.keep_keypoint`` of its
    output) that ``min_keypoint_score`` then masks out."""
    info = coco.dataset.get("info")
    settings = info.get("label_settings") if isinstance(info, dict) else None
    kept_from = settings.get("keep_keypoint") if isinstance(settings, dict) else None
    if isinstance(kept_from, int | float) and kept_from < min_keypoint_score:
        logger.warning(
            "%s keeps keypoints scored from %g, but those below %g are masked out "
            "(--min-keypoint-score)",
            annotations,
            kept_from,
            min_keypoint_score,
        )


def ignore_map(coco: COCO, annotations: ImageAnnotations) -> np.ndarray:
    """``(H, W)`` bool in image pixels: union of the ignore regions (segmentation, else box)."""
    ignored = np.zeros((annotations.height, annotations.width), dtype=bool)
    for annotation in annotations.ignore_annotations:
        if annotation.get("segmentation"):
            with warnings.catch_warnings():  # pycocotools' NumPy 2 copy-keyword notice
                warnings.simplefilter("ignore", DeprecationWarning)
                ignored |= coco.annToMask(annotation).astype(bool)
        elif "bbox" in annotation:
            x, y, w, h = annotation["bbox"]
            x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
            ignored[y0 : int(np.ceil(y + h)), x0 : int(np.ceil(x + w))] = True
    return ignored


def crop_transform(
    rng: np.random.Generator,
    image_height: int,
    image_width: int,
    size: int,
    augment: AugmentConfig | None,
) -> tuple[np.ndarray, bool]:
    """Affine map from image pixels to crop pixels, and whether it mirrors.

    Without ``augment`` the image's long side is fitted into the ``size × size`` crop, centred.
    With it, the fit is zoomed by ``U(scale_min, scale_max)``, rotated by
    ``U(±rotate_degrees)`` about the image centre, its centre shifted by
    ``U(±shift_fraction) × size`` per axis and mirrored with ``flip_probability``. The
    generator is drawn the same number of times either way.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``crop = M[:, :2] @ image + M[:, 2]``, and the flip.
    """
    zoom, angle, shift_x, shift_y, flip_draw = rng.random(5)
    scale = size / max(image_height, image_width)
    shift = np.zeros(2)
    flipped = False
    if augment is not None:
        scale *= augment.scale_min + zoom * (augment.scale_max - augment.scale_min)
        angle = np.deg2rad((2 * angle - 1) * augment.rotate_degrees)
        shift = (2 * np.array([shift_x, shift_y]) - 1) * augment.shift_fraction * size
        flipped = bool(flip_draw < augment.flip_probability)
    else:
        angle = 0.0
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    linear = np.array([[cos, sin], [-sin, cos]])
    source_centre = np.array([(image_width - 1) / 2, (image_height - 1) / 2])
    crop_centre = np.full(2, (size - 1) / 2) + shift
    translation = crop_centre - linear @ source_centre
    if flipped:
        linear = np.diag([-1.0, 1.0]) @ linear
        translation = np.array([size - 1 - translation[0], translation[1]])
    return np.concatenate([linear, translation[:, None]], axis=1), flipped


def transform_people(people: np.ndarray, affine: np.ndarray, flipped: bool) -> np.ndarray:
    """Map ``(P, 18, 3)`` ``[x, y, v]`` through ``affine``; a mirror swaps left and right."""
    moved = people.copy()
    moved[..., :2] = people[..., :2] @ affine[:, :2].T + affine[:, 2]
    moved[people[..., 2] <= 0] = 0.0
    return moved[:, list(KEYPOINT_FLIP_ORDER)] if flipped else moved


def colour_jitter(
    image: np.ndarray, rng: np.random.Generator, augment: AugmentConfig
) -> np.ndarray:
    """Random brightness, contrast and saturation of an ``(H, W, 3)`` uint8 RGB image."""
    brightness, contrast, saturation = 1 + (2 * rng.random(3) - 1) * np.array(
        [augment.brightness, augment.contrast, augment.saturation]
    )
    pixels = image.astype(np.float32) * brightness
    grey = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (H, W) luma
    pixels = (pixels - grey.mean()) * contrast + grey.mean()
    grey = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pixels = (pixels - grey[..., None]) * saturation + grey[..., None]
    return np.clip(pixels, 0, 255).round().astype(np.uint8)


#: Size of an occluding patch: its sides are U(range) × the crop's height and width.
OCCLUSION_SIDES = (0.15, 0.4)


def occlude(crop: np.ndarray, rng: np.random.Generator, augment: AugmentConfig) -> np.ndarray:
    """``crop`` (H, W, 3) uint8 RGB with, at probability ``augment.occlusion_probability``, one
    rectangle of random size, place and flat colour painted over it (random erasing). Draws the
    generator alike whether it paints or not."""
    draw, side_h, side_w, top, left = rng.random(5)
    colour = rng.integers(0, 256, size=3)
    if draw >= augment.occlusion_probability:
        return crop
    height, width = crop.shape[:2]
    low, high = OCCLUSION_SIDES
    patch_h = max(int(height * (low + (high - low) * side_h)), 1)
    patch_w = max(int(width * (low + (high - low) * side_w)), 1)
    y, x = int(top * (height - patch_h)), int(left * (width - patch_w))
    occluded = crop.copy()
    occluded[y : y + patch_h, x : x + patch_w] = colour
    return occluded


def blur(crop: np.ndarray, rng: np.random.Generator, augment: AugmentConfig) -> np.ndarray:
    """``crop`` (H, W, 3) uint8 Gaussian-blurred (σ U(0.5, 2) pixels) at probability
    ``augment.blur_probability``, as motion and focus soften video frames. Draws the generator
    alike whether it blurs or not."""
    draw, strength = rng.random(2)
    if draw >= augment.blur_probability:
        return crop
    return cv2.GaussianBlur(crop, (0, 0), sigmaX=0.5 + 1.5 * strength)


def mosaic_of(tiles: list[AugmentedSample]) -> AugmentedSample:
    """Four ``(s, s)`` samples as one ``(2s, 2s)`` sample: row by row, top-left first.

    People move with their tile; keypoints outside their own tile are dropped (set to zero), so
    no label lands on a neighbour's pixels. Ground-truth tiles among pseudo-labelled ones get
    scores of 1.
    """
    half = tiles[0].image.shape[0]
    image = np.empty((2 * half, 2 * half, 3), dtype=np.uint8)
    ignored = np.empty((2 * half, 2 * half), dtype=bool)
    people, scores = [], []
    for position, tile in enumerate(tiles):
        top, left = divmod(position, 2)
        top, left = top * half, left * half
        image[top : top + half, left : left + half] = tile.image
        ignored[top : top + half, left : left + half] = tile.ignored
        inside = (tile.people[..., 2] > 0) & np.all(
            (tile.people[..., :2] >= -0.5) & (tile.people[..., :2] < half - 0.5), axis=-1
        )  # (P, 18)
        moved = np.where(inside[..., None], tile.people + np.array([left, top, 0.0]), 0.0)
        people.append(moved)
        scores.append(tile.scores if tile.scores is not None else np.ones(inside.shape))
    any_scores = any(tile.scores is not None for tile in tiles)
    return AugmentedSample(
        image=image,
        people=np.concatenate(people).reshape(-1, NUM_KEYPOINTS, 3),
        scores=np.concatenate(scores).reshape(-1, NUM_KEYPOINTS) if any_scores else None,
        ignored=ignored,
    )


class CocoKeypointDataset(Dataset):
    """Training items from a COCO keypoint file and its image folder (see the module docstring).

    Args:
        annotations: COCO ``person_keypoints`` JSON.
        images: folder of the images named by ``file_name``.
        input_size: square crop size ``S``, a multiple of 64.
        augment: random augmentation, or ``None`` for a centred fit (validation, tests).
        preprocessing: the network's input convention.
        seed: base of every random draw.
        include_empty_images: also serve images without keypoint-labelled people.
        min_keypoint_score: pseudo-labels: keypoints scored below are ignored.
        weight_by_score: pseudo-labels: kept keypoints weigh their score.
    """

    def __init__(
        self,
        annotations: str | Path,
        images: str | Path,
        input_size: int = 384,
        augment: AugmentConfig | None = None,
        preprocessing: Preprocessing | None = None,
        seed: int = 0,
        include_empty_images: bool = False,
        min_keypoint_score: float = 0.0,
        weight_by_score: bool = False,
    ) -> None:
        if input_size < INPUT_MULTIPLE or input_size % INPUT_MULTIPLE:
            raise UsageError(f"input size must be a multiple of {INPUT_MULTIPLE}, got {input_size}")
        self.images = Path(images)
        if not self.images.is_dir():
            raise InputError(f"image folder not found: {self.images}")
        self.coco = load_annotations(annotations)
        _warn_if_kept_keypoints_are_masked(self.coco, annotations, min_keypoint_score)
        self.input_size = input_size
        self.augment = augment
        self.preprocessing = Preprocessing() if preprocessing is None else preprocessing
        self.seed = seed
        self.epoch = 0
        self.min_keypoint_score = min_keypoint_score
        self.weight_by_score = weight_by_score
        self.entries = [
            image_annotations(self.coco, image_id, self.images, min_keypoint_score)
            for image_id in sorted(self.coco.imgs)
        ]
        if not include_empty_images:
            self.entries = [entry for entry in self.entries if len(entry.people)]
        if not self.entries:
            raise InputError(f"no images with keypoint-labelled people in {annotations}")
        self.pseudo_labelled = any(entry.scores is not None for entry in self.entries)
        self.shapes = scale_shapes(input_size, input_size)
        logger.info("%d training images from %s", len(self.entries), annotations)

    @classmethod
    def from_config(
        cls, config: TrainConfig, preprocessing: Preprocessing
    ) -> CocoKeypointDataset | ConcatKeypointDataset:
        """The augmented training set of a run: ``config.annotations`` with ``config.images``,
        joined by every pair of ``config.more_datasets``."""
        return joined_sets(  # type: ignore[return-value]
            config,
            lambda annotations, images: cls(
                annotations,
                images,
                input_size=config.input_size,
                augment=config.augment,
                preprocessing=preprocessing,
                seed=config.seed,
                include_empty_images=config.include_empty_images,
                min_keypoint_score=config.min_keypoint_score,
                weight_by_score=config.weight_by_score,
            ),
        )

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws plain integer keys get (``dataset[index]``)."""
        self.epoch = epoch

    def augmented(self, index: int, epoch: int | None = None) -> AugmentedSample:
        """Item ``index`` of ``epoch`` (default: ``set_epoch``'s) after augmentation."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng((self.seed, epoch, index))
        mosaic = self.augment is not None and self.augment.mosaic_probability > 0
        if mosaic:
            mosaic_rng = np.random.default_rng((self.seed, epoch, index, 0))
            mosaic = bool(mosaic_rng.random() < self.augment.mosaic_probability)
        if not mosaic:
            return self._view(self.entries[index], rng, self.input_size)
        half = self.input_size // 2
        others = mosaic_rng.integers(len(self.entries), size=3)
        tiles = [self._view(self.entries[index], rng, half)]
        for tile, other in enumerate(others, start=1):
            tile_rng = np.random.default_rng((self.seed, epoch, index, tile))
            tiles.append(self._view(self.entries[other], tile_rng, half))
        return mosaic_of(tiles)

    def _view(
        self, entry: ImageAnnotations, rng: np.random.Generator, size: int
    ) -> AugmentedSample:
        """One image of ``entry`` augmented into a ``size × size`` crop with ``rng``'s draws."""
        image = load_image(entry.path)
        if image.shape[:2] != (entry.height, entry.width):
            raise InputError(
                f"{entry.path} is {image.shape[1]}×{image.shape[0]}, its annotations say "
                f"{entry.width}×{entry.height}"
            )
        affine, flipped = crop_transform(rng, entry.height, entry.width, size, self.augment)
        shape = (size, size)
        pad = (self.preprocessing.pad_value,) * 3
        crop = cv2.warpAffine(image, affine, shape, flags=cv2.INTER_LINEAR, borderValue=pad)
        ignored = cv2.warpAffine(
            ignore_map(self.coco, entry).astype(np.uint8), affine, shape, flags=cv2.INTER_NEAREST
        ).astype(bool)
        if self.augment is not None:
            crop = colour_jitter(crop, rng, self.augment)
        scores = entry.scores
        if scores is not None and flipped:
            scores = scores[:, list(KEYPOINT_FLIP_ORDER)]
        return AugmentedSample(
            image=crop,
            people=transform_people(entry.people, affine, flipped),
            scores=scores,
            ignored=ignored,
        )

    def __getitem__(
        self, key: int | tuple[int, int]
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """``(image, targets, masks)`` of ``key``: an index, or ``(epoch, index)``.

        The tuple form lets a sampler carry the epoch to persistent loader workers.
        """
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        sample = self.augmented(index, epoch)
        size = self.input_size
        people = sample.people.copy()
        if sample.scores is not None:
            people[sample.scores < self.min_keypoint_score] = 0.0
        heatmaps = torch.from_numpy(render_heatmaps(people, size, size))  # (50, S/4, S/4)
        targets = target_pyramid(heatmaps, self.shapes)
        masks = miss_mask_pyramid(sample.ignored, self.shapes)
        if self.pseudo_labelled:
            scores = sample.scores
            if scores is None:
                scores = np.ones(sample.people.shape[:2])
            weights = keypoint_weights(
                sample.people, scores, self.min_keypoint_score, self.weight_by_score, size, size
            )
            weight_maps = target_pyramid(torch.from_numpy(weights), self.shapes)
            masks = [mask * weight for mask, weight in zip(masks, weight_maps, strict=True)]
        image = torch.from_numpy(normalise(sample.image[None], self.preprocessing)[0])
        return image, targets, masks


class ConcatKeypointDataset(Dataset):
    """Several keypoint datasets served as one, in order: index ``i`` of the whole is index
    ``i - offset`` of the part that holds it, in the same epoch. If any part carries
    pseudo-label scores, every part yields per-channel masks (so batches stack)."""

    def __init__(self, parts: list[CocoKeypointDataset]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(part) for part in parts])  # (P + 1,)
        pseudo_labelled = any(part.pseudo_labelled for part in parts)
        for part in parts:
            part.pseudo_labelled = pseudo_labelled

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws plain integer keys get, in every part."""
        for part in self.parts:
            part.set_epoch(epoch)

    def __getitem__(
        self, key: int | tuple[int, int]
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """``(image, targets, masks)`` of ``key``: an index, or ``(epoch, index)``."""
        epoch, index = key if isinstance(key, tuple) else (None, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        local = int(index - self.offsets[part])
        return self.parts[part][local if epoch is None else (epoch, local)]


def joined_sets(config: TrainConfig, part: Callable[[str, str], Dataset]) -> Dataset:
    """The training set of a run: ``part(annotations, images)`` of ``config.annotations`` with
    ``config.images`` and of every pair of ``config.more_datasets``, the one part alone or all
    of them joined in that order (:class:`ConcatKeypointDataset`)."""
    sources = [(config.annotations, config.images), *config.more_datasets]
    parts = [part(annotations, images) for annotations, images in sources]
    return parts[0] if len(parts) == 1 else ConcatKeypointDataset(parts)  # type: ignore[arg-type]
