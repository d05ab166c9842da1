"""Pseudo-labelling: fusion of teacher passes, flips, PAF grouping, TinyPose's crops and decoding,
COCO output and resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from posecli.config import LabelConfig
from posecli.errors import (
    InputError,
    OutputError,
    PoseCliError,
    ResumableInterruptError,
    UsageError,
)
from posecli.io.sources import load_image
from posecli.pose import keypoint_similarity
from posecli.spec import COCO_FLIP_ORDER, COCO_KEYPOINTS, KEYPOINTS
from posecli.train.label.fusion import (
    Detection,
    PersonLabel,
    box_iou,
    detection_oks,
    fuse_passes,
    oks_nms,
    select_labels,
)
from posecli.train.label.openpose import OPENPOSE_LIMBS, OPENPOSE_PAF_OFFSET, group_openpose
from posecli.train.label.teachers import MoveNet, Teachers, Thunder, open_session, square_crop
from posecli.train.label.tinypose import (
    PICODET_FILE,
    TINYPOSE_FILE,
    TINYPOSE_INPUT,
    PicoDet,
    TinyPose,
    box_nms,
    crop_affine,
    dark_decode,
    grid_heatmaps,
    merge_boxes,
    unflip_heatmaps,
)
from posecli.train.label.writer import (
    annotation_record,
    load_person_boxes,
    partial_path,
    run_labelling,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TEACHERS_DIR = SHARED / "teachers"
EVAL_SET = SHARED / "data" / "eval" / "mmpose-coco"

#: Fusion thresholds the tests reason with (independent of retuned defaults).
CONFIG = LabelConfig(
    teacher="both",
    keep_keypoint=0.25,
    confident_person=0.2,
    min_keypoints=5,
    ignore_person=0.08,
    agree_similarity=0.5,
    same_person_oks=0.4,
)

#: A standing person facing the camera in a unit box 0.5 wide, 1 tall, COCO order (x, y).
TEMPLATE = np.array(
    [[0.25, 0.10], [0.28, 0.08], [0.22, 0.08], [0.31, 0.09], [0.19, 0.09],
     [0.38, 0.22], [0.12, 0.22], [0.42, 0.38], [0.08, 0.38], [0.44, 0.52], [0.06, 0.52],
     [0.33, 0.55], [0.17, 0.55], [0.34, 0.75], [0.16, 0.75], [0.35, 0.95], [0.15, 0.95]]
)  # fmt: skip


def make_person(x0: float, y0: float, height: float, score: float, keypoint_score: float = 0.8):
    """A synthetic Detection: TEMPLATE scaled to ``height`` px at (x0, y0)."""
    xy = TEMPLATE * height + [x0, y0]
    keypoints = np.column_stack([xy, np.full(17, keypoint_score)])
    box = np.array([x0, y0, x0 + 0.5 * height, y0 + height])
    return Detection(keypoints, box, score)


def shifted(person: Detection, dx: float, keypoint_score: float, score: float) -> Detection:
    keypoints = person.keypoints.copy()
    keypoints[:, 0] += dx
    keypoints[:, 2] = keypoint_score
    return Detection(keypoints, person.box + [dx, 0, dx, 0], score)


# --------------------------------------------------------------------------- fusion


def test_agreeing_passes_fuse_to_the_confidence_weighted_average():
    first = make_person(100, 50, 200, score=0.8, keypoint_score=0.8)
    second = shifted(first, dx=2.0, keypoint_score=0.4, score=0.6)
    fused = fuse_passes([[first], [second]], CONFIG)
    assert len(fused) == 1
    person = fused[0]
    assert person.sources == 2
    assert person.score == pytest.approx(0.7)
    expected_x = (0.8 * first.keypoints[:, 0] + 0.4 * second.keypoints[:, 0]) / 1.2
    np.testing.assert_allclose(person.keypoints[:, 0], expected_x)
    np.testing.assert_allclose(person.keypoints[:, 1], first.keypoints[:, 1])
    np.testing.assert_allclose(person.keypoints[:, 2], 0.6)  # (0.8 + 0.4) / 2 passes


def test_a_pass_that_missed_the_person_lowers_its_confidence():
    first = make_person(100, 50, 200, score=0.8)
    fused = fuse_passes([[first], [], [], []], CONFIG)
    assert fused[0].score == pytest.approx(0.2)
    np.testing.assert_allclose(fused[0].keypoints[:, 2], 0.2)


def test_disagreeing_keypoint_is_dropped_and_the_others_kept():
    wrist = COCO_KEYPOINTS.index("left_wrist")
    first = make_person(100, 50, 200, score=0.8, keypoint_score=0.8)
    second = shifted(first, dx=0.0, keypoint_score=0.4, score=0.7)
    second.keypoints[wrist, :2] += [80.0, 40.0]
    person = fuse_passes([[first], [second]], CONFIG)[0]
    assert person.keypoints[wrist, 2] == pytest.approx((0.8 - 0.4) / 2)
    np.testing.assert_allclose(person.keypoints[wrist, :2], first.keypoints[wrist, :2])
    labels = select_labels([person], np.zeros((0, 4)), (480, 640), CONFIG)
    assert len(labels) == 1 and not labels[0].ignore
    visible = labels[0].keypoints[:, 2]
    assert visible[wrist] == 0 and tuple(labels[0].keypoints[wrist, :2]) == (0.0, 0.0)
    assert (np.delete(visible, wrist) == 2).all()
    assert labels[0].keypoint_scores[wrist] == pytest.approx(0.2)


def test_two_people_in_one_pass_stay_apart():
    left, right = make_person(50, 50, 200, 0.8), make_person(400, 60, 200, 0.7)
    fused = fuse_passes([[left, right], [right, left]], CONFIG)
    assert len(fused) == 2 and all(person.sources == 2 for person in fused)
    assert detection_oks(left, right, CONFIG) < CONFIG.same_person_oks


def test_lone_low_score_person_becomes_an_ignore_region():
    sure = make_person(50, 50, 200, score=0.8)
    doubtful = make_person(400, 100, 150, score=0.3)
    fused = fuse_passes([[sure, doubtful], [sure]], CONFIG)
    labels = select_labels(fused, np.zeros((0, 4)), (480, 640), CONFIG)
    assert [label.ignore for label in labels] == [False, True]
    region = labels[1]
    np.testing.assert_allclose(region.box, doubtful.box)
    record = annotation_record(region, CONFIG.area_per_box)
    x0, y0, x1, y1 = doubtful.box
    assert record["iscrowd"] == 1 and record["num_keypoints"] == 0
    assert record["segmentation"] == [[x0, y0, x1, y0, x1, y1, x0, y1]]
    assert record["area"] == pytest.approx((x1 - x0) * (y1 - y0))


def test_noise_is_dropped_and_duplicates_of_labelled_people_are_not_ignored():
    sure = make_person(50, 50, 200, score=0.8)
    noise = make_person(400, 100, 150, score=0.1)
    echo = Detection(sure.keypoints * [1, 1, 0.1], sure.box + 5, 0.5)  # low keypoint scores
    labels = select_labels(
        [sure, echo, Detection(noise.keypoints, noise.box, 0.05)], np.zeros((0, 4)), (480, 640),
        CONFIG,
    )  # fmt: skip
    assert len(labels) == 1 and not labels[0].ignore


def test_hand_drawn_boxes_without_a_labelled_person_become_ignore_regions():
    sure = make_person(50, 50, 200, score=0.8)
    matching = sure.box + [-3, -5, 4, 6]
    elsewhere = np.array([400.0, 300.0, 440.0, 400.0])
    labels = select_labels([sure], np.stack([matching, elsewhere]), (480, 640), CONFIG)
    assert [label.ignore for label in labels] == [False, True]
    np.testing.assert_allclose(labels[1].box, elsewhere)


def test_people_on_trusted_boxes_stay_people_with_the_keypoints_they_have():
    sure = make_person(50, 50, 200, score=0.8)
    unsure = make_person(400, 100, 60, score=0.3, keypoint_score=0.1)
    keypoints = unsure.keypoints.copy()
    keypoints[:2, 2] = 0.9  # two confident keypoints: fewer than min_keypoints
    small = Detection(keypoints, unsure.box, 0.3, box_score=0.9)
    faint = Detection(unsure.keypoints, unsure.box + [100, 0, 100, 0], 0.3, box_score=0.2)
    echo = Detection(sure.keypoints * [1, 1, 0.1], sure.box + 5, 0.5, box_score=1.0)
    config = replace(CONFIG, box_person_score=0.5)
    labels = select_labels([sure, small, faint, echo], np.zeros((0, 4)), (480, 640), config)
    assert [label.ignore for label in labels] == [False, False, True]
    record = annotation_record(labels[1], config.area_per_box)
    assert record["iscrowd"] == 0 and record["num_keypoints"] == 2
    np.testing.assert_allclose(labels[1].keypoints[:2, :2], keypoints[:2, :2])
    np.testing.assert_allclose(labels[2].box, faint.box)  # known as nothing: ignore region
    without = select_labels(
        [sure, small], np.zeros((0, 4)), (480, 640), replace(config, box_person_score=1.01)
    )
    assert [label.ignore for label in without] == [False, True]


# --------------------------------------------------------------------------- flips


def test_coco_flip_order_swaps_left_and_right():
    for index, mirror in enumerate(COCO_FLIP_ORDER):
        name, mirrored = COCO_KEYPOINTS[index], COCO_KEYPOINTS[mirror]
        if name.startswith("left_"):
            assert mirrored == "right_" + name[5:]
        elif name.startswith("right_"):
            assert mirrored == "left_" + name[6:]
        else:
            assert mirrored == name
    assert [COCO_FLIP_ORDER[m] for m in COCO_FLIP_ORDER] == list(range(17))


class BrightSpotSession:
    """A stand-in MoveNet session: one person whose left wrist is the brightest input pixel."""

    def get_inputs(self):
        class Input:
            name = "input"

        return [Input()]

    def run(self, outputs, feeds):
        batch = feeds["input"]  # (1, H, W, 3) int32
        height, width = batch.shape[1:3]
        row, column = np.unravel_index(np.argmax(batch[0].sum(axis=-1)), (height, width))
        people = np.zeros((1, 6, 56), dtype=np.float32)
        keypoints = np.tile([0.5, 0.5, 0.1], (17, 1))  # [y, x, score] normalised
        keypoints[COCO_KEYPOINTS.index("left_wrist")] = [
            (row + 0.5) / height, (column + 0.5) / width, 0.9,
        ]  # fmt: skip
        people[0, 0, :51] = keypoints.reshape(-1)
        people[0, 0, 51:55] = [0.25, 0.125, 0.75, 0.5]  # ymin, xmin, ymax, xmax
        people[0, 0, 55] = 0.9
        return [people]


def test_movenet_flip_pass_is_mirrored_back_with_left_and_right_swapped():
    image = np.zeros((64, 96, 3), dtype=np.uint8)
    image[30, 20] = 255
    movenet = MoveNet(BrightSpotSession(), CONFIG)
    (plain,) = movenet.detect(image, long_side=96)
    (mirrored,) = movenet.detect(image, long_side=96, flip=True)
    left, right = COCO_KEYPOINTS.index("left_wrist"), COCO_KEYPOINTS.index("right_wrist")
    np.testing.assert_allclose(plain.keypoints[left], [20, 30, 0.9], atol=1e-5)
    np.testing.assert_allclose(mirrored.keypoints[right], [20, 30, 0.9], atol=1e-5)
    assert mirrored.keypoints[left, 2] == pytest.approx(0.1)
    # box x from 0.125·96 to 0.5·96 (pixel edges) in the mirror image → 48…84 here
    np.testing.assert_allclose(plain.box, [11.5, 15.5, 47.5, 47.5], atol=1e-5)
    np.testing.assert_allclose(mirrored.box, [47.5, 15.5, 83.5, 47.5], atol=1e-5)


def test_movenet_letterbox_maps_back_to_image_pixels():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[70:72, 150:152] = 255  # a 2×2 spot centred on (150.5, 70.5)
    (person,) = MoveNet(BrightSpotSession(), CONFIG).detect(image, long_side=128)
    wrist = person.keypoints[COCO_KEYPOINTS.index("left_wrist")]
    assert abs(wrist[0] - 150.5) <= 1.0 and abs(wrist[1] - 70.5) <= 1.0


class BrightSpotThunder:
    """A stand-in Thunder session: the left wrist at the brightest crop pixel, score 0.9; every
    other keypoint at the crop centre with score 0.2. Records the crops it was given."""

    def __init__(self) -> None:
        self.crops: list[np.ndarray] = []

    def get_inputs(self):
        class Input:
            name = "input:0"

        return [Input()]

    def run(self, outputs, feeds):
        crop = feeds["input:0"][0]  # (256, 256, 3) int32
        self.crops.append(crop)
        row, column = np.unravel_index(np.argmax(crop.sum(axis=-1)), crop.shape[:2])
        keypoints = np.tile([0.5, 0.5, 0.2], (17, 1))  # [y, x, score] normalised to the crop
        wrist = [(row + 0.5) / 256, (column + 0.5) / 256, 0.9]
        keypoints[COCO_KEYPOINTS.index("left_wrist")] = wrist
        return [keypoints[None, None].astype(np.float32)]


def test_square_crop_centres_the_box_at_its_longer_side_times_the_scale():
    affine = square_crop(np.array([10.0, 20.0, 50.0, 100.0]), 1.25, 256)  # 40 × 80 box
    centre = affine @ [30.0, 60.0, 1.0]
    np.testing.assert_allclose(centre, [127.5, 127.5])
    assert affine[0, 0] == affine[1, 1] == pytest.approx(256 / 100)


def test_thunder_maps_its_crop_back_to_image_pixels_and_unmirrors_the_flip():
    image = np.zeros((120, 200, 3), dtype=np.uint8)
    image[70, 150] = 255
    session = BrightSpotThunder()
    thunder = Thunder(session)
    box = np.array([120.0, 40.0, 170.0, 110.0])
    plain = thunder.detect(image, box, 1.1)
    mirrored = thunder.detect(image, box, 1.1, flip=True)
    left, right = COCO_KEYPOINTS.index("left_wrist"), COCO_KEYPOINTS.index("right_wrist")
    # one image pixel spans 256 / 77 ≈ 3.3 crop pixels: the spot's maximum is within that
    np.testing.assert_allclose(plain[left, :2], [150, 70], atol=0.5)
    assert plain[left, 2] == pytest.approx(0.9)
    np.testing.assert_allclose(mirrored[right, :2], [150, 70], atol=0.5)
    assert mirrored[left, 2] == pytest.approx(0.2)
    assert session.crops[0].shape == (256, 256, 3) and session.crops[0].dtype == np.int32


def test_oks_nms_keeps_the_best_of_duplicates_and_people_apart():
    person = make_person(10, 10, 100, score=0.6)
    duplicate = shifted(person, 2.0, 0.8, score=0.9)
    other = make_person(200, 10, 100, score=0.5)
    kept = oks_nms([person, duplicate, other], 0.5, CONFIG)
    assert kept == [duplicate, other]


# --------------------------------------------------------------------------- OpenPose grouping


def openpose_maps(people_cells: list[np.ndarray], height: int = 46, width: int = 54) -> np.ndarray:
    """Synthetic OpenPose output (h, w, 57): Gaussian heatmaps (σ = 1 cell, peak 0.9) and unit
    part affinity fields within one cell of every limb, for people given as (18, 2) cells."""
    maps = np.zeros((height, width, 57), dtype=np.float32)
    rows, columns = np.mgrid[0:height, 0:width]
    grid = np.stack([columns, rows], axis=-1).astype(np.float64)  # (h, w, 2) [x, y]
    for cells in people_cells:
        for keypoint, (x, y) in enumerate(cells):
            blob = 0.9 * np.exp(-((columns - x) ** 2 + (rows - y) ** 2) / 2.0)
            maps[:, :, keypoint] = np.maximum(maps[:, :, keypoint], blob)
        for start, end, fx, fy in OPENPOSE_LIMBS:
            a, b = cells[start], cells[end]
            direction = (b - a) / np.linalg.norm(b - a)
            t = np.clip(((grid - a) @ direction) / np.linalg.norm(b - a), 0, 1)
            distance = np.linalg.norm(grid - (a + t[..., None] * (b - a)), axis=-1)
            near = distance <= 1.0
            maps[near, OPENPOSE_PAF_OFFSET + fx] = direction[0]
            maps[near, OPENPOSE_PAF_OFFSET + fy] = direction[1]
    return maps


#: A person in CMU-18 order (= spec.KEYPOINTS), in stride-8 cells.
CMU_PERSON = np.array(
    [[10, 6], [10, 9], [7, 9], [6, 14], [6, 19], [13, 9], [14, 14], [14, 19], [8, 20],
     [8, 27], [8, 34], [12, 20], [12, 27], [12, 34], [9, 4], [11, 4], [7, 5], [13, 5]],
    dtype=np.float64,
)  # fmt: skip


def test_paf_grouping_recovers_two_people():
    assert len(KEYPOINTS) == CMU_PERSON.shape[0] == 18
    cells = [CMU_PERSON, CMU_PERSON + [24, 3]]
    people, scores = group_openpose(openpose_maps(cells), CONFIG)
    assert len(people) == 2
    found = sorted(people, key=lambda person: person[0, 0])
    for person, expected_cells in zip(found, cells, strict=True):
        assert (person[:, 2] > 0.8).all()
        np.testing.assert_allclose(person[:, :2], expected_cells * 8 + 3.5, atol=2.0)
    assert all(0.8 < score < 1.0 for score in scores)


def test_paf_grouping_ignores_peaks_without_fields():
    maps = openpose_maps([CMU_PERSON])
    maps[:, :, OPENPOSE_PAF_OFFSET:] = 0.0
    people, _ = group_openpose(maps, CONFIG)
    assert people == []


# --------------------------------------------------------------------------- COCO output, resume


class StopLabellingError(Exception):
    pass


def write_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.png"
        cv2.imwrite(str(path), np.full((48 + index, 64, 3), 40 * index, dtype=np.uint8))
        paths.append(path)
    return paths


def fake_labeller(calls: list[str]):
    """Labels image n with one person of n + 5 kept keypoints and one ignore region."""

    def label_image(path: Path, image: np.ndarray) -> list[PersonLabel]:
        calls.append(path.name)
        index = int(path.stem)
        keypoints = np.zeros((17, 3))
        keypoints[: index + 5] = np.column_stack(
            [np.arange(index + 5) + 3.25, np.full(index + 5, 7.5 + index), np.full(index + 5, 2)]
        )
        scores = np.linspace(0.3, 0.9, 17)
        person = PersonLabel(keypoints, scores, np.array([2.0, 3.0, 30.0, 40.5]), 0.77, False)
        region = PersonLabel(np.zeros((17, 3)), np.zeros(17), np.array([40, 5, 60, 25.0]), 0, True)
        return [person, region]

    return label_image


def test_output_is_valid_coco_with_ignore_regions(tmp_path):
    images = write_images(tmp_path / "images", 3)
    out = run_labelling(images, fake_labeller([]), tmp_path / "labels.json", CONFIG)
    coco = COCO(str(out))
    assert sorted(coco.getImgIds()) == [1, 2, 3]
    assert coco.loadImgs(2)[0] == {"id": 2, "file_name": "001.png", "height": 49, "width": 64}
    people = coco.loadAnns(coco.getAnnIds(iscrowd=False))
    regions = coco.loadAnns(coco.getAnnIds(iscrowd=True))
    assert len(people) == len(regions) == 3
    for annotation in people:
        assert len(annotation["keypoints"]) == 51 and len(annotation["keypoint_scores"]) == 17
        visible = np.array(annotation["keypoints"]).reshape(17, 3)[:, 2]
        assert annotation["num_keypoints"] == int((visible > 0).sum())
    assert [a["num_keypoints"] for a in people] == [5, 6, 7]
    mask = coco.annToMask(regions[0])
    assert mask[5:25, 40:60].all() and mask.sum() == pytest.approx(regions[0]["area"], rel=0.15)
    assert not partial_path(out).exists()
    assert out.stat().st_mode & 0o777 == 0o644
    categories = coco.loadCats(1)[0]
    assert categories["keypoints"] == list(COCO_KEYPOINTS) and len(categories["skeleton"]) == 19


def test_interrupted_run_resumes_to_the_same_file(tmp_path):
    images = write_images(tmp_path / "images", 5)
    config = replace(CONFIG, chunk_size=2)
    full = run_labelling(images, fake_labeller([]), tmp_path / "full.json", config)

    out = tmp_path / "resumed.json"

    def stop_at_third(done: int, total: int) -> None:
        if done == 3:
            raise StopLabellingError

    with pytest.raises(StopLabellingError):
        run_labelling(images, fake_labeller([]), out, config, stop_at_third)
    assert not out.exists()
    saved = json.loads(partial_path(out).read_text())
    assert [image["file_name"] for image in saved["images"]] == ["000.png", "001.png"]

    calls: list[str] = []
    progress: list[tuple[int, int]] = []
    run_labelling(images, fake_labeller(calls), out, config, lambda *done: progress.append(done))
    assert calls == ["002.png", "003.png", "004.png"]
    assert progress == [(3, 5), (4, 5), (5, 5)]
    assert out.read_bytes() == full.read_bytes()
    assert not partial_path(out).exists()


def test_ctrl_c_saves_every_finished_image_for_the_resume(tmp_path):
    images = write_images(tmp_path / "images", 5)
    config = replace(CONFIG, chunk_size=4)
    out = tmp_path / "labels.json"

    def ctrl_c_at_third(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(ResumableInterruptError, match="after 3 of 5 images.*same command"):
        run_labelling(images, fake_labeller([]), out, config, ctrl_c_at_third)
    saved = json.loads(partial_path(out).read_text())  # mid-chunk: all three finished images
    assert [image["file_name"] for image in saved["images"]] == ["000.png", "001.png", "002.png"]
    calls: list[str] = []
    run_labelling(images, fake_labeller(calls), out, config)
    assert calls == ["003.png", "004.png"]


def test_resume_refuses_a_partial_file_made_with_other_settings(tmp_path):
    images = write_images(tmp_path / "images", 3)
    out = tmp_path / "labels.json"
    config = replace(CONFIG, chunk_size=1)

    def stop(done: int, total: int) -> None:
        if done == 2:  # the first chunk (one image) is saved by then
            raise StopLabellingError

    with pytest.raises(StopLabellingError):
        run_labelling(images, fake_labeller([]), out, config, stop)
    with pytest.raises(OutputError, match="other label settings"):
        run_labelling(images, fake_labeller([]), out, replace(config, keep_keypoint=0.5))
    # runtime settings (threads, chunk size) may change between runs
    run_labelling(images, fake_labeller([]), out, replace(config, chunk_size=5, threads=2))
    assert out.exists()


def test_person_boxes_are_found_beside_the_image_folder(tmp_path):
    images = write_images(tmp_path / "corpus" / "images", 2)
    listing = {"person_boxes": {"images/001.png": [[10, 20, 30, 40]]}}
    (tmp_path / "corpus" / "person_boxes.json").write_text(json.dumps(listing))
    boxes = load_person_boxes(images)
    assert list(boxes) == [images[1].resolve()]
    np.testing.assert_allclose(boxes[images[1].resolve()], [[10, 20, 40, 60]])


def test_person_boxes_of_several_folders_in_one_run(tmp_path):
    crowds = write_images(tmp_path / "corpus" / "crowds" / "images", 2)
    streets = write_images(tmp_path / "corpus" / "streets" / "images", 2)
    plain = write_images(tmp_path / "corpus" / "plain" / "images", 1)
    for folder, box in (("crowds", [1, 2, 3, 4]), ("streets", [5, 6, 7, 8])):
        listing = {"person_boxes": {"images/000.png": [box]}}
        (tmp_path / "corpus" / folder / "person_boxes.json").write_text(json.dumps(listing))
    boxes = load_person_boxes([*crowds, *streets, *plain])
    assert set(boxes) == {crowds[0].resolve(), streets[0].resolve()}
    np.testing.assert_allclose(boxes[crowds[0].resolve()], [[1, 2, 4, 6]])
    np.testing.assert_allclose(boxes[streets[0].resolve()], [[5, 6, 12, 14]])


def test_unreadable_image_and_bad_settings_fail_clearly(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(broken)
    with pytest.raises(UsageError):
        run_labelling(
            [broken], fake_labeller([]), tmp_path / "x.json", replace(CONFIG, teacher="x")
        )
    with pytest.raises(UsageError):
        run_labelling(
            [broken], fake_labeller([]), tmp_path / "x.json", replace(CONFIG, movenet_sizes=(100,))
        )


def test_missing_onnxruntime_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(PoseCliError, match="onnxruntime"):
        Teachers(tmp_path, CONFIG)


# --------------------------------------------------------------------------- real teachers


def require_teachers() -> None:
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed (pip install 'posecli[train]')")
    if not (TEACHERS_DIR / "movenet-multipose.onnx").is_file():
        pytest.skip(f"teacher models not found in {TEACHERS_DIR}")
    if not (EVAL_SET / "person_keypoints.json").is_file():
        pytest.skip(f"eval set not found in {EVAL_SET}")


def eval_person() -> tuple[dict, np.ndarray]:
    """The one annotated person of an eval image and the image (RGB uint8)."""
    ground_truth = json.loads((EVAL_SET / "person_keypoints.json").read_text())
    image_info = next(i for i in ground_truth["images"] if i["file_name"] == "000000000785.jpg")
    (truth,) = [a for a in ground_truth["annotations"] if a["image_id"] == image_info["id"]]
    return truth, load_image(EVAL_SET / "images" / image_info["file_name"])


def best_oks(people: list[Detection], truth: dict) -> float:
    """The best OKS of ``people`` with the annotation ``truth`` over its annotated keypoints."""
    keypoints = np.array(truth["keypoints"], dtype=np.float64).reshape(17, 3)
    annotated = keypoints[:, 2] > 0
    return max(
        keypoint_similarity(p.keypoints[:, :2], keypoints[:, :2], truth["area"])[annotated].mean()
        for p in people
    )


def test_missing_teacher_file_is_an_input_error(tmp_path):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed (pip install 'posecli[train]')")
    with pytest.raises(InputError, match="teacher model not found"):
        Teachers(tmp_path, CONFIG)


def test_real_teachers_find_the_person_of_an_eval_image():
    require_teachers()
    truth, image = eval_person()
    teachers = Teachers(TEACHERS_DIR, replace(CONFIG, movenet_sizes=(256,), flip=False))
    found = {
        "movenet": teachers.movenet.detect(image, 256),
        "openpose": teachers.openpose.detect(image),
    }
    for name, detections in found.items():
        assert detections, f"{name} found nobody"
        best = best_oks(detections, truth)
        assert best > 0.7, f"{name} OKS {best:.2f}"


def test_top_down_teacher_finds_the_annotated_person_on_its_box_and_on_multipose_boxes():
    require_teachers()
    if not (TEACHERS_DIR / "movenet-thunder.onnx").is_file():
        pytest.skip(f"MoveNet Thunder not found in {TEACHERS_DIR}")
    truth, image = eval_person()
    teachers = Teachers(TEACHERS_DIR, LabelConfig(teacher="thunder"))
    x, y, width, height = truth["bbox"]
    for boxes in (np.array([[x, y, x + width, y + height]]), None):
        people = teachers.people(image, boxes)
        assert people, "Thunder found nobody"
        best = best_oks(people, truth)
        assert best > 0.8, f"OKS {best:.2f} with boxes {boxes}"


# --------------------------------------------------------------------------- TinyPose


class SpotTinyPose:
    """A stand-in TinyPose session: a Gaussian (σ 1.5 cells, peak 0.9) in the left-wrist channel
    at the brightest crop pixel / 4 (the trained heatmap frame), every other channel zero."""

    def get_inputs(self):
        class Input:
            name = "image"

        return [Input()]

    def run(self, outputs, feeds):
        crop = feeds["image"][0]  # (3, 256, 192) ImageNet-normalised
        row, column = np.unravel_index(np.argmax(crop.sum(axis=0)), crop.shape[1:])
        rows, columns = np.mgrid[0:64, 0:48]
        maps = np.zeros((1, 17, 64, 48), dtype=np.float32)
        squared = (columns - column / 4) ** 2 + (rows - row / 4) ** 2
        maps[0, COCO_KEYPOINTS.index("left_wrist")] = 0.9 * np.exp(-squared / (2 * 1.5**2))
        return [maps]


def test_crop_is_the_box_grown_to_three_by_four_and_scaled():
    tall = crop_affine(np.array([10.0, 20.0, 50.0, 100.0]), 1.25, TINYPOSE_INPUT)  # 40 × 80
    np.testing.assert_allclose(tall @ [30.0, 60.0, 1.0], [95.5, 127.5])  # centre on centre
    assert tall[0, 0] == tall[1, 1] == pytest.approx(256 / (80 * 1.25))
    # the crop's outer pixel edges show the 3:4 box × 1.25: 75 × 100 around the centre
    np.testing.assert_allclose(tall @ [30 - 37.5, 60 - 50, 1.0], [-0.5, -0.5])
    np.testing.assert_allclose(tall @ [30 + 37.5, 60 + 50, 1.0], [191.5, 255.5])
    wide = crop_affine(np.array([0.0, 0.0, 120.0, 30.0]), 1.25, TINYPOSE_INPUT)  # 120 × 30
    assert wide[0, 0] == pytest.approx(192 / (120 * 1.25))


def test_tinypose_maps_its_crop_back_to_image_pixels():
    image = np.zeros((120, 200, 3), dtype=np.uint8)
    image[70, 150] = 255
    found = TinyPose(SpotTinyPose()).keypoints(image, np.array([[120.0, 40, 170, 110]]), flip=False)
    assert found.shape == (1, 17, 3)
    wrist = found[0, COCO_KEYPOINTS.index("left_wrist")]
    # one image pixel spans 256 / 87.5 ≈ 2.9 crop pixels: the spot's maximum is within that
    np.testing.assert_allclose(wrist[:2], [150, 70], atol=0.5)
    assert 0.8 <= wrist[2] <= 0.9  # the map's maximum: its peak sampled ≤ half a cell off
    assert np.delete(found[0, :, 2], COCO_KEYPOINTS.index("left_wrist")).max() == 0
    assert TinyPose(SpotTinyPose()).keypoints(image, np.zeros((0, 4))).shape == (0, 17, 3)


def test_flip_test_swaps_left_and_right_and_mirrors_back_one_cell_over():
    maps = np.zeros((1, 17, 64, 48), dtype=np.float32)
    left, right = COCO_KEYPOINTS.index("left_wrist"), COCO_KEYPOINTS.index("right_wrist")
    maps[0, left, 10, 5] = 1.0
    maps[0, COCO_KEYPOINTS.index("nose"), 3, 47] = 0.5  # mirrored to column 0, which keeps it
    back = unflip_heatmaps(maps)
    assert back[0, right, 10, 48 - 5] == 1.0 and back[0, right].sum() == 1.0
    assert back[0, left].sum() == 0
    assert back[0, COCO_KEYPOINTS.index("nose"), 3, :2].tolist() == [0.5, 0.5]

    crops = np.zeros((2, 256, 192, 3), dtype=np.uint8)
    crops[0, 60, 100] = crops[1, 200, 20] = 255
    tinypose = TinyPose(SpotTinyPose())
    plain = tinypose.heatmaps(crops, flip=False)
    tested = tinypose.heatmaps(crops)
    assert tested.shape == (2, 17, 64, 48) and tested.dtype == np.float32
    mirrored = tinypose.heatmaps(crops[:, :, ::-1], flip=False)
    np.testing.assert_allclose(tested, (plain + unflip_heatmaps(mirrored)) / 2, atol=1e-6)
    # the mirrored pass's left wrist is the right wrist here, within a cell of the spot
    row, column = np.unravel_index(tested[0, right].argmax(), (64, 48))
    assert (row, column) == (15, 25)
    with pytest.raises(ValueError, match="256, 192"):
        tinypose.heatmaps(crops[:, :128])


def test_dark_decoding_finds_the_sub_cell_peak():
    rows, columns = np.mgrid[0:64, 0:48]
    centres = [(20.3, 30.6), (7.8, 50.25), (0.0, 12.0)]  # (x, y); the last on the border
    maps = np.stack(
        [np.exp(-((columns - x) ** 2 + (rows - y) ** 2) / (2 * 2.0**2)) for x, y in centres]
    )[None].astype(np.float32)  # (1, 3, 64, 48)
    decoded = dark_decode(maps)[0]  # (3, 3) [column, row, score]
    np.testing.assert_allclose(decoded[:2, :2], [centres[0], centres[1]], atol=0.05)
    np.testing.assert_allclose(decoded[2], [0.0, 12.0, 1.0])  # no Taylor step at the border
    np.testing.assert_allclose(decoded[:, 2], maps[0].reshape(3, -1).max(axis=1), rtol=1e-6)


def test_heatmaps_resampled_to_posecli_cells_keep_the_peak_in_place():
    rows, columns = np.mgrid[0:64, 0:48]
    squared = (columns - 100 / 4) ** 2 + (rows - 60 / 4) ** 2  # crop pixel (100, 60)
    maps = np.zeros((1, 17, 64, 48), dtype=np.float32)
    maps[0, 0] = np.exp(-squared / (2 * 2.0**2))
    same = grid_heatmaps(maps, (256, 192), 64, 48)
    assert same.shape == (1, 17, 64, 48) and same.dtype == np.float32
    # posecli's cell j is centred on crop pixel 4j + 1.5
    np.testing.assert_allclose(dark_decode(same)[0, 0, :2] * 4 + 1.5, [100, 60], atol=0.15)
    half = grid_heatmaps(maps, (128, 96), 32, 24)  # a 128×96 crop resized up to 256×192
    expected = (np.array([100, 60]) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(dark_decode(half)[0, 0, :2] * 4 + 1.5, expected, atol=0.15)


def test_detected_boxes_join_the_hand_drawn_ones_without_duplicates():
    hand = np.array([[0.0, 0.0, 10.0, 20.0]])
    # apart, the same person, apart, inside it (its upper body), half inside
    detected = np.array(
        [[50.0, 50, 60, 70], [0.5, 0, 10.5, 21], [100, 0, 120, 40], [1, 1, 9, 9], [5, 0, 15, 8]]
    )
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.6])
    boxes, box_scores = merge_boxes(hand, detected, scores, 0.5, 0.7)
    np.testing.assert_allclose(
        boxes, [[0, 0, 10, 20], [50, 50, 60, 70], [100, 0, 120, 40], [5, 0, 15, 8]]
    )
    np.testing.assert_allclose(box_scores, [1.0, 0.9, 0.3, 0.6])
    boxes, box_scores = merge_boxes(np.zeros((0, 4)), detected, scores, 0.5, 0.7)
    assert len(boxes) == 5
    overlapping = np.array([[0.0, 0, 10, 20], [1.0, 0, 11, 20], [30.0, 0, 40, 20]])
    assert box_nms(overlapping, np.array([0.5, 0.9, 0.4]), 0.6).tolist() == [1, 2]


def require_tinypose() -> None:
    require_teachers()
    for name in (TINYPOSE_FILE, PICODET_FILE):
        if not (TEACHERS_DIR / name).is_file():
            pytest.skip(f"{name} not found in {TEACHERS_DIR}")


def test_tinypose_and_picodet_find_the_annotated_person():
    require_tinypose()
    truth, image = eval_person()
    x, y, width, height = truth["bbox"]
    annotated = np.array([[x, y, x + width, y + height]])
    tinypose = TinyPose(open_session(TEACHERS_DIR / TINYPOSE_FILE))
    found = tinypose.keypoints(image, annotated)[0]
    assert best_oks([Detection(found, annotated[0], 1.0)], truth) > 0.85
    boxes, scores = PicoDet(open_session(TEACHERS_DIR / PICODET_FILE)).detect(image, 0.2, 0.6)
    assert len(boxes) and box_iou(boxes[:1], annotated)[0, 0] > 0.7 and scores[0] > 0.5
    people = Teachers(TEACHERS_DIR, LabelConfig(teacher="tinypose")).people(image, None)
    assert people[0].box_score == pytest.approx(scores[0]) and best_oks(people, truth) > 0.85


def test_label_command_takes_the_tinypose_teacher(tmp_path, capsys):
    require_tinypose()
    from posecli.cli import run

    image = EVAL_SET / "images" / "000000000785.jpg"
    out = tmp_path / "labels.json"
    command = ["label", "--images", str(image), "--out", str(out), "--teachers", str(TEACHERS_DIR)]
    assert run([*command, "--teacher", "tinypose", "--quiet"]) == 0
    labels = json.loads(out.read_text())
    assert labels["info"]["label_settings"]["teacher"] == "tinypose"
    assert [a["num_keypoints"] for a in labels["annotations"] if not a["iscrowd"]][0] >= 15


def test_label_command_refuses_an_unknown_teacher_before_loading_any(tmp_path, capsys):
    from posecli.cli import run

    (image,) = write_images(tmp_path / "images", 1)
    out = tmp_path / "labels.json"
    command = ["label", "--images", str(image), "--out", str(out), "--teachers", str(tmp_path)]
    assert run([*command, "--teacher", "tinypose-xl", "--quiet"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "tinypose-xl" in lines[0] and "tinypose" in lines[0]
    assert run([*command, "--threads", "0", "--quiet"]) == 2
    assert not out.exists() and not partial_path(out).exists()
