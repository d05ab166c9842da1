"""COCO OKS AP through pycocotools: perfect results score 1, errors cost, bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from posecli.errors import InputError
from posecli.evaluate import (
    BOX_SUMMARY_KEYS,
    SUMMARY_KEYS,
    coco_box_ap,
    coco_keypoint_ap,
    recall_by_height,
)

EVAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def person(x: float, y: float, scale: float) -> list[float]:
    """51 COCO keypoint values ``[x, y, 2] * 17`` of a person of height ≈ 200·scale px."""
    offsets = np.array(
        [[0, 0], [-3, -3], [3, -3], [-7, -1], [7, -1], [-13, 14], [13, 14], [-17, 33], [17, 33],
         [-19, 50], [19, 50], [-8, 54], [8, 54], [-9, 80], [9, 80], [-9, 106], [9, 106]]
    ) * scale * 2  # fmt: skip
    keypoints = np.ones((17, 3)) * 2
    keypoints[:, :2] = offsets + (x, y)
    return keypoints.reshape(-1).tolist()


def annotation(annotation_id: int, image_id: int, keypoints: list[float], area: float) -> dict:
    xs, ys = keypoints[0::3], keypoints[1::3]
    return {
        "id": annotation_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
        "keypoints": keypoints, "num_keypoints": 17, "area": area,
        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
    }  # fmt: skip


@pytest.fixture
def annotations(tmp_path: Path) -> Path:
    """Two images, three people: two large (area 40,000) and one medium (area 4,000)."""
    people = [
        annotation(1, 1, person(100, 50, 1.0), 40000.0),
        annotation(2, 1, person(300, 60, 1.0), 40000.0),
        annotation(3, 2, person(80, 40, 0.3), 4000.0),
    ]
    dataset = {
        "images": [{"id": 1, "width": 400, "height": 300}, {"id": 2, "width": 200, "height": 150}],
        "annotations": people,
        "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}],
    }
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps(dataset))
    return path


def results_from(path: Path) -> list[dict]:
    dataset = json.loads(path.read_text())
    return [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 0.9}
        for a in dataset["annotations"]
        if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0
    ]


def test_perfect_results_score_one(annotations: Path) -> None:
    figures = coco_keypoint_ap(annotations, results_from(annotations))
    assert set(figures) == set(SUMMARY_KEYS)
    assert figures == pytest.approx(dict.fromkeys(SUMMARY_KEYS, 1.0))


def test_person_boxes_score_by_iou_and_malformed_boxes_are_refused(annotations: Path) -> None:
    people = json.loads(annotations.read_text())["annotations"]
    boxes = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.9} for a in people]
    assert coco_box_ap(annotations, boxes) == pytest.approx(
        # no small person; one box per image finds 2 of the 3 (image 1 has two people)
        {**dict.fromkeys(BOX_SUMMARY_KEYS, 1.0), "APS": 0.0, "ARS": 0.0, "AR1": 2 / 3}
    )
    x, y, w, h = boxes[0]["bbox"]
    shifted = [{**boxes[0], "bbox": [x + w, y, w, h]}, *boxes[1:]]  # IoU 0 with its person
    figures = coco_box_ap(annotations, shifted)
    assert figures["AR100"] == pytest.approx(2 / 3, abs=1e-6)
    assert coco_box_ap(annotations, []) == dict.fromkeys(BOX_SUMMARY_KEYS, 0.0)
    with pytest.raises(InputError, match="has 3 box values, expected 4"):
        coco_box_ap(annotations, [{**boxes[0], "bbox": [x, y, w]}])


def test_empty_results_score_zero(annotations: Path) -> None:
    assert coco_keypoint_ap(annotations, []) == dict.fromkeys(SUMMARY_KEYS, 0.0)


def test_a_missing_person_lowers_recall(annotations: Path) -> None:
    figures = coco_keypoint_ap(annotations, results_from(annotations)[:2])
    assert figures["AR"] == pytest.approx(2 / 3, abs=1e-6)
    assert figures["APL"] == pytest.approx(1.0) and figures["APM"] == 0.0


def test_misplaced_keypoints_lower_precision(annotations: Path) -> None:
    results = results_from(annotations)
    keypoints = np.array(results[0]["keypoints"]).reshape(17, 3)
    keypoints[:, :2] += 12  # ~0.6 OKS for a 40,000 px² person
    results[0] = dict(results[0], keypoints=keypoints.reshape(-1).tolist())
    figures = coco_keypoint_ap(annotations, results)
    assert figures["AP50"] == pytest.approx(1.0)
    assert figures["AP"] < figures["AP50"] and figures["AP75"] < 1.0


def test_image_ids_restrict_the_evaluation(annotations: Path) -> None:
    only_first = [r for r in results_from(annotations) if r["image_id"] == 1]
    assert coco_keypoint_ap(annotations, only_first, image_ids=[1])["AP"] == pytest.approx(1.0)
    assert coco_keypoint_ap(annotations, only_first)["AR"] == pytest.approx(2 / 3, abs=1e-6)


def test_recall_by_height_counts_people_found_per_band(annotations: Path) -> None:
    results = results_from(annotations)[:2]  # the medium person (≈ 65 px tall) is missed
    keypoints = np.array(results[0]["keypoints"]).reshape(17, 3)
    keypoints[:, :2] += 12  # ~0.6 OKS: found at 0.5, not at 0.75
    results[0] = dict(results[0], keypoints=keypoints.reshape(-1).tolist())
    rows = recall_by_height(annotations, results, lambda height, width: 1.0)
    assert rows == [
        {"low": 40.0, "high": 80.0, "people": 1, "found50": 0.0, "found75": 0.0},
        {"low": 160.0, "high": None, "people": 2, "found50": 1.0, "found75": 0.5},
    ]


def test_recall_by_height_measures_heights_at_the_network_input(annotations: Path) -> None:
    # height 100 at the input: the 218 px people of the 300 px image become 73 px, the 65 px
    # person of the 150 px image 44 px; all three fall in the 40–80 band
    rows = recall_by_height(annotations, [], lambda height, width: 100 / height)
    assert rows == [{"low": 40.0, "high": 80.0, "people": 3, "found50": 0.0, "found75": 0.0}]


def test_evaluation_prints_nothing(annotations: Path, capsys: pytest.CaptureFixture) -> None:
    coco_keypoint_ap(annotations, results_from(annotations))
    assert capsys.readouterr().out == ""


def test_unreadable_annotations_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        coco_keypoint_ap(tmp_path / "missing.json", [])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError):
        coco_keypoint_ap(tmp_path / "broken.json", [])
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError):
        coco_keypoint_ap(tmp_path / "list.json", [])


@pytest.mark.parametrize(
    "result",
    [
        {"image_id": 1, "keypoints": [0.0] * 50, "score": 1.0},
        {"image_id": 1, "score": 1.0},
        {"image_id": 99, "keypoints": [0.0] * 51, "score": 1.0},
    ],
    ids=["short", "no-keypoints", "unknown-image"],
)
def test_malformed_results_raise_input_error(annotations: Path, result: dict) -> None:
    with pytest.raises(InputError):
        coco_keypoint_ap(annotations, [result])


def test_ground_truth_of_the_shared_eval_sets_scores_one() -> None:
    paths = sorted(EVAL_DIR.glob("*/person_keypoints.json")) if EVAL_DIR.is_dir() else []
    if not paths:
        pytest.skip(f"shared eval data not found at {EVAL_DIR}")
    for path in paths:
        assert coco_keypoint_ap(path, results_from(path))["AP"] == pytest.approx(1.0)
