"""LSPet import: LSP joints → COCO keypoints, teacher completion, bystanders, joints.mat."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from posecli.config import LabelConfig
from posecli.errors import InputError, UsageError
from posecli.spec import COCO_KEYPOINTS
from posecli.train.label.fusion import Detection
from posecli.train.lspet import (
    LSP_HEAD_TOP,
    LSP_NECK,
    bystanders,
    complete_person,
    human_person,
    import_lspet,
    read_joints,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TEACHERS_DIR = SHARED / "teachers"
EVAL_SET = SHARED / "data" / "eval" / "mmpose-coco"
CONFIG = LabelConfig(teacher="thunder", keep_keypoint=0.2, confident_person=0.1, min_keypoints=3)

#: COCO keypoint names of the 14 LSP joints in LSP order (None: neck, head top).
LSP_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist", None, None,
)  # fmt: skip


def lsp_joints_from_coco(keypoints: np.ndarray) -> np.ndarray:
    """``(14, 3)`` LSP joints from ``(17, 3)`` COCO keypoints; neck between the shoulders, head
    top above the nose by the nose–neck distance."""
    joints = np.zeros((14, 3))
    for joint, name in enumerate(LSP_NAMES):
        if name is not None:
            keypoints_row = keypoints[COCO_KEYPOINTS.index(name)]
            joints[joint] = [keypoints_row[0], keypoints_row[1], float(keypoints_row[2] > 0)]
    shoulders = [COCO_KEYPOINTS.index("left_shoulder"), COCO_KEYPOINTS.index("right_shoulder")]
    neck = keypoints[shoulders, :2].mean(axis=0)
    nose = keypoints[COCO_KEYPOINTS.index("nose"), :2]
    joints[LSP_NECK] = [*neck, 1.0]
    joints[LSP_HEAD_TOP] = [*(nose + (nose - neck)), 1.0]
    return joints


def synthetic_joints() -> np.ndarray:
    """A standing person 100 px tall, every joint labelled but the left wrist."""
    joints = np.zeros((14, 3))
    for joint in range(14):
        joints[joint] = [40 + 3 * joint, 20 + 7 * joint, 1.0]
    joints[11, 2] = 0  # left wrist not labelled
    joints[LSP_HEAD_TOP] = [50, 10, 1]
    joints[LSP_NECK] = [50, 30, 1]
    return joints


def test_lsp_joints_map_to_coco_keypoints_with_score_one():
    joints = synthetic_joints()
    human = human_person(joints, CONFIG)
    right_ankle = COCO_KEYPOINTS.index("right_ankle")
    left_elbow = COCO_KEYPOINTS.index("left_elbow")
    np.testing.assert_allclose(human.keypoints[right_ankle], [40, 20, 1])
    np.testing.assert_allclose(human.keypoints[left_elbow], [40 + 30, 20 + 70, 1])
    assert human.keypoints[COCO_KEYPOINTS.index("left_wrist"), 2] == 0
    assert human.keypoints[:5, 2].sum() == 0  # LSP has no face points
    # the box spans every labelled joint, head top included, grown by box_margin
    assert human.box[1] < 10 and human.box[3] > 20 + 7 * 10


def test_agreeing_thunder_completes_the_face_and_unlabelled_joints():
    joints = synthetic_joints()
    human = human_person(joints, CONFIG)
    teacher = human.keypoints.copy()
    teacher[:, :2] += 1.0  # agrees
    teacher[:, 2] = 0.9
    teacher[COCO_KEYPOINTS.index("left_eye"), 2] = 0.1  # not confident
    label = complete_person(human, Detection(teacher, human.box, 0.9), joints, CONFIG)
    nose, left_eye = COCO_KEYPOINTS.index("nose"), COCO_KEYPOINTS.index("left_eye")
    left_wrist = COCO_KEYPOINTS.index("left_wrist")
    assert label.keypoints[nose, 2] == 2 and label.keypoint_scores[nose] == pytest.approx(0.9)
    assert label.keypoints[left_wrist, 2] == 2  # unlabelled joint taken from the teacher
    # an unconfident teacher point is located (masked in training), with score 0
    assert label.keypoints[left_eye, 2] == 1 and label.keypoint_scores[left_eye] == 0
    # human joints stay as labelled, with score 1
    right_ankle = COCO_KEYPOINTS.index("right_ankle")
    np.testing.assert_allclose(label.keypoints[right_ankle], [40, 20, 2])
    assert label.keypoint_scores[right_ankle] == 1


def test_disagreeing_thunder_masks_the_face_at_the_head():
    joints = synthetic_joints()
    human = human_person(joints, CONFIG)
    teacher = human.keypoints.copy()
    teacher[:, 0] += 300  # another person
    teacher[:, 2] = 0.9
    label = complete_person(human, Detection(teacher, human.box, 0.9), joints, CONFIG)
    np.testing.assert_allclose(label.keypoints[:5], [[50, 20, 1]] * 5)
    assert (label.keypoint_scores[:5] == 0).all()
    assert label.keypoints[COCO_KEYPOINTS.index("left_wrist"), 2] == 0


def test_bystanders_exclude_the_labelled_person():
    joints = synthetic_joints()
    human = human_person(joints, CONFIG)
    same_keypoints = np.column_stack([human.keypoints[:, :2] + 2, np.full(17, 0.9)])
    same = Detection(same_keypoints, human.box, 0.8)
    other_keypoints = human.keypoints.copy()
    other_keypoints[:, 0] += 200
    other_keypoints[:, 2] = 0.9
    other = Detection(other_keypoints, human.box + [200, 0, 200, 0], 0.8)
    labels = bystanders([same, other], human, (200, 400), CONFIG)
    assert len(labels) == 1 and not labels[0].ignore
    assert labels[0].box[0] > 200


def test_joints_mat_is_read_and_checked(tmp_path):
    if importlib.util.find_spec("scipy") is None:
        pytest.skip("scipy is not installed (pip install 'posecli[train]')")
    from scipy.io import savemat

    joints = np.stack([synthetic_joints(), synthetic_joints() + 1], axis=-1)  # (14, 3, 2)
    savemat(tmp_path / "joints.mat", {"joints": joints})
    read = read_joints(tmp_path / "joints.mat")
    assert read.shape == (2, 14, 3)
    np.testing.assert_allclose(read[1], synthetic_joints() + 1)
    savemat(tmp_path / "bad.mat", {"joints": np.zeros((5, 3))})
    with pytest.raises(InputError, match=r"expected \(14, 3, N\)"):
        read_joints(tmp_path / "bad.mat")
    (tmp_path / "text.mat").write_text("not a mat file")
    with pytest.raises(InputError, match="cannot read LSPet joints"):
        read_joints(tmp_path / "text.mat")


def test_import_needs_the_top_down_teacher_and_its_images(tmp_path):
    with pytest.raises(UsageError, match="thunder"):
        import_lspet(tmp_path, TEACHERS_DIR, tmp_path / "out.json", LabelConfig(teacher="both"))
    if importlib.util.find_spec("scipy") is None:
        pytest.skip("scipy is not installed (pip install 'posecli[train]')")
    from scipy.io import savemat

    savemat(tmp_path / "joints.mat", {"joints": synthetic_joints()[:, :, None]})
    with pytest.raises(InputError, match="1 LSPet images missing"):
        import_lspet(tmp_path, TEACHERS_DIR, tmp_path / "out.json", CONFIG)


def test_import_of_a_real_photo_completes_the_labelled_person(tmp_path):
    for module in ("scipy", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'posecli[train]')")
    if not (TEACHERS_DIR / "movenet-thunder.onnx").is_file():
        pytest.skip(f"teacher models not found in {TEACHERS_DIR}")
    if not (EVAL_SET / "person_keypoints.json").is_file():
        pytest.skip(f"eval set not found in {EVAL_SET}")
    from scipy.io import savemat

    ground_truth = json.loads((EVAL_SET / "person_keypoints.json").read_text())
    image_info = next(i for i in ground_truth["images"] if i["file_name"] == "000000000785.jpg")
    (truth,) = [a for a in ground_truth["annotations"] if a["image_id"] == image_info["id"]]
    keypoints = np.array(truth["keypoints"], dtype=np.float64).reshape(17, 3)
    (tmp_path / "images").mkdir()
    image = cv2.imread(str(EVAL_SET / "images" / image_info["file_name"]))
    cv2.imwrite(str(tmp_path / "images" / "im00001.jpg"), image)
    savemat(tmp_path / "joints.mat", {"joints": lsp_joints_from_coco(keypoints)[:, :, None]})
    out = import_lspet(tmp_path, TEACHERS_DIR, tmp_path / "lspet.json", CONFIG)
    document = json.loads(out.read_text())
    person = next(a for a in document["annotations"] if not a["iscrowd"])
    labelled = np.array(person["keypoints"]).reshape(17, 3)
    body = keypoints[5:, 2] > 0
    np.testing.assert_allclose(labelled[5:][body, :2], keypoints[5:][body, :2], atol=0.01)
    assert (labelled[5:][body, 2] == 2).all()
    nose = COCO_KEYPOINTS.index("nose")
    assert labelled[nose, 2] == 2, "Thunder's nose should complete the person"
    distance = np.linalg.norm(labelled[nose, :2] - keypoints[nose, :2])
    assert distance < 0.1 * truth["bbox"][3]
