"""Pose and Frame records: what the pipeline produces. Imports only the standard library and NumPy.

Coordinates are image pixels of the original (unresized, upright) image, x to the right and y
down, with integer values at pixel centres.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from posecli.spec import COCO_KEYPOINTS, COCO_SIGMAS, NUM_COCO_KEYPOINTS, coco_to_network


@dataclass
class Pose:
    """One person.

    Attributes:
        keypoints: ``(17, 3)`` float32 ``[x, y, confidence]`` in COCO-17 order, image pixels;
            a missing keypoint has confidence 0 (and x = y = 0).
        score: person confidence in [0, 1].
        track_id: identity across frames, or ``None`` before tracking.
    """

    keypoints: np.ndarray
    score: float
    track_id: int | None = None

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if self.keypoints.shape != (NUM_COCO_KEYPOINTS, 3):
            raise ValueError(f"Pose keypoints must be (17, 3), got {self.keypoints.shape}")

    @property
    def visible(self) -> np.ndarray:
        """``(17,)`` bool: which keypoints were found."""
        return self.keypoints[:, 2] > 0

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(x, y, width, height)`` of the found keypoints, in pixels (zeros if none)."""
        points = self.keypoints[self.visible, :2]
        if len(points) == 0:
            return (0.0, 0.0, 0.0, 0.0)
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


@dataclass
class Frame:
    """The people found in one image or video frame.

    Attributes:
        index: frame number in the source (0-based), or the image's position in a folder.
        time: presentation time in seconds (0 for still images).
        width, height: size of the upright image in pixels.
        poses: people, highest score first.
        name: file name for still images, empty for video frames.
        image_id: the image's id in COCO results (still images), ``None`` for video frames.
    """

    index: int
    time: float
    width: int
    height: int
    poses: list[Pose] = field(default_factory=list)
    name: str = ""
    image_id: int | None = None


def keypoint_similarity(xy_a: np.ndarray, xy_b: np.ndarray, area: float | np.ndarray) -> np.ndarray:
    """COCO per-keypoint similarity ``exp(-d² / (2·area·(2σ)²))``: the terms that OKS averages.

    The one OKS kernel of posecli (tracking, refinement merge, pseudo-label fusion).

    Args:
        xy_a, xy_b: ``(..., 17, 2)`` ``[x, y]`` positions in COCO-17 order, image pixels
            (broadcast against each other; their dtype is kept for the distances).
        area: object area in pixels², a number or an array broadcasting to ``(...)``.

    Returns:
        ``(..., 17)`` float64 in [0, 1] (σ: ``posecli.spec.COCO_SIGMAS``).
    """
    squared = ((xy_a - xy_b) ** 2).sum(axis=-1)  # (..., 17)
    scale = 2.0 * np.asarray(area, dtype=np.float64)[..., None]  # (..., 1)
    return np.exp(-squared / (scale * (2.0 * COCO_SIGMAS) ** 2))


# ---------------------------------------------------------------------------------------------
# Encoders: Pose / Frame → JSON-ready dicts (numbers rounded: pixels to 0.01, scores to 1e-4)

#: OpenPose JSON format version written by :func:`frame_to_openpose`.
OPENPOSE_VERSION = 1.3


def _keypoint_rows(keypoints: np.ndarray) -> list[list[float]]:
    """``(K, 3)`` ``[x, y, score]`` rows as lists; missing keypoints (score ≤ 0) are all zeros."""
    rows = []
    for x, y, score in np.asarray(keypoints, dtype=np.float64):
        present = score > 0
        rows.append(
            [round(float(x), 2) if present else 0.0, round(float(y), 2) if present else 0.0,
             round(float(score), 4) if present else 0.0]
        )  # fmt: skip
    return rows


def _bbox(pose: Pose) -> list[float]:
    return [round(value, 2) for value in pose.bbox]


def to_coco_result(pose: Pose, image_id: int, file_name: str | None = None) -> dict:
    """One entry of a COCO keypoint results file (``tests/schema.py``: ``COCO_RESULT_SCHEMA``).

    ``keypoints`` is 17 × ``[x, y, score]`` flattened (51 numbers, image pixels, COCO order),
    ``bbox`` is ``[x, y, width, height]`` of the found keypoints; ``file_name`` is added when given.
    """
    result = {
        "image_id": int(image_id),
        "category_id": 1,
        "keypoints": [value for row in _keypoint_rows(pose.keypoints) for value in row],
        "score": round(float(pose.score), 4),
        "bbox": _bbox(pose),
    }
    if file_name is not None:
        result["file_name"] = file_name
    return result


def frame_to_track_line(frame: Frame) -> dict:
    """One line of a JSON-lines track file (``tests/schema.py``: ``TRACK_LINE_SCHEMA``)."""
    return {
        "frame": int(frame.index),
        "time": round(float(frame.time), 6),
        "width": int(frame.width),
        "height": int(frame.height),
        "people": [
            {
                "id": None if pose.track_id is None else int(pose.track_id),
                "keypoints": _keypoint_rows(pose.keypoints),
                "bbox": _bbox(pose),
                "score": round(float(pose.score), 4),
            }
            for pose in frame.poses
        ],
    }


#: The columns of a CSV export (``--csv``), one row per person per frame: ``frame`` (index in
#: the source, an image's position), ``time`` (s), ``image_id`` and ``file_name`` (still images;
#: empty for video frames), ``track_id`` (empty when untracked), ``score`` (person, 0–1), then
#: ``NAME_x``, ``NAME_y``, ``NAME_score`` for the 17 COCO keypoints in COCO order (image pixels;
#: a keypoint not found is 0, 0, 0).
CSV_COLUMNS: tuple[str, ...] = (
    "frame", "time", "image_id", "file_name", "track_id", "score",
    *(f"{name}_{value}" for name in COCO_KEYPOINTS for value in ("x", "y", "score")),
)  # fmt: skip


def frame_to_csv_rows(frame: Frame) -> list[list[object]]:
    """The rows of :data:`CSV_COLUMNS` of a frame, one per person (none for an empty frame);
    numbers rounded as in the JSON outputs, ``""`` for what does not apply."""
    common = [int(frame.index), round(float(frame.time), 6)]
    common += ["" if frame.image_id is None else int(frame.image_id), frame.name]
    return [
        [
            *common,
            "" if pose.track_id is None else int(pose.track_id),
            round(float(pose.score), 4),
            *(value for row in _keypoint_rows(pose.keypoints) for value in row),
        ]
        for pose in frame.poses
    ]


def frames_to_csv(frames: Iterable[Frame], *, columns: bool = False) -> bytes:
    """The CSV rows of ``frames`` (:func:`frame_to_csv_rows`), after a line naming
    :data:`CSV_COLUMNS` with ``columns``: UTF-8, RFC 4180 quoting, ``\\n`` line ends."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if columns:
        writer.writerow(CSV_COLUMNS)
    for frame in frames:
        writer.writerows(frame_to_csv_rows(frame))
    return text.getvalue().encode()


def frame_to_openpose(frame: Frame) -> dict:
    """The people of a frame in OpenPose's ``*_keypoints.json`` format (COCO-18 body model).

    ``pose_keypoints_2d`` holds 18 × ``[x, y, score]`` flattened in OpenPose's COCO-18 order
    (nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist, right hip/knee/ankle,
    left hip/knee/ankle, right eye, left eye, right ear, left ear); the neck is the mean of the
    shoulders when both were found (score: the smaller of theirs), else zeros. ``person_id`` is
    ``[track id]`` for tracked people, ``[-1]`` otherwise. Face and hand arrays are empty.
    """
    people = []
    for pose in frame.poses:
        openpose18 = coco_to_network(np.asarray(_keypoint_rows(pose.keypoints)))  # (18, 3)
        people.append(
            {
                "person_id": [-1 if pose.track_id is None else int(pose.track_id)],
                "pose_keypoints_2d": [round(float(v), 4) for v in openpose18.reshape(-1)],
                "face_keypoints_2d": [],
                "hand_left_keypoints_2d": [],
                "hand_right_keypoints_2d": [],
                "pose_keypoints_3d": [],
                "face_keypoints_3d": [],
                "hand_left_keypoints_3d": [],
                "hand_right_keypoints_3d": [],
            }
        )
    return {"version": OPENPOSE_VERSION, "people": people}
