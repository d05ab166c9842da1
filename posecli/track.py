"""Person identities across frames, and keypoint smoothing.

:class:`Tracker` gives each person a stable id by matching the poses of a frame to the tracks of
the previous frames with OKS (object keypoint similarity, the COCO measure, scale from the
bounding-box area). Each track's pose is first moved forward by its recent velocity, so two
people who cross keep their ids. Matching is greedy by descending OKS. A track that is not
matched is kept for ``max_age`` frames and can be matched again; new people get new ids, and
ids are never reused. A person who appears after the first frame gets an id only once matched in
``min_hits`` frames in a row (until then the poses carry no id), so one-frame false detections do
not use up ids.

With ``smooth=True``, a :class:`OneEuroFilter` per track smooths its keypoints (Casiez et al.,
CHI 2012): little smoothing when a keypoint moves fast, strong smoothing when it is still.

Keypoints are image pixels, COCO-17 order, ``[x, y, confidence]``; confidence 0 = missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from posecli.pose import Pose
from posecli.spec import COCO_SIGMAS, NUM_COCO_KEYPOINTS


@dataclass(frozen=True)
class TrackerConfig:
    """Tunables of :class:`Tracker` and its One-Euro smoothing."""

    min_oks: float = 0.2  # a pose matches a track only above this OKS
    max_age: int = 5  # frames a track that was not seen can still be matched
    min_hits: int = 2  # frames in a row a new person must be seen to get an id (first frame: 1)
    min_area: float = 32.0 * 32.0  # px²; floor of the OKS scale for tiny or one-point poses
    velocity_blend: float = 0.5  # weight of the newest velocity measurement (exponential mean)
    smooth: bool = False  # One-Euro filter on the keypoints of tracked people
    min_cutoff: float = 1.0  # Hz; One-Euro cutoff at rest (lower: smoother, more lag)
    beta: float = 0.05  # s/px; how fast the cutoff rises with speed (higher: less lag)
    d_cutoff: float = 1.0  # Hz; cutoff of the speed estimate


def keypoint_similarity(
    tracks: np.ndarray, poses: np.ndarray, min_area: float = TrackerConfig.min_area
) -> np.ndarray:
    """OKS between every track and every pose.

    Each keypoint found in both contributes ``exp(-d² / (2 · area · (2σ)²))`` with the COCO
    σ of that keypoint and ``area`` the mean of the two bounding-box areas (at least
    ``min_area``); the sum is divided by the number of keypoints found in either, so
    disagreeing sets of found keypoints lower the score.

    Args:
        tracks: ``(T, 17, 3)`` ``[x, y, confidence]``, image pixels.
        poses: ``(P, 17, 3)`` likewise.

    Returns:
        ``(T, P)`` float64 in [0, 1].
    """
    tracks = np.asarray(tracks, dtype=np.float64).reshape(-1, NUM_COCO_KEYPOINTS, 3)
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, NUM_COCO_KEYPOINTS, 3)
    track_seen, pose_seen = tracks[..., 2] > 0, poses[..., 2] > 0  # (T, 17), (P, 17)
    area = (_box_area(tracks, track_seen)[:, None] + _box_area(poses, pose_seen)[None, :]) / 2
    area = np.maximum(area, min_area)  # (T, P)
    squared = ((tracks[:, None, :, :2] - poses[None, :, :, :2]) ** 2).sum(-1)  # (T, P, 17)
    falloff = (2 * COCO_SIGMAS) ** 2  # (17,)
    similarity = np.exp(-squared / (2 * area[..., None] * falloff))  # (T, P, 17)
    both = track_seen[:, None, :] & pose_seen[None, :, :]
    either = (track_seen[:, None, :] | pose_seen[None, :, :]).sum(-1)  # (T, P)
    return np.where(both, similarity, 0.0).sum(-1) / np.maximum(either, 1)


def _box_area(keypoints: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """``(N,)`` area of the bounding box of each pose's found keypoints (0 if none)."""
    inf = np.inf
    low = np.where(seen[..., None], keypoints[..., :2], inf).min(axis=1)  # (N, 2)
    high = np.where(seen[..., None], keypoints[..., :2], -inf).max(axis=1)
    size = np.where(np.isfinite(low), high - low, 0.0)
    return size[:, 0] * size[:, 1]


def greedy_match(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs ``(row, column)`` taken by descending score, each row and column once, ≥ threshold."""
    scores = np.array(scores, dtype=np.float64)
    pairs = []
    while scores.size:
        row, column = np.unravel_index(np.argmax(scores), scores.shape)
        if scores[row, column] < threshold:
            break
        pairs.append((int(row), int(column)))
        scores[row, :] = -np.inf
        scores[:, column] = -np.inf
    return pairs


class OneEuroFilter:
    """One-Euro filter over ``K`` 2-D points, each with its own state, in pixels and seconds.

    A point's state starts when it is first present and is dropped when it goes missing, so a
    keypoint that reappears is not pulled toward where it was last seen.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float, count: int) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._value = np.zeros((count, 2))  # last filtered position
        self._speed = np.zeros((count, 2))  # last filtered velocity, px/s
        self._active = np.zeros(count, dtype=bool)
        self._time: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, elapsed: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / elapsed)

    def __call__(self, points: np.ndarray, present: np.ndarray, time: float) -> np.ndarray:
        """Filter ``(K, 2)`` ``points`` observed at ``time`` seconds; ``present`` ``(K,)`` bool.

        Returns the ``(K, 2)`` filtered points (missing ones are returned unchanged).
        """
        points = np.asarray(points, dtype=np.float64)
        elapsed = max(time - self._time, 1e-6) if self._time is not None else None
        self._time = time
        out = points.copy()
        continuing = present & self._active
        if elapsed is not None and continuing.any():
            previous = self._value[continuing]
            a_speed = self._alpha(self.d_cutoff, elapsed)
            speed = (points[continuing] - previous) / elapsed
            speed = a_speed * speed + (1 - a_speed) * self._speed[continuing]
            cutoff = self.min_cutoff + self.beta * np.linalg.norm(speed, axis=1)
            a_value = self._alpha(cutoff, elapsed)[:, None]
            out[continuing] = a_value * points[continuing] + (1 - a_value) * previous
            self._speed[continuing] = speed
        starting = present & ~continuing
        self._speed[starting] = 0.0
        self._value[present] = out[present]
        self._active = present.copy()
        return out


@dataclass
class _Track:
    track_id: int | None  # None until confirmed (see TrackerConfig.min_hits)
    keypoints: np.ndarray  # (17, 3) last observed, unsmoothed
    time: float  # when it was last observed
    hits: int = 1  # frames observed (an unconfirmed track ends when missed: in a row)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px/s of the whole pose
    missed: int = 0  # frames since last observed
    smoother: OneEuroFilter | None = None

    def predicted(self, time: float) -> np.ndarray:
        """``(17, 3)`` keypoints moved forward to ``time`` at the track's velocity."""
        moved = self.keypoints.copy()
        moved[:, :2] += self.velocity * max(time - self.time, 0.0)
        return moved


class Tracker:
    """Stable person ids across the frames of one video (see the module docstring).

    Call :meth:`update` once per frame, in order, with that frame's poses and time.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._first_frame = True

    def reset(self) -> None:
        """Forget every track (ids still never repeat); the next frame counts as the first."""
        self._tracks = []
        self._first_frame = True

    def update(self, poses: Sequence[Pose], time: float) -> list[Pose]:
        """Assign track ids to the poses of the next frame.

        Args:
            poses: the frame's people (image pixels, COCO-17 order).
            time: the frame's presentation time in seconds (increasing).

        Returns:
            New :class:`Pose` records in the same order with ``track_id`` set (ids start at 1;
            ``None`` for a person not yet confirmed), with smoothed keypoints when
            ``config.smooth``.
        """
        detected = np.array([pose.keypoints for pose in poses], dtype=np.float64)
        predicted = np.array([track.predicted(time) for track in self._tracks])
        scores = keypoint_similarity(predicted, detected, self.config.min_area)
        pairs = greedy_match(scores, self.config.min_oks)
        matches = {pose: track for track, pose in pairs}  # pose index → track index
        for track in self._tracks:
            track.missed += 1
        results = []
        for index, pose in enumerate(poses):
            if index in matches:
                track = self._tracks[matches[index]]
                self._observe(track, detected[index], time)
            else:
                track = self._start(detected[index], time)
            results.append(self._output(pose, track, time))
        self._tracks = [track for track in self._tracks if self._alive(track)]
        self._first_frame = False
        return results

    def _alive(self, track: _Track) -> bool:
        """Confirmed tracks live ``max_age`` unseen frames; unconfirmed ones none."""
        return track.missed <= (self.config.max_age if track.track_id is not None else 0)

    def _start(self, keypoints: np.ndarray, time: float) -> _Track:
        smoother = None
        if self.config.smooth:
            c = self.config
            smoother = OneEuroFilter(c.min_cutoff, c.beta, c.d_cutoff, NUM_COCO_KEYPOINTS)
        track = _Track(None, keypoints, time, smoother=smoother)
        if self._first_frame or self.config.min_hits <= 1:
            self._confirm(track)
        self._tracks.append(track)
        return track

    def _confirm(self, track: _Track) -> None:
        track.track_id = self._next_id
        self._next_id += 1

    def _observe(self, track: _Track, keypoints: np.ndarray, time: float) -> None:
        elapsed = time - track.time
        both = (track.keypoints[:, 2] > 0) & (keypoints[:, 2] > 0)
        if elapsed > 0 and both.any():
            shift = (keypoints[both, :2] - track.keypoints[both, :2]).mean(axis=0)
            blend = self.config.velocity_blend
            track.velocity = blend * shift / elapsed + (1 - blend) * track.velocity
        track.keypoints, track.time, track.missed = keypoints, time, 0
        track.hits += 1
        if track.track_id is None and track.hits >= self.config.min_hits:
            self._confirm(track)

    @staticmethod
    def _output(pose: Pose, track: _Track, time: float) -> Pose:
        keypoints = pose.keypoints
        if track.smoother is not None:
            keypoints = keypoints.copy()
            present = keypoints[:, 2] > 0
            keypoints[:, :2] = track.smoother(keypoints[:, :2], present, time)
        return replace(pose, keypoints=keypoints, track_id=track.track_id)
