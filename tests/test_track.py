"""Tracking: OKS, greedy matching, ids through crossings, gaps and low-score detections,
One-Euro smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from posecli.config import TrackerConfig
from posecli.pose import Pose
from posecli.track import (
    OneEuroFilter,
    Tracker,
    greedy_match,
    oks_matrix,
    pose_similarity,
)

FPS = 10.0


def test_oks_matrix(skeleton) -> None:
    person = skeleton(100, 100, 150)
    near = skeleton(104, 100, 150)
    far = skeleton(400, 100, 150)
    scores = oks_matrix(np.stack([person]), np.stack([person, near, far]))
    assert scores.shape == (1, 3)
    assert scores[0, 0] == pytest.approx(1.0)
    assert 0.3 < scores[0, 1] < 1.0
    assert scores[0, 2] < 1e-6
    half = person.copy()
    half[8:, 2] = 0  # only the upper body found
    assert oks_matrix(person[None], half[None])[0, 0] == pytest.approx(8 / 17)
    assert oks_matrix(np.zeros((0, 17, 3)), person[None]).shape == (0, 1)


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


def test_missed_detections_keep_the_id_within_lost_seconds(skeleton) -> None:
    frames = _walk(skeleton, 12, [(100, 8, 150), (400, -5, 150)])
    tracker = Tracker(TrackerConfig(lost_seconds=0.3))
    ids = []
    for step, poses in enumerate(frames):
        shown = poses if step not in (4, 5) else poses[1:]  # person 0 missing for 2 frames
        ids.append([pose.track_id for pose in tracker.update(shown, step / FPS)])
    assert ids[3] == [1, 2] and ids[4] == [2] and ids[6] == [1, 2] and ids[-1] == [1, 2]


def test_ids_are_new_after_lost_seconds_and_never_reused(skeleton) -> None:
    tracker = Tracker(TrackerConfig(lost_seconds=0.25, min_hits=1))
    person = Pose(skeleton(100, 200, 150), 0.9)
    assert tracker.update([person], 0.0)[0].track_id == 1
    for step in range(1, 4):
        assert tracker.update([], step / FPS) == []
    assert tracker.update([person], 0.4)[0].track_id == 2  # gone for 0.4 > 0.25 s
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


# ---------------------------------------------------------------------------------------------
# Tracks that hold: gaps of most of a second, occluded crossings, low-score candidates


def _ids(tracked: list[Pose]) -> list[int | None]:
    return [pose.track_id for pose in tracked]


@pytest.mark.parametrize("fps", [30.0, 10.0, 10.0 / 3])  # 10/3: a 10 fps video with --every 3
def test_a_person_missed_for_most_of_a_second_keeps_their_id(skeleton, fps: float) -> None:
    tracker = Tracker()
    speed = 60.0 / fps  # px per frame: 60 px/s whatever the frame rate
    gap = range(round(0.3 * fps), round(0.9 * fps))  # frames where person 0 is not detected
    for step in range(round(1.5 * fps)):
        poses = [Pose(skeleton(100 + speed * step, 200, 150), 0.9)]
        poses.append(Pose(skeleton(600, 200, 150), 0.9))
        shown = poses[1:] if step in gap else poses
        ids = _ids(tracker.update(shown, step / fps))
        assert ids == ([2] if step in gap else [1, 2])


def test_a_track_ends_after_lost_seconds_of_video_time(skeleton) -> None:
    fps = 30.0
    tracker = Tracker(TrackerConfig(lost_seconds=1.0))
    person = Pose(skeleton(100, 200, 150), 0.9)
    assert _ids(tracker.update([person], 0.0)) == [1]
    for step in range(1, 40):  # 1.3 s without them
        assert tracker.update([], step / fps) == []
    assert _ids(tracker.update([person], 40 / fps)) == [None]  # a new person: not yet confirmed
    assert _ids(tracker.update([person], 41 / fps)) == [2]


@pytest.mark.parametrize("heights", [(160.0, 160.0), (150.0, 180.0)])
def test_people_crossing_behind_each_other_keep_their_ids(skeleton, heights) -> None:
    rng = np.random.default_rng(3)
    # Two people walk toward each other at 5 px/frame (10 fps); for 8 frames around the
    # crossing only the one in front (the taller, nearer) is detected.
    frames = _walk(skeleton, 40, [(130, 5, heights[0]), (330, -5, heights[1])], rng=rng)
    front = int(np.argmax(heights))
    ids: dict[int, set[int | None]] = {0: set(), 1: set()}
    tracker = Tracker()
    for step, poses in enumerate(frames):
        people = [front] if 16 <= step < 24 else list(rng.permutation(2))
        tracked = tracker.update([poses[i] for i in people], step / FPS)
        for person, pose in zip(people, tracked, strict=True):
            ids[person].add(pose.track_id)
    assert ids[0] == {1} and ids[1] == {2}


def test_partial_detections_continue_the_track(skeleton) -> None:
    tracker = Tracker()
    for step in range(20):  # whole, upper body only, legs only, whole…
        keypoints = skeleton(100 + 6 * step, 200, 150)
        if step % 3 == 1:
            keypoints[11:] = 0.0
        elif step % 3 == 2:
            keypoints[:11] = 0.0
        assert _ids(tracker.update([Pose(keypoints, 0.9)], step / FPS)) == [1]


def test_low_score_candidates_continue_a_track_but_never_start_one(skeleton) -> None:
    tracker = Tracker(TrackerConfig(lost_seconds=1.0))

    def walker(step: int) -> Pose:
        return Pose(skeleton(100 + 8 * step, 200, 150), 0.9)

    for step in range(5):
        assert _ids(tracker.update([walker(step)], step / FPS)) == [1]
    # For 2 s (longer than lost_seconds) the walker is only found below the score threshold,
    # and so is a stranger, who is never shown and must not take an id.
    for step in range(5, 25):
        stranger = Pose(skeleton(600, 200, 150), 0.3)
        assert tracker.update([], step / FPS, candidates=[walker(step), stranger]) == []
    assert _ids(tracker.update([walker(25)], 2.5)) == [1]  # continued through the candidates
    stranger = Pose(skeleton(600, 200, 150), 0.9)
    assert _ids(tracker.update([walker(26), stranger], 2.6)) == [1, None]
    assert _ids(tracker.update([walker(27), stranger], 2.7)) == [1, 2]  # the next id: 2


def test_candidates_neither_confirm_new_people_nor_double_the_people_shown(skeleton) -> None:
    tracker = Tracker()
    first = Pose(skeleton(100, 200, 150), 0.9)
    newcomer = Pose(skeleton(400, 200, 150), 0.9)
    assert _ids(tracker.update([first], 0.0)) == [1]
    assert _ids(tracker.update([first, newcomer], 0.1)) == [1, None]
    # The newcomer only as a candidate: not seen, so not 2 frames in a row; the candidates'
    # decoding also holds the person shown, who is not matched twice.
    assert _ids(tracker.update([first], 0.2, candidates=[first, newcomer])) == [1]
    assert _ids(tracker.update([first, newcomer], 0.3)) == [1, None]
    assert _ids(tracker.update([first, newcomer], 0.4)) == [1, 2]


def test_ids_are_never_reused_as_people_come_and_go(skeleton) -> None:
    fps = 25.0
    # (x, first and last frame) of each person's visits; a visit that starts within 1 s of the
    # same person's last one continues their track, a later one is a new track.
    visits = {0: [(0, 40), (55, 90), (130, 160)], 1: [(10, 30), (70, 160)], 2: [(20, 100)]}
    tracker = Tracker(TrackerConfig(lost_seconds=1.0))
    seen: dict[tuple[int, int], set[int | None]] = {}
    for step in range(161):
        people = [p for p, spans in visits.items() if any(a <= step <= b for a, b in spans)]
        poses = [Pose(skeleton(100 + 250 * p, 200, 150), 0.9) for p in people]
        for person, pose in zip(people, tracker.update(poses, step / fps), strict=True):
            visit = next(i for i, (a, b) in enumerate(visits[person]) if a <= step <= b)
            seen.setdefault((person, visit), set()).add(pose.track_id)
    named = {key: ids - {None} for key, ids in seen.items()}
    assert all(len(ids) == 1 for ids in named.values())  # one id per visit
    # Person 0's second visit (0.6 s later) continues the first; their third (1.6 s) does not,
    # nor does person 1's second (1.6 s). First frame: ids at once; later people: after 2 frames.
    assert named == {
        (0, 0): {1}, (0, 1): {1}, (0, 2): {5}, (1, 0): {2}, (1, 1): {4}, (2, 0): {3},
    }  # fmt: skip
    assert seen[(0, 0)] == {1} and seen[(1, 1)] == {None, 4}


def test_pose_similarity_compares_the_keypoints_both_have(skeleton) -> None:
    person = skeleton(100, 200, 150)
    upper = person.copy()
    upper[11:] = 0.0  # 11 keypoints
    two = person.copy()
    two[2:] = 0.0
    far = skeleton(400, 200, 150)
    scores = pose_similarity(person[None], np.stack([person, upper, two, far]))
    assert scores[0, 0] == pytest.approx(1.0) and scores[0, 1] == pytest.approx(1.0)
    assert scores[0, 2] == pytest.approx(2 / TrackerConfig().min_common)  # few shared points
    assert scores[0, 3] < 1e-6
    near = skeleton(110, 200, 150)
    tight = pose_similarity(person[None], near[None], np.array([1.0]))
    wide = pose_similarity(person[None], near[None], 2.0)
    assert 0 < tight[0, 0] < wide[0, 0] < 1  # a track unseen for longer has a wider tolerance
    assert pose_similarity(np.zeros((0, 17, 3)), person[None]).shape == (0, 1)


# ---------------------------------------------------------------------------------------------
# In the pipeline: candidates come from a second decoding below the run's threshold


class _Recording(Tracker):
    """A Tracker that keeps the candidates it was given, per frame."""

    def __init__(self, config: TrackerConfig) -> None:
        super().__init__(config)
        self.candidates: list[list[Pose]] = []

    def update(self, poses, time, candidates=()):
        self.candidates.append(list(candidates))
        return super().update(poses, time, candidates)


def test_the_pipeline_hands_low_score_people_to_the_tracker_and_shows_the_others() -> None:
    torch = pytest.importorskip("torch")
    from tiny_model import TINY_CONFIG

    from posecli.assemble import build_estimator
    from posecli.config import DecodeConfig, InferenceConfig
    from posecli.estimator import decode_heatmaps
    from posecli.io.sources import SourceFrame
    from posecli.model import build_network
    from posecli.networks import PoseModel
    from posecli.pipeline import candidate_decode_config, run_pipeline

    torch.manual_seed(0)
    model = PoseModel.from_network(build_network(TINY_CONFIG), TINY_CONFIG)
    # A random network's heatmaps are noise (under 0.01): at these thresholds a few of its
    # people are shown and some 50 per image are candidates.
    decode = DecodeConfig(peak_threshold=0.001, part_threshold=-1.0, min_mean_part_score=0.004)
    estimator = build_estimator(model, InferenceConfig(box_size=64, device="cpu"), decode)
    tracker = _Recording(TrackerConfig(candidate_min_score=0.002))
    floor = candidate_decode_config(estimator, tracker)
    assert floor == DecodeConfig(peak_threshold=0.001, part_threshold=-1.0,
                                 min_mean_part_score=0.002)  # fmt: skip
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8) for _ in range(3)]
    shown: list[list[Pose]] = []
    source = [SourceFrame(image=image, index=i, time=i / 10) for i, image in enumerate(images)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # test runs share the machine's cores
    try:
        run_pipeline(source, estimator, [lambda frame, image: shown.append(frame.poses)],
                     tracker=tracker)  # fmt: skip
        maps = [estimator.heatmaps([image])[0] for image in images]
    finally:
        torch.set_num_threads(threads)
    for heatmaps, poses, candidates in zip(maps, shown, tracker.candidates, strict=True):
        expected = estimator.poses(heatmaps)  # the people at the run's threshold: only they shown
        assert [p.score for p in poses] == pytest.approx([p.score for p in expected])
        low = decode_heatmaps(heatmaps, floor)
        assert [p.score for p in candidates] == pytest.approx([p.score for p in low])
    assert 0 < sum(map(len, shown)) < sum(map(len, tracker.candidates))
    # No candidates where the run's threshold is already as low, or for a stand-in estimator.
    low_run = build_estimator(model, InferenceConfig(box_size=64, device="cpu"),
                        DecodeConfig(min_mean_part_score=0.002))  # fmt: skip
    assert candidate_decode_config(low_run, tracker) is None
    # A person-score threshold (--min-score) drops people the candidates' decoding keeps.
    by_score = build_estimator(model, InferenceConfig(box_size=64, device="cpu"),
                         DecodeConfig(min_mean_part_score=0.001, min_person_score=0.5))  # fmt: skip
    assert candidate_decode_config(by_score, tracker) == DecodeConfig(
        min_mean_part_score=0.001, min_person_score=0.5
    )
    assert candidate_decode_config(object(), tracker) is None
    assert candidate_decode_config(estimator, object()) is None


def test_followed_people_are_the_tracks_seen_last_moved_by_their_velocity(skeleton) -> None:
    tracker = Tracker(TrackerConfig(min_hits=2))
    walker, stranger = _walk(skeleton, 3, [(100.0, 10.0, 150.0)]), skeleton(400, 200, 150)
    tracker.update([walker[0][0], Pose(stranger, 0.5)], 0.0)
    tracker.update([walker[1][0]], 1 / FPS)  # the stranger is lost, not followed
    followed = tracker.followed(2 / FPS)
    assert [(p.track_id, p.score) for p in followed] == [(1, 0.9)]
    assert followed[0].keypoints.dtype == np.float32
    # velocity 100 px/s, blended with 0 (velocity_blend 0.5): 50 px/s × 0.1 s ahead
    np.testing.assert_allclose(followed[0].keypoints[:, 0], walker[1][0].keypoints[:, 0] + 5)
    newcomer = Pose(skeleton(700, 200, 150), 0.4)
    assert tracker.update([walker[2][0], newcomer], 2 / FPS)[1].track_id is None
    followed = tracker.followed(3 / FPS)  # unconfirmed people are followed too, to be confirmed
    assert [(p.track_id, p.score) for p in followed] == [(1, 0.9), (None, 0.4)]
