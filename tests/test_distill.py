"""Consistent distillation for the refiner (issue 35): the teacher sees the student's augmented
crop, its heatmaps become that crop's targets; heavy augmentations draw the generator alike."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from coco_synthetic import write_people_set

from posecli.config import AugmentConfig, RefinerConfig, TrainConfig
from posecli.errors import InputError, UsageError
from posecli.io.sources import load_image
from posecli.spec import NUM_COCO_KEYPOINTS
from posecli.train.dataset import blur, occlude
from posecli.train.distill import CropTeacher, TeacherCropDataset, crop_box, person_boxes
from posecli.train.trainer import train
from posecli.training_options import train_config

TEACHER = Path(__file__).resolve().parents[2] / "shared" / "teachers" / "tinypose_256x192.onnx"
EVAL_SET = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "cocomini-train"
needs_teacher = pytest.mark.skipif(
    not TEACHER.is_file(), reason=f"the TinyPose teacher is not at {TEACHER} (../shared absent)"
)

#: Two instance selectors, so that λ = 1 (another person) keeps its label targets.
TINY = RefinerConfig(crop_height=64, crop_width=64, instances=2, head_width=16, embedding=8)


class BrightnessTeacher(CropTeacher):
    """A stand-in teacher whose every heatmap is the crop's mean brightness (a function of the
    very pixels it is given), so a test can tell which crop it saw."""

    def __init__(self) -> None:
        super().__init__("unused.onnx")
        self.seen: list[np.ndarray] = []

    def heatmaps(self, crop: np.ndarray, rows: int, columns: int) -> np.ndarray:
        self.seen.append(crop.copy())
        level = np.float32(crop.mean() / 255)
        return np.full((NUM_COCO_KEYPOINTS, rows, columns), level, dtype=np.float32)


def test_heavy_augmentations_apply_at_their_probability_and_draw_alike() -> None:
    crop = np.full((64, 48, 3), 100, dtype=np.uint8)
    crop[20:40, 10:30] = 250  # an edge for the blur to soften
    always = AugmentConfig(occlusion_probability=1.0, blur_probability=1.0)
    never = AugmentConfig()
    states = []
    for augment in (always, never):
        rng = np.random.default_rng(3)
        out = blur(occlude(crop, rng, augment), rng, augment)
        states.append(rng.random())
        if augment is never:
            assert np.array_equal(out, crop)
        else:
            assert not np.array_equal(out, crop)
    assert states[0] == states[1]  # the same draws whether they apply or not
    patched = occlude(crop, np.random.default_rng(0), always)
    changed = np.any(patched != crop, axis=2)
    rows, columns = np.nonzero(changed)
    area = (np.ptp(rows) + 1) * (np.ptp(columns) + 1)
    assert changed.sum() == area >= 0.15 * 64 * 0.15 * 48  # one solid rectangle
    softened = blur(crop, np.random.default_rng(0), always)
    assert softened[20:40, 10:30].mean() < 250 and softened[0:5, 40:48].mean() == pytest.approx(100)


def test_teacher_targets_are_the_heatmaps_of_the_augmented_crop(tmp_path: Path) -> None:
    annotations, images = write_people_set(tmp_path, count=4)
    augment = AugmentConfig(occlusion_probability=0.5, blur_probability=0.5)
    teacher = BrightnessTeacher()
    dataset = TeacherCropDataset(person_boxes(annotations, images), TINY, teacher, augment)
    assert len(dataset) == 6  # one crop per person box
    for index in range(len(dataset)):
        image, targets, weights = dataset[(1, index)]
        crop = dataset.crop(index, 1)
        assert np.array_equal(teacher.seen[-1], crop)  # the crop the student is given
        assert image.shape == (3, 64, 64) and targets.shape == (2, 17, 16, 16)
        assert np.allclose(targets[0].numpy(), crop.mean() / 255)
        assert float(weights[0].min()) == 1.0  # all 17 keypoints: confidence is the height
        assert float(weights[1].max()) == 0.0 and float(targets[1].abs().max()) == 0.0
    again = dataset[(1, 2)]
    assert torch.equal(again[0], dataset[(1, 2)][0])  # seeded draws
    assert not torch.equal(dataset[(2, 2)][0], again[0])  # another epoch, another crop


def test_person_boxes_from_coco_files_and_hand_drawn_boxes(tmp_path: Path) -> None:
    annotations, images = write_people_set(tmp_path, count=2)
    from_coco = person_boxes(annotations, images)
    document = json.loads(annotations.read_text())
    boxes = [a["bbox"] for a in document["annotations"]]
    assert [len(entry.boxes) for entry in from_coco] == [1, 2]
    x, y, w, h = boxes[0]
    assert np.allclose(from_coco[0].boxes[0], [x, y, x + w, y + h])
    listing = {"person_boxes": {"images/0001.png": [[10, 5, 30, 60], [0, 0, 20, 20]],
                                "images/0002.png": [[1, 1, 8, 8]]}}  # fmt: skip
    (tmp_path / "person_boxes.json").write_text(json.dumps(listing))
    hand = person_boxes(tmp_path / "person_boxes.json", images)
    assert len(hand) == 1 and np.allclose(hand[0].boxes, [[10, 5, 40, 65]])  # short ones left out
    box = crop_box(hand[0].boxes[0], 0.75)
    assert (box.width, box.height) == pytest.approx((0.75 * 66, 66))  # 60 px tall × 1.1
    assert (box.centre_x, box.centre_y) == (25, 35)
    with pytest.raises(InputError, match="image folder"):
        person_boxes(annotations, tmp_path / "missing")


def test_the_teacher_travels_to_data_workers_without_its_session() -> None:
    teacher = CropTeacher(TEACHER, flip=False)
    teacher._teacher = object()  # an open session stand-in: never pickled
    copy = pickle.loads(pickle.dumps(teacher))
    assert copy._teacher is None and copy.path == teacher.path and copy.flip is False


def test_teacher_option_is_checked_before_training(tmp_path: Path) -> None:
    annotations, images = write_people_set(tmp_path / "coco", count=2)
    base = TrainConfig(annotations=str(annotations), images=str(images), out=str(tmp_path / "r"),
                       refiner=TINY, pretrained=False, workers=0, device="cpu")  # fmt: skip
    with pytest.raises(InputError, match="teacher model not found"):
        train(replace(base, teacher=str(tmp_path / "missing.onnx")))
    with pytest.raises(UsageError, match="refiner"):
        train(replace(base, refiner=None, preset="imhn-cpu-lite0", teacher=str(TEACHER)))
    assert not (tmp_path / "r").exists()


def _annotated_person() -> tuple[np.ndarray, np.ndarray]:
    """The first cocomini-train person with 12 or more labelled keypoints: image, (17, 3)."""
    document = json.loads((EVAL_SET / "person_keypoints.json").read_text())
    names = {image["id"]: image["file_name"] for image in document["images"]}
    for annotation in document["annotations"]:
        if annotation["num_keypoints"] >= 12 and not annotation["iscrowd"]:
            image = load_image(EVAL_SET / "images" / names[annotation["image_id"]])
            return image, np.asarray(annotation["keypoints"], dtype=np.float64).reshape(17, 3)
    raise AssertionError("no well-labelled person in cocomini-train")


@needs_teacher
@pytest.mark.parametrize("crop", [(256, 192), (128, 96)])
def test_real_teacher_heatmaps_peak_at_the_annotated_keypoints(crop: tuple[int, int]) -> None:
    image, keypoints = _annotated_person()
    shape = replace(TINY, crop_height=crop[0], crop_width=crop[1], instances=1)
    labelled = keypoints[keypoints[:, 2] > 0]
    low, high = labelled[:, :2].min(axis=0), labelled[:, :2].max(axis=0)
    centre, height = (low + high) / 2, (high[1] - low[1]) * 1.25
    scale = shape.crop_height / height
    affine = np.array([[scale, 0, (crop[1] - 1) / 2 - scale * centre[0]],
                       [0, scale, (crop[0] - 1) / 2 - scale * centre[1]]])  # fmt: skip
    pixels = cv2.warpAffine(image, affine, (crop[1], crop[0]), flags=cv2.INTER_LINEAR)
    maps = CropTeacher(TEACHER).heatmaps(pixels, crop[0] // 4, crop[1] // 4)
    assert maps.shape == (17, crop[0] // 4, crop[1] // 4) and maps.dtype == np.float32
    inside = keypoints[:, :2] @ affine[:, :2].T + affine[:, 2]  # (17, 2) crop pixels
    errors = []
    for k in np.flatnonzero(keypoints[:, 2] > 0):
        row, column = np.unravel_index(maps[k].argmax(), maps[k].shape)
        errors.append(np.hypot(4 * column + 1.5 - inside[k, 0], 4 * row + 1.5 - inside[k, 1]))
    # within a tenth of the crop height for most keypoints (measured median: a few pixels)
    assert np.median(errors) < crop[0] / 10


class RampNetwork:
    """A stand-in network whose map value is the teacher column (or row) index of each cell."""

    def __init__(self, along_rows: bool) -> None:
        self.along_rows = along_rows

    def heatmaps(self, crops: np.ndarray, flip: bool = True) -> np.ndarray:
        assert crops.shape[1:] == (256, 192, 3)  # every crop reaches the teacher at its size
        rows, columns = np.meshgrid(np.arange(64.0), np.arange(48.0), indexing="ij")
        ramp = rows if self.along_rows else columns
        return np.broadcast_to(ramp, (len(crops), 17, 64, 48)).astype(np.float32)


@pytest.mark.parametrize("along_rows", [False, True])
def test_teacher_maps_are_resampled_to_the_students_cell_centres(along_rows: bool) -> None:
    teacher = CropTeacher("unused.onnx")
    teacher._teacher = RampNetwork(along_rows)  # type: ignore[assignment]
    same = teacher.heatmaps(np.zeros((256, 192, 3), np.uint8), 64, 48)
    # student cell j sits at crop pixel 4j + 1.5, the teacher's at 4j: 0.375 cells further
    line = same[0, :, 5] if along_rows else same[0, 5, :]
    assert np.allclose(line[:-1], np.arange(len(line) - 1) + 0.375, atol=1e-5)
    half = teacher.heatmaps(np.zeros((128, 96, 3), np.uint8), 32, 24)
    # half-size crops: pixel 4j + 1.5 of 128 rows is pixel 8j + 3.5 of 256, cell 2j + 0.875
    line = half[0, :, 5] if along_rows else half[0, 5, :]
    assert np.allclose(line[:-1], 2 * np.arange(len(line) - 1) + 0.875, atol=1e-5)


@needs_teacher
def test_a_tiny_refiner_distils_the_teacher_in_a_data_worker(tmp_path: Path) -> None:
    annotations, images = write_people_set(tmp_path / "coco", count=2)
    config = TrainConfig(
        annotations=str(annotations), images=str(images), out=str(tmp_path / "run"),
        refiner=replace(TINY, crop_height=32, crop_width=32, instances=1), pretrained=False,
        batch_size=3, workers=1, max_steps=2, log_every_steps=1, device="cpu",
        optimizer="adamw", teacher=str(TEACHER),
        augment=AugmentConfig(occlusion_probability=0.5, blur_probability=0.5),
    )  # fmt: skip
    checkpoint = train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if r["event"] == "step"]
    assert checkpoint.is_file() and len(losses) == 2 and all(np.isfinite(losses))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["teacher"] == str(TEACHER)


def test_train_options_carry_the_teacher_and_heavy_augmentation(tmp_path: Path) -> None:
    config = train_config(annotations=[tmp_path / "boxes.json"], images_dir=[tmp_path],
                          teacher=TEACHER, occlusion=0.3, blur=0.2)  # fmt: skip
    assert config.teacher == str(TEACHER)
    assert (config.augment.occlusion_probability, config.augment.blur_probability) == (0.3, 0.2)
    assert train_config(annotations=[tmp_path], images_dir=[tmp_path]).teacher is None
