"""Tracking: OKS, greedy matching, ids through crossings and gaps, One-Euro smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from posecli.pose import Pose
from posecli.track import (
    OneEuroFilter,
    Tracker,
    TrackerConfig,
    greedy_match,
    keypoint_similarity,
)

FPS = 10.0


def test_keypoint_similarity(skeleton) -> None:
    person = skeleton(100, 100, 150)
    near = skeleton(104, 100, 150)
    far = skeleton(400, 100, 150)
    scores = keypoint_similarity(np.stack([person]), np.stack([person, near, far]))
    assert scores.shape == (1, 3)
    assert scores[0, 0] == pytest.approx(1.0)
    assert 0.3 < scores[0, 1] < 1.0
    assert scores[0, 2] < 1e-6
    half = person.copy()
    half[8:, 2] = 0  # only the upper body found
    assert keypoint_similarity(person[None], half[None])[0, 0] == pytest.approx(8 / 17)
    assert keypoint_similarity(np.zeros((0, 17, 3)), person[None]).shape == (0, 1)


def test_greedy_match_takes_the_best_pairs_first() -> None:
    scores = np.array([[0.9, 0.8], [0.85, 0.1], [0.05, 0.05]])
    assert greedy_match(scores, threshold=0.2) == [(0, 0)]  # (1, 1) is below the threshold
    assert greedy_match(scores, threshold=0.05) == [(0, 0), (1, 1)]  # each row/column once
    assert greedy_match(np.zeros((0, 3)), 0.1) == []


def _walk(skeleton, steps: int, people: list[tuple[float, float, float]], rng=None):
    """Frames of poses: each person is (start x, x speed in px/frame, height)."""
    frames = []
    for step in range(steps):
        poses = []
        for start, speed, height in people:
            keypoints = skeleton(start + speed * step, 200.0, height)
            if rng is not None:
                keypoints[:, :2] += rng.normal(0, 1.0, size=(17, 2))
            poses.append(Pose(keypoints, score=0.9))
        frames.append(poses)
    return frames


@pytest.mark.parametrize("heights", [(160.0, 160.0), (160.0, 190.0)])
def test_crossing_people_keep_their_ids(skeleton, heights: tuple[float, float]) -> None:
    rng = np.random.default_rng(0)
    # Two people walk toward each other at 12 px/frame, meet at x = 220 at step 10, walk on.
    frames = _walk(skeleton, 21, [(100, 12, heights[0]), (340, -12, heights[1])], rng=rng)
    tracker = Tracker()
    ids_by_direction: dict[str, set[int]] = {"right": set(), "left": set()}
    for step, poses in enumerate(frames):
        order = rng.permutation(2)  # the detector's order carries no identity
        tracked = tracker.update([poses[i] for i in order], step / FPS)
        for i, pose in zip(order, tracked, strict=True):
            ids_by_direction["right" if i == 0 else "left"].add(pose.track_id)
    # One id per person for the whole walk, and not the same one.
    assert sorted(map(len, ids_by_direction.values())) == [1, 1]
    assert ids_by_direction["right"] != ids_by_direction["left"]


def test_missed_detections_keep_the_id_within_max_age(skeleton) -> None:
    frames = _walk(skeleton, 12, [(100, 8, 150), (400, -5, 150)])
    tracker = Tracker(TrackerConfig(max_age=3))
    ids = []
    for step, poses in enumerate(frames):
        shown = poses if step not in (4, 5) else poses[1:]  # person 0 missing for 2 frames
        ids.append([pose.track_id for pose in tracker.update(shown, step / FPS)])
    assert ids[3] == [1, 2] and ids[4] == [2] and ids[6] == [1, 2] and ids[-1] == [1, 2]


def test_ids_are_new_after_max_age_and_never_reused(skeleton) -> None:
    tracker = Tracker(TrackerConfig(max_age=2, min_hits=1))
    person = Pose(skeleton(100, 200, 150), 0.9)
    assert tracker.update([person], 0.0)[0].track_id == 1
    for step in range(1, 4):
        assert tracker.update([], step / FPS) == []
    assert tracker.update([person], 0.4)[0].track_id == 2  # gone for 3 > 2 frames
    newcomer = Pose(skeleton(500, 200, 150), 0.9)
    assert [p.track_id for p in tracker.update([person, newcomer], 0.5)] == [2, 3]
    tracker.reset()
    assert tracker.update([person], 0.6)[0].track_id == 4


def test_new_people_get_an_id_after_min_hits_frames(skeleton) -> None:
    tracker = Tracker(TrackerConfig(min_hits=2))
    walker = Pose(skeleton(100, 200, 150), 0.9)
    flicker = Pose(skeleton(400, 200, 150), 0.5)
    newcomer = Pose(skeleton(700, 200, 150), 0.8)
    assert [p.track_id for p in tracker.update([walker], 0.0)] == [1]  # first frame: at once
    assert [p.track_id for p in tracker.update([walker, flicker], 0.1)] == [1, None]
    assert [p.track_id for p in tracker.update([walker, newcomer], 0.2)] == [1, None]
    # The flicker was missed once, so it starts over; the newcomer is confirmed and takes id 2.
    assert [p.track_id for p in tracker.update([walker, newcomer, flicker], 0.3)] == [1, 2, None]
    assert [p.track_id for p in tracker.update([flicker], 0.4)] == [3]
    tracker.reset()
    assert [p.track_id for p in tracker.update([newcomer], 0.5)] == [4]  # first frame again


def test_tracker_returns_new_poses(skeleton) -> None:
    pose = Pose(skeleton(100, 200, 150), 0.7)
    (tracked,) = Tracker().update([pose], 0.0)
    assert pose.track_id is None and tracked.track_id == 1
    assert tracked.score == 0.7 and np.array_equal(tracked.keypoints, pose.keypoints)


def test_one_euro_reduces_jitter_on_a_still_keypoint() -> None:
    rng = np.random.default_rng(1)
    still = np.array([[50.0, 80.0]])
    smoother = OneEuroFilter(min_cutoff=1.0, beta=0.05, d_cutoff=1.0, count=1)
    raw, smooth = [], []
    for step in range(200):
        observed = still + rng.normal(0, 2.0, size=(1, 2))
        raw.append(observed[0])
        smooth.append(smoother(observed, np.array([True]), step / 30)[0])
    raw_error = np.linalg.norm(np.array(raw[20:]) - still, axis=1).std()
    smooth_error = np.linalg.norm(np.array(smooth[20:]) - still, axis=1).std()
    assert smooth_error < 0.5 * raw_error


def test_one_euro_follows_fast_motion_and_resets_on_disappearance() -> None:
    smoother = OneEuroFilter(min_cutoff=1.0, beta=0.05, d_cutoff=1.0, count=2)
    present = np.array([True, True])
    for step in range(30):  # keypoint 0 moves at 300 px/s, keypoint 1 is still
        points = np.array([[10.0 * step, 0.0], [5.0, 5.0]])
        out = smoother(points, present, step / 30)
    assert abs(out[0, 0] - 290.0) < 15.0  # lags by under 1.5 frames at speed
    gone = smoother(np.array([[0.0, 0.0], [5.0, 5.0]]), np.array([False, True]), 1.0)
    assert gone[0].tolist() == [0.0, 0.0]
    back = smoother(np.array([[500.0, 500.0], [5.0, 5.0]]), present, 1.0 + 1 / 30)
    assert back[0].tolist() == [500.0, 500.0]  # restarted, not pulled toward the old place


def test_tracker_smoothing_keeps_confidences_and_missing_points(skeleton) -> None:
    rng = np.random.default_rng(2)
    tracker = Tracker(TrackerConfig(smooth=True))
    base = skeleton(200, 200, 150)
    base[3] = 0.0  # left ear never found
    raw, smooth = [], []
    for step in range(60):
        keypoints = base.copy()
        keypoints[:, :2] += rng.normal(0, 2.0, size=(17, 2)) * (base[:, 2:] > 0)
        (tracked,) = tracker.update([Pose(keypoints, 0.9)], step / 30)
        assert tracked.track_id == 1
        assert np.array_equal(tracked.keypoints[:, 2], base[:, 2])
        assert tracked.keypoints[3].tolist() == [0.0, 0.0, 0.0]
        raw.append(keypoints[:, :2])
        smooth.append(tracked.keypoints[:, :2])
    raw_jitter = np.std(np.array(raw[10:]), axis=0).mean()
    smooth_jitter = np.std(np.array(smooth[10:]), axis=0).mean()
    assert smooth_jitter < 0.6 * raw_jitter
