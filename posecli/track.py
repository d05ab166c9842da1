"""Person identities across frames, and keypoint smoothing.

:class:`Tracker` gives each person a stable id by matching the poses of a frame to the tracks of
the previous frames. Tracks hold through missed detections and crossings:

* **Motion.** Each track moves at its recent velocity (constant velocity of the whole pose, an
  exponential mean of its measured shifts): its pose is predicted at the new frame's time before
  matching, so two people who cross keep their ids.
* **Similarity.** :func:`pose_similarity` compares a predicted pose with a detection over the
  keypoints both have, with a tolerance that grows with the time the track went unseen. A track
  remembers keypoints it saw recently but not in its last detection, so partial detections
  (an occluded half, a missed head) still meet the keypoints they have.
* **Association**, in turn, greedily by descending similarity (:func:`greedy_match`): tracks seen
  in the previous frame, then lost tracks (re-identification), then not yet confirmed tracks,
  against the frame's people; then the confirmed tracks still unmatched against low-score
  *candidates* (ByteTrack, Zhang et al., ECCV 2022): people the detector found below the run's
  score thresholds. A candidate continues a track (its position and motion, and it keeps the track
  alive) but is never shown and never starts a track.
* **Re-identification window.** A confirmed track that is not matched is kept for
  ``lost_seconds`` of video time (frame timestamps, so ``--every N`` keeps the same window) and
  can be matched again with its id.

New people get new ids, and ids are never reused. A person who appears after the first frame gets
an id only once matched in ``min_hits`` frames in a row (until then the poses carry no id), so
one-frame false detections do not use up ids.

With ``smooth=True``, a :class:`OneEuroFilter` per track smooths its keypoints (Casiez et al.,
CHI 2012): little smoothing when a keypoint moves fast, strong smoothing when it is still.

Keypoints are image pixels, COCO-17 order, ``[x, y, confidence]``; confidence 0 = missing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from posecli.config import TrackerConfig
from posecli.pose import Pose, keypoint_similarity
from posecli.spec import COCO_SIGMAS, NUM_COCO_KEYPOINTS

logger = logging.getLogger(__name__)


def oks_matrix(
    tracks: np.ndarray, poses: np.ndarray, min_area: float = TrackerConfig.min_area
) -> np.ndarray:
    """OKS between every track and every pose.

    Each keypoint found in both contributes :func:`posecli.pose.keypoint_similarity` with
    ``area`` the mean of the two bounding-box areas (at least ``min_area``); the sum is divided
    by the number of keypoints found in either, so disagreeing sets of found keypoints lower
    the score.

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
    similarity = keypoint_similarity(
        tracks[:, None, :, :2], poses[None, :, :, :2], area
    )  # (T, P, 17)
    both = track_seen[:, None, :] & pose_seen[None, :, :]
    either = (track_seen[:, None, :] | pose_seen[None, :, :]).sum(-1)  # (T, P)
    return np.where(both, similarity, 0.0).sum(-1) / np.maximum(either, 1)


def pose_similarity(
    tracks: np.ndarray,
    poses: np.ndarray,
    spread: np.ndarray | float = 1.0,
    config: TrackerConfig = TrackerConfig(),  # noqa: B008 (frozen record)
) -> np.ndarray:
    """How likely every pose is the person of every track: OKS over the keypoints both have.

    Each keypoint found in both contributes ``exp(-d² / (2 · area · (spread · t · 2σ)²))``
    with σ its COCO σ, ``t`` ``config.tolerance`` and ``area`` the larger of the two
    bounding-box areas (at least ``config.min_area``); the sum is divided by the number of
    shared keypoints, but by at least ``config.min_common``, so that a pose that shares one or
    two keypoints with a track scores low. Unlike :func:`oks_matrix`, keypoints found
    in only one of the two cost nothing: a partial detection of a person still matches them.

    Args:
        tracks: ``(T, 17, 3)`` ``[x, y, confidence]``, image pixels (predicted track poses).
        poses: ``(P, 17, 3)`` likewise (detections).
        spread: ``(T,)`` or a scalar ≥ 1: how much wider each track's tolerance is.
        config: ``tolerance``, ``min_area`` and ``min_common``.

    Returns:
        ``(T, P)`` float64 in [0, 1].
    """
    tracks = np.asarray(tracks, dtype=np.float64).reshape(-1, NUM_COCO_KEYPOINTS, 3)
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, NUM_COCO_KEYPOINTS, 3)
    track_seen, pose_seen = tracks[..., 2] > 0, poses[..., 2] > 0  # (T, 17), (P, 17)
    area = np.maximum(_box_area(tracks, track_seen)[:, None], _box_area(poses, pose_seen)[None])
    area = np.maximum(area, config.min_area)  # (T, P)
    spread = np.broadcast_to(np.asarray(spread, dtype=np.float64), (len(tracks),))
    kappa = 2 * COCO_SIGMAS * config.tolerance  # (17,)
    falloff = area[..., None] * (spread[:, None, None] * kappa) ** 2  # (T, P, 17)
    squared = ((tracks[:, None, :, :2] - poses[None, :, :, :2]) ** 2).sum(-1)  # (T, P, 17)
    both = track_seen[:, None, :] & pose_seen[None, :, :]
    similarity = np.where(both, np.exp(-squared / (2 * falloff)), 0.0).sum(-1)  # (T, P)
    return similarity / np.maximum(both.sum(-1), max(config.min_common, 1))


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
    """One person's state. ``keypoints`` ``(17, 3)``: the template at ``time`` (image pixels):
    the last detection's keypoints, plus those of earlier detections it lacked, moved along
    (``seen`` ``(17,)``: when each was last detected, ``-inf`` never)."""

    track_id: int | None  # None until confirmed (see TrackerConfig.min_hits)
    keypoints: np.ndarray  # (17, 3) template at `time`, unsmoothed
    seen: np.ndarray  # (17,) seconds
    time: float  # when it was last detected (shown person or candidate)
    hits: int = 1  # frames shown in a row while unconfirmed (an unconfirmed track ends if missed)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px/s of the whole pose
    missed: int = 0  # frames since last detected
    smoother: OneEuroFilter | None = None
    score: float = 0.0  # the score of the person last shown

    def predicted(self, time: float, horizon: float) -> np.ndarray:
        """``(17, 3)`` template moved forward to ``time`` at the track's velocity (at most
        ``horizon`` seconds ahead)."""
        moved = self.keypoints.copy()
        moved[:, :2] += self.velocity * min(max(time - self.time, 0.0), horizon)
        return moved


class Tracker:
    """Stable person ids across the frames of one video (see the module docstring).

    Call :meth:`update` once per frame, in order, with that frame's poses and time.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:  # noqa: B008 (frozen)
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._first_frame = True

    @property
    def candidate_min_score(self) -> float:
        """Decoder threshold of the low-score candidates :meth:`update` can use (posecli's
        pipeline decodes a second time at it, see ``pipeline.candidate_decode_config``)."""
        return self.config.candidate_min_score

    def reset(self) -> None:
        """Forget every track (ids still never repeat); the next frame counts as the first."""
        self._tracks = []
        self._first_frame = True

    def followed(self, time: float) -> list[Pose]:
        """The people the last :meth:`update` saw, predicted at ``time`` (issue 38,
        ``posecli.follow``): each track's template (its last pose, plus keypoints remembered
        from earlier ones) moved by its velocity, with its id (``None`` if unconfirmed) and the
        score of the person it last showed. Lost tracks are not followed."""
        horizon = self.config.lost_seconds
        return [
            Pose(track.predicted(time, horizon).astype(np.float32), track.score, track.track_id)
            for track in self._tracks
            if track.missed == 0
        ]

    def update(
        self, poses: Sequence[Pose], time: float, candidates: Sequence[Pose] = ()
    ) -> list[Pose]:
        """Assign track ids to the poses of the next frame.

        Args:
            poses: the frame's people, the ones shown (image pixels, COCO-17 order).
            time: the frame's presentation time in seconds (increasing).
            candidates: people found below the run's score thresholds: each may continue a
                confirmed track that no shown person continues, and is then dropped (never
                shown, never a new track). People of ``poses`` among them are ignored.

        Returns:
            New :class:`Pose` records for ``poses``, in their order, with ``track_id`` set (ids
            start at 1; ``None`` for a person not yet confirmed), with smoothed keypoints when
            ``config.smooth``.
        """
        detected = _keypoints(poses)  # (P, 17, 3)
        for track in self._tracks:
            track.missed += 1
        predicted, spread = self._predicted(time)
        matches = self._match_shown(detected, predicted, spread)  # pose index → track index
        low = self._new_candidates(_keypoints(candidates), detected)
        self._match_candidates(low, predicted, spread, set(matches.values()), time)
        for index, row in matches.items():
            self._observe(self._tracks[row], detected[index], time, shown=True)
        results = []
        for index, pose in enumerate(poses):
            row = matches.get(index)
            track = self._start(detected[index], time) if row is None else self._tracks[row]
            results.append(self._output(pose, track, time))
        self._tracks = [track for track in self._tracks if self._alive(track, time)]
        self._first_frame = False
        return results

    def _predicted(self, time: float) -> tuple[np.ndarray, np.ndarray]:
        """Every track at ``time``: ``(T, 17, 3)`` predicted poses and ``(T,)`` tolerance
        spreads (wider the longer a track went unseen)."""
        c = self.config
        predicted = np.array([track.predicted(time, c.lost_seconds) for track in self._tracks])
        unseen = np.array([max(time - track.time, 0.0) for track in self._tracks])  # (T,) s
        return predicted, 1.0 + c.spread_per_second * np.minimum(unseen, c.lost_seconds)

    def _match_shown(
        self, detected: np.ndarray, predicted: np.ndarray, spread: np.ndarray
    ) -> dict[int, int]:
        """Match the ``(P, 17, 3)`` shown people to the tracks (``predicted`` ``(T, 17, 3)``,
        ``spread`` ``(T,)``); returns pose index → track index.

        Tracks seen in the previous frame choose first, then lost tracks, then unconfirmed
        ones, each group greedily by similarity.
        """
        if not len(detected) or not self._tracks:
            return {}
        scores = pose_similarity(predicted, detected, spread, self.config)  # (T, P)
        confirmed = [track.track_id is not None for track in self._tracks]
        groups = (
            [i for i, t in enumerate(self._tracks) if confirmed[i] and t.missed == 1],
            [i for i, t in enumerate(self._tracks) if confirmed[i] and t.missed > 1],
            [i for i in range(len(self._tracks)) if not confirmed[i]],
        )
        matches: dict[int, int] = {}
        for rows in groups:
            free = [index for index in range(len(detected)) if index not in matches]
            if rows and free:
                pairs = greedy_match(scores[np.ix_(rows, free)], self.config.min_similarity)
                matches.update((free[column], rows[row]) for row, column in pairs)
        return matches

    def _new_candidates(self, candidates: np.ndarray, detected: np.ndarray) -> np.ndarray:
        """The ``(C, 17, 3)`` candidates that are not one of the ``(P, 17, 3)`` people shown
        (a decoding at a lower threshold finds those again)."""
        if not len(candidates) or not len(detected):
            return candidates
        duplicate = pose_similarity(detected, candidates, 1.0, self.config).max(axis=0)  # (C,)
        return candidates[duplicate < self.config.duplicate_similarity]

    def _match_candidates(
        self,
        candidates: np.ndarray,
        predicted: np.ndarray,
        spread: np.ndarray,
        taken: set[int],
        time: float,
    ) -> None:
        """Let the ``(C, 17, 3)`` low-score candidates continue the confirmed tracks not in
        ``taken`` (indices of the tracks a shown person matched); ``predicted`` and ``spread``:
        every track's, ``(T, 17, 3)`` and ``(T,)``."""
        tracks = enumerate(self._tracks)
        rows = [i for i, track in tracks if track.track_id is not None and i not in taken]
        if not rows or not len(candidates):
            return
        scores = pose_similarity(predicted[rows], candidates, spread[rows], self.config)
        for row, column in greedy_match(scores, self.config.candidate_similarity):
            self._observe(self._tracks[rows[row]], candidates[column], time, shown=False)

    def _alive(self, track: _Track, time: float) -> bool:
        """Confirmed tracks live ``lost_seconds`` unseen; unconfirmed ones end when missed."""
        if track.track_id is None:
            return track.missed == 0
        return time - track.time <= self.config.lost_seconds + 1e-9

    def _start(self, keypoints: np.ndarray, time: float) -> _Track:
        """A new track from a ``(17, 3)`` shown person no track matched."""
        smoother = None
        if self.config.smooth:
            c = self.config
            smoother = OneEuroFilter(c.min_cutoff, c.beta, c.d_cutoff, NUM_COCO_KEYPOINTS)
        seen = np.where(keypoints[:, 2] > 0, time, -np.inf)
        track = _Track(None, keypoints.copy(), seen, time, smoother=smoother)
        if self._first_frame or self.config.min_hits <= 1:
            self._confirm(track)
        self._tracks.append(track)
        return track

    def _confirm(self, track: _Track) -> None:
        track.track_id = self._next_id
        self._next_id += 1
        logger.debug("track %d confirmed at %.3f s", track.track_id, track.time)

    def _observe(self, track: _Track, keypoints: np.ndarray, time: float, shown: bool) -> None:
        """Update ``track`` with a ``(17, 3)`` detection at ``time``: velocity, then template.

        The velocity is measured on the keypoints detected both now and at the track's last
        detection, and capped at ``max_speed`` box heights per second. ``shown``: a shown
        person (it counts toward ``min_hits``), not a low-score candidate.
        """
        c = self.config
        elapsed = time - track.time
        if track.track_id is not None and track.missed > 1:
            logger.debug("track %d found again after %.2f s", track.track_id, elapsed)
        found = keypoints[:, 2] > 0
        both = found & (track.seen >= track.time)
        if elapsed > 0 and both.any():
            shift = (keypoints[both, :2] - track.keypoints[both, :2]).mean(axis=0)
            velocity = c.velocity_blend * shift / elapsed + (1 - c.velocity_blend) * track.velocity
            limit = c.max_speed * max(_box_height(track.keypoints), _box_height(keypoints), 1.0)
            speed = math.hypot(velocity[0], velocity[1])
            track.velocity = velocity * (limit / speed) if speed > limit else velocity
        remembered = ~found & (track.seen >= time - c.memory_seconds)
        template = keypoints.copy()
        template[remembered] = track.keypoints[remembered]
        template[remembered, :2] += track.velocity * max(elapsed, 0.0)
        seen = track.seen.copy()
        seen[found] = time
        seen[~found & ~remembered] = -np.inf
        track.keypoints, track.seen = template, seen
        track.time, track.missed = time, 0
        if shown:
            track.hits += 1
            if track.track_id is None and track.hits >= c.min_hits:
                self._confirm(track)

    @staticmethod
    def _output(pose: Pose, track: _Track, time: float) -> Pose:
        track.score = pose.score
        keypoints = pose.keypoints
        if track.smoother is not None:
            keypoints = keypoints.copy()
            present = keypoints[:, 2] > 0
            keypoints[:, :2] = track.smoother(keypoints[:, :2], present, time)
        return replace(pose, keypoints=keypoints, track_id=track.track_id)


def _keypoints(poses: Sequence[Pose]) -> np.ndarray:
    """``(N, 17, 3)`` float64 keypoints of ``poses``."""
    if not poses:
        return np.zeros((0, NUM_COCO_KEYPOINTS, 3))
    return np.array([pose.keypoints for pose in poses], dtype=np.float64)


def _box_height(keypoints: np.ndarray) -> float:
    """Height in pixels of the found keypoints of one ``(17, 3)`` pose (0 if none)."""
    ys = keypoints[keypoints[:, 2] > 0, 1]
    return float(np.ptp(ys)) if len(ys) else 0.0
