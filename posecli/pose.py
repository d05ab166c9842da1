"""Pose and Frame records: what the pipeline produces. Imports only the standard library and NumPy.

Coordinates are image pixels of the original (unresized, upright) image, x to the right and y
down, with integer values at pixel centres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from posecli.spec import NUM_COCO_KEYPOINTS


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
    """

    index: int
    time: float
    width: int
    height: int
    poses: list[Pose] = field(default_factory=list)
    name: str = ""
