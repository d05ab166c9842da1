"""Video between bottom-up frames (issue 38): find people now and then, follow them in between.

People move a few pixels from one video frame to the next, so the streaming pipeline
(``posecli.pipeline``) need not run the bottom-up network on every frame when it tracks:

* **Bottom-up frames** (:class:`BottomUpSchedule`): every ``detect_every``-th frame the pipeline
  takes (frames 0, N, 2N… of the run), every frame after a scene cut (the grey 64×36 thumbnails
  of two consecutive frames differ by more than ``scene_cut`` on average, 0–255), and the frame
  after one on which a followed person was lost (:class:`Follower`). There the people are found,
  refined and tracked as on every frame with ``detect_every`` 1.
* **Followed frames**: the refiner alone runs on the box of each person the tracker saw in the
  previous frame (``posecli.track.Tracker.followed``: their last pose moved by the track's
  velocity), enlarged (``follow_box_scale``); the poses it finds go through OKS-NMS and the
  tracker as usual (``posecli.estimator.Estimator.follow``, ``posecli.refine.Refinement.follow``).
  A person whose refined keypoints score low (``follow_min_score``, ``follow_min_ratio``) is
  lost: not shown, their track goes unseen (the tracker keeps it for re-identification, but it
  is no longer followed) and the next frame is a bottom-up one, which finds them again if they
  are there. A person who duplicates a better one is dropped the same way, without a bottom-up
  frame, and so is one lost where their predicted keypoints reach the image's edge
  (``follow_edge``): they left the frame. A person who enters between bottom-up frames is found
  at the next one.

What it trades: people are found up to ``detect_every - 1`` frames late (or lost for a frame
where the refiner loses them), and a followed person's keypoints are the refiner's alone.

Frames are RGB uint8 ``(H, W, 3)``; times in seconds.
"""

from __future__ import annotations

import logging
from typing import Protocol

import cv2
import numpy as np

from posecli.pose import Pose

logger = logging.getLogger(__name__)

#: Size of the grey thumbnails compared for scene cuts, pixels (width, height).
THUMBNAIL_SIZE = (64, 36)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The ``(36, 64)`` float32 grey (mean of R, G, B, 0–255) thumbnail of an RGB uint8
    ``(H, W, 3)`` image, area-averaged."""
    small = cv2.resize(image, THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA)  # (36, 64, 3)
    return small.astype(np.float32).mean(axis=2)


class BottomUpSchedule:
    """Which frames the bottom-up network runs on, decided in frame order as they arrive: one
    in ``every`` (the first included), and any frame that follows a scene cut.

    Its state (frames seen, the last thumbnail) belongs to the thread that calls :meth:`due`.
    """

    def __init__(self, every: int, scene_cut: float) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.every = every
        self.scene_cut = scene_cut
        self._count = 0
        self._last: np.ndarray | None = None

    def due(self, image: np.ndarray) -> bool:
        """Whether the next frame, RGB uint8 ``(H, W, 3)`` ``image``, is a bottom-up frame."""
        scheduled = self._count % self.every == 0
        self._count += 1
        if self.every == 1:
            return True  # no thumbnails: nothing is followed
        current, last = thumbnail(image), self._last
        self._last = current
        if scheduled or last is None or last.shape != current.shape:
            return True
        cut = float(np.abs(current - last).mean()) > self.scene_cut
        if cut:
            logger.debug("scene cut at frame %d: a bottom-up frame", self._count - 1)
        return cut


class FollowingEstimator(Protocol):
    """What following needs of an estimator (``posecli.estimator.Estimator``)."""

    def follow(self, image: np.ndarray, people: list[Pose]) -> tuple[list[Pose], int]: ...


class FollowedTracker(Protocol):
    """What following needs of a tracker (``posecli.track.Tracker``)."""

    def followed(self, time: float) -> list[Pose]: ...

    def update(self, poses: list[Pose], time: float) -> list[Pose]: ...


class Follower:
    """Follows the tracker's people through the frames between bottom-up ones.

    Its state (whether a followed person was lost, so the next frame must be a bottom-up one)
    belongs to the thread that tracks, which calls :meth:`follow` and :meth:`detected` once per
    frame, in frame order.
    """

    def __init__(self, estimator: FollowingEstimator, tracker: FollowedTracker) -> None:
        self.estimator = estimator
        self.tracker = tracker
        self.lost = False  # a followed person was not found: the next frame is bottom-up

    def detected(self) -> None:
        """The current frame was a bottom-up one: everybody there was looked for."""
        self.lost = False

    def follow(self, image: np.ndarray, time: float) -> list[Pose]:
        """The tracked people of RGB uint8 ``(H, W, 3)`` ``image`` at ``time``, found by the
        refiner in the boxes of the people followed (see the module docstring), track ids set."""
        found, lost = self.estimator.follow(image, self.tracker.followed(time))
        self.lost = lost > 0
        if lost:
            logger.debug("%d followed people lost at %.3f s", lost, time)
        return self.tracker.update(found, time)
