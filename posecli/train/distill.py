"""Consistent distillation for the refiner (issue 35; Beyer et al., CVPR 2022, "Knowledge
distillation: a good teacher is patient and consistent").

The teacher (PP-TinyPose 256×192, ``posecli.train.label.tinypose``) runs on the very crop the
student sees, after every augmentation, so its heatmaps are the target of that crop whatever the
augmentation did: rotations, mirror images, occluding patches, blur and box jitter never make
the target drift from the pixels (fixed labels say where a keypoint is even when a patch hides
it). Only person boxes are needed, no keypoint labels: hand-drawn ones (``person_boxes.json``)
or the ``bbox`` of every non-crowd person of a COCO file (labels v3 keep people too small or
unsure for keypoints as boxes).

**Samples** (:class:`TeacherCropDataset`): one per person box at least
``MIN_PERSON_HEIGHT`` tall. Its crop box is the box grown to the crop's aspect around its centre,
× ``BOX_SCALE``, jittered, rotated and mirrored by ``posecli.train.refiner.jittered_affine``, then
colour jitter, an occluding patch and blur (``posecli.train.dataset``). **Targets**: λ = 0 (the
box's person) gets the teacher's heatmaps of the crop, all 17 keypoints weighing 1 (the
teacher's confidence is the heatmap's height); other λ are not supervised (weight 0: who they
are is the labels' knowledge, not the teacher's). Items are those of
``posecli.train.refiner.RefinerCropDataset``: ``(image, targets, weights)``.

:class:`CropTeacher` lives in each data-loading process: the onnxruntime session is opened on
first use in the process that uses it (a session cannot be pickled to a worker). Crops of any
size are resized to the teacher's 256×192 input; its 64×48 heatmaps are resampled (linearly) to
the student's grid, whose cells sit 1.5 crop pixels further than the teacher's
(``posecli.train.label.tinypose.grid_heatmaps``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from posecli.boxes import CropBox
from posecli.config import AugmentConfig, Preprocessing, RefinerConfig, TrainConfig
from posecli.errors import InputError
from posecli.evaluate import load_annotations
from posecli.io.sources import load_image
from posecli.model.refiner import REFINER_STRIDE
from posecli.spec import NUM_COCO_KEYPOINTS
from posecli.train.dataset import (
    ConcatKeypointDataset,
    joined_sets,
)
from posecli.train.label.teachers import open_session
from posecli.train.label.tinypose import TINYPOSE_INPUT, TinyPose, grid_heatmaps
from posecli.train.label.writer import read_person_boxes
from posecli.train.refiner import augmented_crop, jittered_affine
from posecli.transforms import normalise

logger = logging.getLogger(__name__)

#: Crop box side over the person box's aspect-fixed side. Hand-drawn and detector boxes reach
#: the head top and the feet: × 1.1 frames a person about as inference's keypoint extent × 1.25.
BOX_SCALE = 1.1

#: People shorter than this (image pixels) are not distilled: their crop is a blur to both.
MIN_PERSON_HEIGHT = 32.0


class CropTeacher:
    """Teacher heatmaps of student crops (module docstring).

    Args:
        path: the teacher's ONNX file (``tinypose_256x192.onnx``).
        flip: flip-test the teacher (two passes per crop).
        threads: onnxruntime intra-op threads (1 in a data worker).
    """

    def __init__(self, path: str | Path, flip: bool = True, threads: int = 1) -> None:
        self.path, self.flip, self.threads = Path(path), flip, threads
        self._teacher: TinyPose | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for data workers without the session: each process opens its own."""
        return {**self.__dict__, "_teacher": None}

    def _network(self) -> TinyPose:
        if self._teacher is None:
            self._teacher = TinyPose(open_session(self.path, self.threads))
        return self._teacher

    def heatmaps(self, crop: np.ndarray, rows: int, columns: int) -> np.ndarray:
        """The teacher's heatmaps of ``crop``, uint8 RGB ``(H, W, 3)``, on the student's grid:
        ``(17, rows, columns)`` float32, COCO order, cell ``(r, c)`` at crop pixel
        ``(4c + 1.5, 4r + 1.5)`` as ``posecli.train.refiner.instance_targets`` places them
        (``grid_heatmaps``: the teacher's own cells sit at ``(4c, 4r)`` of its 256×192 input)."""
        height, width = crop.shape[:2]
        if (height, width) != TINYPOSE_INPUT:
            size = (TINYPOSE_INPUT[1], TINYPOSE_INPUT[0])
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)
        maps = self._network().heatmaps(crop[None], flip=self.flip)  # (1, 17, 64, 48)
        return grid_heatmaps(maps, (height, width), rows, columns)[0]  # (17, rows, columns)


@dataclass(frozen=True)
class ImageBoxes:
    """The person boxes of one image: ``boxes`` ``(B, 4)`` float64 ``[x0, y0, x1, y1]``
    image pixels."""

    path: Path
    boxes: np.ndarray


def person_boxes(annotations: str | Path, images: str | Path) -> list[ImageBoxes]:
    """The people of a ``person_boxes.json`` (paths relative to its folder) or of a COCO file
    (the ``bbox`` of each non-crowd annotation, images under ``images``), in file order, those
    under ``MIN_PERSON_HEIGHT`` left out.

    Raises:
        InputError: unreadable or malformed file, missing image folder.
    """
    path, folder = Path(annotations), Path(images)
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder}")
    try:
        hand_drawn = "person_boxes" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read annotations {path}: {error}") from error
    if hand_drawn:
        listing = sorted(read_person_boxes(path).items())
    else:
        coco = load_annotations(path)
        listing = [
            (folder / coco.imgs[image_id]["file_name"], _coco_boxes(coco, image_id))
            for image_id in sorted(coco.imgs)
        ]
    people = [
        ImageBoxes(Path(image), boxes[boxes[:, 3] - boxes[:, 1] >= MIN_PERSON_HEIGHT])
        for image, boxes in listing
    ]
    return [entry for entry in people if len(entry.boxes)]


def _coco_boxes(coco: Any, image_id: int) -> np.ndarray:
    """``(B, 4)`` ``[x0, y0, x1, y1]`` boxes of the non-crowd annotations of one image."""
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False))
    boxes = np.asarray([a["bbox"] for a in annotations if a.get("bbox")], dtype=np.float64)
    boxes = boxes.reshape(-1, 4)  # (B, 4) [x, y, w, h]
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def crop_box(box: np.ndarray, aspect: float) -> CropBox:
    """The crop box of person box ``[x0, y0, x1, y1]``: grown to width / height ``aspect``
    around its centre, × ``BOX_SCALE``."""
    width, height = float(box[2] - box[0]), float(box[3] - box[1])
    height = max(height, width / aspect, 1.0) * BOX_SCALE
    return CropBox((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, height * aspect, height)


class TeacherCropDataset(torch.utils.data.Dataset):
    """Training crops of person boxes with the teacher's targets (module docstring).

    Args:
        people: the boxes of each image (``person_boxes``).
        shape: the refiner's crop size and instances.
        teacher: the heatmaps of each crop.
        augment: random augmentation, or ``None`` for the plain box.
        preprocessing: the network's input convention.
        seed: base of every random draw (``(seed, epoch, index)``).
    """

    def __init__(
        self,
        people: list[ImageBoxes],
        shape: RefinerConfig,
        teacher: CropTeacher,
        augment: AugmentConfig | None = None,
        preprocessing: Preprocessing | None = None,
        seed: int = 0,
    ) -> None:
        self.people, self.shape, self.teacher = people, shape, teacher
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.preprocessing = Preprocessing() if preprocessing is None else preprocessing
        self.samples = [(i, b) for i, entry in enumerate(people) for b in range(len(entry.boxes))]
        if not self.samples:
            raise InputError(f"no person boxes of {MIN_PERSON_HEIGHT:g} pixels or taller")
        self.pseudo_labelled = False  # read by ConcatKeypointDataset; weights always per keypoint
        logger.info("%d person boxes to distil", len(self.samples))

    @classmethod
    def from_config(
        cls, config: TrainConfig, shape: RefinerConfig, preprocessing: Preprocessing
    ) -> TeacherCropDataset | ConcatKeypointDataset:
        """The augmented crops of a run: the boxes of ``config.annotations`` (a COCO file or a
        ``person_boxes.json``) with ``config.images``, joined by ``config.more_datasets``."""
        assert config.teacher is not None
        teacher = CropTeacher(config.teacher)
        return joined_sets(  # type: ignore[return-value]
            config,
            lambda annotations, images: cls(
                person_boxes(annotations, images),
                shape,
                teacher,
                augment=config.augment,
                preprocessing=preprocessing,
                seed=config.seed,
            ),
        )

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws plain integer keys get (``dataset[index]``)."""
        self.epoch = epoch

    def crop(self, index: int, epoch: int) -> np.ndarray:
        """The augmented crop of sample ``index`` in ``epoch``: ``(H, W, 3)`` uint8 RGB."""
        rng = np.random.default_rng((self.seed, epoch, index))
        image_index, person = self.samples[index]
        entry = self.people[image_index]
        image = load_image(entry.path)
        shape = self.shape
        box = crop_box(entry.boxes[person], shape.crop_width / shape.crop_height)
        affine, _ = jittered_affine(rng, box, shape, self.augment)
        return augmented_crop(image, affine, shape, self.preprocessing, self.augment, rng)

    def __getitem__(
        self, key: int | tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image, targets, weights)`` of ``key``, an index or ``(epoch, index)``:
        ``(3, H, W)`` float32, ``(N, 17, H/4, W/4)`` float32, ``(N, 17)`` float32."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        crop = self.crop(index, epoch)
        shape = self.shape
        rows, columns = shape.crop_height // REFINER_STRIDE, shape.crop_width // REFINER_STRIDE
        targets = np.zeros((shape.instances, NUM_COCO_KEYPOINTS, rows, columns), np.float32)
        weights = np.zeros((shape.instances, NUM_COCO_KEYPOINTS), np.float32)
        targets[0], weights[0] = self.teacher.heatmaps(crop, rows, columns), 1.0
        image = normalise(crop[None], self.preprocessing)[0]  # (3, H, W)
        return torch.from_numpy(image), torch.from_numpy(targets), torch.from_numpy(weights)
