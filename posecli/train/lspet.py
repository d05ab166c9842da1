"""LSPet (Leeds Sports Pose Extended) as a COCO keypoint file for ``posecli train``.

LSPet (Johnson & Everingham, CVPR 2011) has 10,000 sports photos ``images/im00001.jpg`` …
and ``joints.mat``: a MATLAB matrix ``joints`` of shape ``(14, 3, N)`` holding, per image, one
person's 14 LSP joints as ``x, y, labelled`` in image pixels (coordinates used as given). The
joints were labelled by people (crowd-sourced: some noise and left/right swaps); the licence is
for research only.

Twelve LSP joints are COCO body keypoints; they become kept keypoints (``v = 2``, score 1). The
rest of the labelled person and everyone else in the photo come from the teachers, so that no
unlabelled body becomes a negative:

* MoveNet Thunder runs on the labelled person's box. Where it agrees with the human joints (OKS
  over them ≥ ``AGREE_OKS``), its face points and the body keypoints people did not label are
  added: kept (``v = 2``, with Thunder's confidence) when confident, else located but masked
  (``v = 1``, score 0: training neither teaches them present nor absent). Where it disagrees,
  the five face points are masked at the head (between neck and head top).
* Bystanders: the labeller's top-down people (Thunder on MoveNet MultiPose's boxes) that are not
  the labelled person become labelled people or ignore regions by the usual keep rule.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from posecli.config import LabelConfig
from posecli.errors import InputError, UsageError
from posecli.pose import keypoint_similarity
from posecli.spec import NUM_COCO_KEYPOINTS
from posecli.train.label.fusion import (
    Detection,
    PersonLabel,
    box_iou,
    detection_oks,
    keypoint_box,
    person_area,
    select_labels,
)
from posecli.train.label.teachers import Teachers
from posecli.train.label.writer import run_labelling

#: COCO keypoint of each of the first 12 LSP joints (right ankle, right knee, right hip, left
#: hip, left knee, left ankle, right wrist, right elbow, right shoulder, left shoulder, left
#: elbow, left wrist); LSP joints 12 and 13 are the neck and the head top.
LSP_TO_COCO = (16, 14, 12, 11, 13, 15, 10, 8, 6, 5, 7, 9)
LSP_NECK, LSP_HEAD_TOP = 12, 13
LSP_JOINTS = 14
FACE_KEYPOINTS = (0, 1, 2, 3, 4)  # nose, eyes, ears (COCO order)
#: Thunder's person is the labelled one when its OKS over the human joints is at least this.
AGREE_OKS = 0.5
JOINTS_FILE = "joints.mat"
#: The settings of ``posecli import-lspet``: MoveNet Thunder with the keep rule chosen for it
#: (``bench/label_quality.py``, labels v2), whatever ``posecli label``'s default teacher.
LSPET_LABELS = LabelConfig(
    teacher="thunder", keep_keypoint=0.2, confident_person=0.1, min_keypoints=3
)


def read_joints(path: Path) -> np.ndarray:
    """``joints.mat`` as ``(N, 14, 3)`` float64 ``[x, y, labelled]``, image pixels, LSP order."""
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError as error:
        raise UsageError("reading joints.mat needs scipy: pip install 'posecli[train]'") from error
    try:
        joints = np.asarray(loadmat(str(path))["joints"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError, NotImplementedError, MatReadError) as error:
        raise InputError(f"cannot read LSPet joints {path}: {error}") from error
    if joints.ndim != 3 or joints.shape[:2] != (LSP_JOINTS, 3):
        raise InputError(f"{path}: joints of shape {joints.shape}, expected (14, 3, N)")
    return joints.transpose(2, 0, 1)


def image_paths(dataset: Path, count: int) -> list[Path]:
    """``images/im00001.jpg`` … of an LSPet folder, one per person of ``joints.mat``."""
    paths = [dataset / "images" / f"im{index:05d}.jpg" for index in range(1, count + 1)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise InputError(f"{len(missing)} LSPet images missing, e.g. {missing[0]}")
    return paths


def human_person(joints: np.ndarray, config: LabelConfig) -> Detection:
    """The labelled person: ``(17, 3)`` ``[x, y, score]`` COCO keypoints (score 1 where labelled,
    0 elsewhere) and the box of all labelled joints (head top included) grown by box_margin."""
    keypoints = np.zeros((NUM_COCO_KEYPOINTS, 3))  # (17, 3)
    labelled = joints[:, 2] > 0  # (14,)
    for joint, coco in enumerate(LSP_TO_COCO):
        if labelled[joint]:
            keypoints[coco] = [joints[joint, 0], joints[joint, 1], 1.0]
    extent = np.column_stack([joints[:, :2], labelled.astype(np.float64)])  # (14, 3)
    return Detection(keypoints, keypoint_box(extent, config.box_margin), 1.0)


def complete_person(
    human: Detection, thunder: Detection, joints: np.ndarray, config: LabelConfig
) -> PersonLabel:
    """The labelled person's label: human keypoints kept, the others from ``thunder`` when it
    agrees with them (kept if confident, else masked), else face points masked at the head."""
    labelled = human.keypoints[:, 2] > 0  # (17,)
    keypoints = np.zeros((NUM_COCO_KEYPOINTS, 3))  # (17, 3) [x, y, v]
    scores = np.zeros(NUM_COCO_KEYPOINTS)  # (17,)
    keypoints[labelled, :2], keypoints[labelled, 2], scores[labelled] = (
        human.keypoints[labelled, :2], 2, 1.0,
    )  # fmt: skip
    area = person_area(human.box, config.area_per_box)
    similarity = keypoint_similarity(thunder.keypoints[:, :2], human.keypoints[:, :2], area)
    if labelled.any() and similarity[labelled].mean() >= AGREE_OKS:
        added = ~labelled
        kept = added & (thunder.keypoints[:, 2] >= config.keep_keypoint)
        keypoints[added, :2] = thunder.keypoints[added, :2]
        keypoints[added, 2] = np.where(kept[added], 2, 1)
        scores[kept] = thunder.keypoints[kept, 2]
    elif joints[LSP_NECK, 2] > 0 and joints[LSP_HEAD_TOP, 2] > 0:
        head = (joints[LSP_NECK, :2] + joints[LSP_HEAD_TOP, :2]) / 2
        face = list(FACE_KEYPOINTS)
        keypoints[face, :2], keypoints[face, 2] = head, 1
    return PersonLabel(keypoints, scores, human.box, 1.0, False)


def bystanders(
    people: list[Detection],
    human: Detection,
    image_size: tuple[int, int],
    config: LabelConfig,
) -> list[PersonLabel]:
    """Labels and ignore regions for the teachers' people other than the labelled person."""
    others = [
        person
        for person in people
        if detection_oks(person, human, config) < config.same_person_oks
        and box_iou(person.box, human.box)[0, 0] < config.duplicate_iou
    ]
    labels = select_labels(others, np.zeros((0, 4)), image_size, config)
    return [
        label
        for label in labels
        if not label.ignore or box_iou(label.box, human.box)[0, 0] < config.duplicate_iou
    ]


def import_lspet(
    dataset: Path,
    teachers_dir: Path,
    out: Path,
    config: LabelConfig,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write LSPet as COCO keypoints to ``out`` (resumable, as ``posecli label``): the labelled
    person of each photo completed by MoveNet Thunder, bystanders from the teachers (see the
    module docstring). ``config.teacher`` must be "thunder". Returns ``out``."""
    if config.teacher != "thunder":
        raise UsageError("LSPet import needs the top-down teacher (teacher 'thunder')")
    joints = read_joints(Path(dataset) / JOINTS_FILE)
    images = image_paths(Path(dataset), len(joints))
    joints_by_image = {path.resolve(): person for path, person in zip(images, joints, strict=True)}
    teachers = Teachers(Path(teachers_dir), config)

    def label_image(path: Path, image: np.ndarray) -> list[PersonLabel]:
        person_joints = joints_by_image[path.resolve()]
        human = human_person(person_joints, config)
        thunder = teachers.top_down_person(image, human.box, 1.0, config.thunder_crop_scale)
        labelled = complete_person(human, thunder, person_joints, config)
        others = bystanders(teachers.people(image), human, image.shape[:2], config)
        return [labelled, *others]

    return run_labelling(images, label_image, Path(out), config, progress)
