"""Pose encoders (COCO results, JSON-lines tracks, OpenPose); the schemas of tests/schema.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from schema import COCO_RESULT_SCHEMA, OPENPOSE_SCHEMA, TRACK_LINE_SCHEMA, validate_json

from posecli.pose import (
    Frame,
    Pose,
    frame_to_openpose,
    frame_to_track_line,
    keypoint_similarity,
    to_coco_result,
)
from posecli.spec import COCO_KEYPOINTS, KEYPOINTS


def _pose(skeleton, track_id: int | None = 3) -> Pose:
    keypoints = skeleton(200.0, 150.0, 100.0)
    keypoints[COCO_KEYPOINTS.index("left_ear")] = 0.0  # not found
    keypoints[COCO_KEYPOINTS.index("nose"), :2] = (200.123456, 105.987654)
    return Pose(keypoints, score=0.87654321, track_id=track_id)


def test_coco_result(skeleton) -> None:
    pose = _pose(skeleton)
    result = to_coco_result(pose, image_id=42)
    validate_json(result, COCO_RESULT_SCHEMA)
    assert (result["image_id"], result["category_id"], result["score"]) == (42, 1, 0.8765)
    assert result["keypoints"][:3] == [200.12, 105.99, 0.9]
    ear = COCO_KEYPOINTS.index("left_ear")
    assert result["keypoints"][3 * ear : 3 * ear + 3] == [0.0, 0.0, 0.0]
    assert result["bbox"] == pytest.approx(list(pose.bbox), abs=0.01)
    assert "file_name" not in result
    assert to_coco_result(pose, 0, "a.jpg")["file_name"] == "a.jpg"
    json.dumps(result, allow_nan=False)


def test_track_line(skeleton) -> None:
    frame = Frame(index=7, time=0.2333333333, width=640, height=480)
    frame.poses = [_pose(skeleton), _pose(skeleton, track_id=None)]
    line = frame_to_track_line(frame)
    validate_json(line, TRACK_LINE_SCHEMA)
    assert (line["frame"], line["time"], line["width"], line["height"]) == (7, 0.233333, 640, 480)
    first, second = line["people"]
    assert first["id"] == 3 and second["id"] is None
    assert len(first["keypoints"]) == 17 and first["keypoints"][0] == [200.12, 105.99, 0.9]


def test_openpose_uses_coco18_order_with_a_neck(skeleton) -> None:
    pose = _pose(skeleton)
    document = frame_to_openpose(Frame(0, 0.0, 640, 480, poses=[pose]))
    validate_json(document, OPENPOSE_SCHEMA)
    person = document["people"][0]
    assert person["person_id"] == [3]
    points = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    coco = pose.keypoints
    for name in ("nose", "right_shoulder", "left_wrist", "right_ankle", "left_eye"):
        expected = coco[COCO_KEYPOINTS.index(name)]
        assert points[KEYPOINTS.index(name)] == pytest.approx(expected, abs=0.01)
    shoulders = coco[[COCO_KEYPOINTS.index(side + "_shoulder") for side in ("left", "right")]]
    assert points[1, :2] == pytest.approx(shoulders[:, :2].mean(axis=0), abs=0.01)
    assert points[KEYPOINTS.index("left_ear")].tolist() == [0.0, 0.0, 0.0]

    pose.keypoints[COCO_KEYPOINTS.index("left_shoulder")] = 0.0
    one_shoulder = frame_to_openpose(Frame(0, 0.0, 640, 480, poses=[pose]))["people"][0]
    assert one_shoulder["pose_keypoints_2d"][3:6] == [0.0, 0.0, 0.0]
    untracked = frame_to_openpose(Frame(0, 0.0, 1, 1, poses=[Pose(coco, 0.5)]))["people"][0]
    assert untracked["person_id"] == [-1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda line: line.pop("time"), "missing 'time'"),
        (lambda line: line.update(extra=1), "unexpected 'extra'"),
        (lambda line: line.update(frame=True), r"\$\.frame: expected integer"),
        (lambda line: line["people"][0]["keypoints"].pop(), r"keypoints: 16 items"),
        (lambda line: line["people"][0]["bbox"].append(1.0), r"bbox: 5 items"),
        (lambda line: line["people"][0].update(id=0), "below the minimum"),
    ],
)
def test_validator_rejects_broken_lines(skeleton, change, message: str) -> None:
    line = frame_to_track_line(Frame(0, 0.0, 64, 48, poses=[_pose(skeleton)]))
    validate_json(line, TRACK_LINE_SCHEMA)
    change(line)
    with pytest.raises(ValueError, match=message):
        validate_json(line, TRACK_LINE_SCHEMA)


def test_keypoint_similarity_follows_coco_sigmas():
    xy = np.zeros((17, 2))
    moved = xy + [10.0, 0.0]
    similarity = keypoint_similarity(xy, moved, area=10_000.0)
    assert similarity[COCO_KEYPOINTS.index("nose")] < similarity[COCO_KEYPOINTS.index("left_hip")]
    assert keypoint_similarity(xy, xy, 100.0) == pytest.approx(np.ones(17))
