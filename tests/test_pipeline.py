"""The streaming pipeline: order, batching, tracking, bounded memory, failures and interrupts.

A stand-in estimator makes the runs fast and the poses predictable: frame ``i`` is an image
filled with the value ``i``, and its one person stands at ``x = 10 + i`` (so a tracker keeps
one id). One test runs the real Estimator with a tiny random network.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from tiny_model import TINY_CONFIG

from posecli.assemble import build_estimator
from posecli.config import DecodeConfig, InferenceConfig
from posecli.errors import InputError, OutputError
from posecli.io.sinks import CocoResultsSink
from posecli.io.sources import SourceFrame
from posecli.model import build_network
from posecli.networks import PoseModel
from posecli.pipeline import PipelineProgress, run_pipeline
from posecli.pose import Frame, Pose
from posecli.track import Tracker


def frames(count: int, *, fail_at: int | None = None, error: BaseException | None = None):
    """Frames 0..count-1 (image value = index mod 256); ``error`` raised at ``fail_at``."""
    for index in range(count):
        if index == fail_at:
            raise error or InputError("corrupt frame")
        image = np.full((8, 12, 3), index % 256, dtype=np.uint8)
        yield SourceFrame(image=image, index=index, time=index / 10)


def person_at(x: float) -> Pose:
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[:, 0] = x + np.arange(17)
    keypoints[:, 1] = 5 + np.arange(17) * 3
    keypoints[:, 2] = 0.9
    return Pose(keypoints=keypoints, score=0.8)


@dataclass
class StandInHeatmaps:
    value: int


class StandInEstimator:
    """Heatmaps = the image's value; poses = one person at ``x = 10 + value``.

    ``interrupt_at``: ``heatmaps`` raises KeyboardInterrupt when that frame comes (a Ctrl-C
    during inference); ``fail_decode_at``: ``poses`` raises for that frame.
    """

    def __init__(
        self,
        batch_size: int = 1,
        *,
        delay: float = 0.0,
        interrupt_at: int | None = None,
        fail_decode_at: int | None = None,
    ) -> None:
        self.config = InferenceConfig(batch_size=batch_size)
        self.delay = delay
        self.interrupt_at = interrupt_at
        self.fail_decode_at = fail_decode_at
        self.batches: list[int] = []

    def heatmaps(self, images: list[np.ndarray]) -> list[StandInHeatmaps]:
        values = [int(image[0, 0, 0]) for image in images]
        if self.interrupt_at in values:
            raise KeyboardInterrupt
        time.sleep(self.delay)
        self.batches.append(len(images))
        return [StandInHeatmaps(value) for value in values]

    def poses(self, heatmaps: StandInHeatmaps, image: np.ndarray | None = None) -> list[Pose]:
        assert image is not None  # the pipeline hands each frame's image over (for --refine)
        if heatmaps.value == self.fail_decode_at:
            raise ValueError("decoder exploded")
        return [person_at(10 + heatmaps.value)]


class Recorder:
    """A sink that keeps what it was given."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.images: list[np.ndarray] = []

    def __call__(self, frame: Frame, image: np.ndarray) -> None:
        self.frames.append(frame)
        self.images.append(image)

    @property
    def indices(self) -> list[int]:
        return [frame.index for frame in self.frames]


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Every test must end with its pipeline threads gone."""
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("pipeline-")]
        if not alive:
            return
        time.sleep(0.01)
    pytest.fail(f"pipeline threads still running: {alive}")


def test_frames_reach_the_sinks_in_order_with_batches_and_progress() -> None:
    estimator = StandInEstimator(batch_size=4)
    first, second = Recorder(), Recorder()
    updates: list[PipelineProgress] = []
    stats = run_pipeline(frames(10), estimator, [first, second], total=10, progress=updates.append)
    assert stats.frames == 10 and stats.dropped == 0 and stats.fps > 0
    assert first.indices == second.indices == list(range(10))
    assert [frame.time for frame in first.frames] == pytest.approx([i / 10 for i in range(10)])
    assert [(frame.width, frame.height) for frame in first.frames] == [(12, 8)] * 10
    for frame in first.frames:
        assert frame.poses[0].keypoints[0, 0] == 10 + frame.index
        assert frame.poses[0].track_id is None  # no tracker: still images
    assert sum(estimator.batches) == 10 and max(estimator.batches) <= 4
    assert [u.frames for u in updates] == list(range(1, 11))
    assert {u.total for u in updates} == {10}
    assert [u.frame.index for u in updates] == list(range(10))


def test_tracker_and_drawing_are_applied() -> None:
    sink = Recorder()

    def draw(image: np.ndarray, poses) -> np.ndarray:
        drawn = image.copy()
        drawn[0, 0] = [255, 0, len(poses)]
        return drawn

    run_pipeline(frames(6), StandInEstimator(), [sink], tracker=Tracker(), draw=draw)
    assert [frame.poses[0].track_id for frame in sink.frames] == [1] * 6
    assert all(image[0, 0].tolist() == [255, 0, 1] for image in sink.images)


def test_coco_results_use_the_image_ids_the_frames_carry() -> None:
    ids = [139, 785, 1000]
    source = [replace(frame, image_id=ids[frame.index]) for frame in frames(3)]
    collector = CocoResultsSink(None)  # in memory only
    run_pipeline(source, StandInEstimator(), [collector])
    results = collector.results
    assert [entry["image_id"] for entry in results] == [139, 785, 1000]
    assert results[1]["keypoints"][:3] == pytest.approx([11.0, 5.0, 0.9])


def test_a_source_error_keeps_the_frames_before_it() -> None:
    sink = Recorder()
    with pytest.raises(InputError, match="corrupt frame"):
        run_pipeline(frames(20, fail_at=7), StandInEstimator(batch_size=3), [sink])
    assert sink.indices == list(range(7))


def test_keyboard_interrupt_from_the_source_finishes_the_frames_read() -> None:
    sink = Recorder()
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(frames(20, fail_at=5, error=KeyboardInterrupt()), StandInEstimator(), [sink])
    assert sink.indices == list(range(5))


def test_ctrl_c_during_inference_writes_the_frames_already_inferred() -> None:
    sink = Recorder()
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(frames(1000), StandInEstimator(interrupt_at=9), [sink])
    assert sink.indices == list(range(9))


@pytest.mark.parametrize("stage", ["inference", "decoding", "sink"])
def test_a_failing_stage_stops_the_run_and_raises(stage: str) -> None:
    read = []

    def counted():
        for frame in frames(100_000):
            read.append(frame.index)
            yield frame

    def sink(frame: Frame, image: np.ndarray) -> None:
        if stage == "sink" and frame.index == 4:
            raise OutputError("disk full")

    estimator = StandInEstimator(fail_decode_at=4 if stage == "decoding" else None)
    if stage == "inference":
        estimator.heatmaps = lambda images: (_ for _ in ()).throw(RuntimeError("out of memory"))
    expected = {"inference": RuntimeError, "decoding": ValueError, "sink": OutputError}[stage]
    with pytest.raises(expected):
        run_pipeline(counted(), estimator, [sink], queue_size=2)
    assert len(read) < 100  # stopped promptly, not after reading the whole source


def test_memory_is_bounded_by_the_queues() -> None:
    """A stalled sink holds back the reader: frames in flight stay below a fixed bound."""
    read, release = [], threading.Event()

    def counted():
        for frame in frames(300):
            read.append(frame.index)
            yield frame

    def stalled(frame: Frame, image: np.ndarray) -> None:
        release.wait(timeout=10)

    runner = threading.Thread(
        target=run_pipeline,
        args=(counted(), StandInEstimator(), [stalled]),
        kwargs={"queue_size": 2},
    )
    runner.start()
    time.sleep(0.5)
    in_flight = len(read)
    release.set()
    runner.join(timeout=30)
    assert not runner.is_alive()
    # 3 queues of 2, one frame in each of the 3 stage threads, one held by the reader, 1 batch
    assert in_flight <= 3 * 2 + 3 + 1 + 1
    assert len(read) == 300


def test_latency_first_drops_stale_frames() -> None:
    def camera():
        for frame in frames(60):
            time.sleep(0.002)
            yield frame

    sink = Recorder()
    stats = run_pipeline(camera(), StandInEstimator(delay=0.02), [sink], latency_first=True)
    assert stats.dropped > 0
    assert stats.frames + stats.dropped == 60
    assert sink.indices == sorted(set(sink.indices))
    assert sink.indices[-1] == 59  # the newest frame is never the one dropped at the end


def test_stop_event_ends_an_endless_source() -> None:
    stop = threading.Event()

    def endless():
        index = 0
        while True:
            yield SourceFrame(np.zeros((8, 12, 3), np.uint8), index, index / 30)
            index += 1

    def quit_after_three(frame: Frame, image: np.ndarray) -> None:
        if frame.index == 2:
            stop.set()

    stats = run_pipeline(endless(), StandInEstimator(), [quit_after_three], stop=stop, queue_size=2)
    assert 3 <= stats.frames <= 3 + 3 * 2 + 3


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Test runs share the machine's cores: one torch thread avoids contention (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_real_estimator_gives_the_same_poses_as_predict(one_torch_thread: None) -> None:
    torch.manual_seed(0)
    model = PoseModel.from_network(build_network(TINY_CONFIG), TINY_CONFIG)
    # thresholds low enough that the noise of a random network gives people to compare
    decode = DecodeConfig(peak_threshold=0.001, part_threshold=-1.0, min_mean_part_score=0.0)
    estimator = build_estimator(
        model, InferenceConfig(box_size=64, device="cpu", batch_size=2), decode
    )
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8) for _ in range(5)]
    source = [SourceFrame(image=image.copy(), index=i, time=0.0) for i, image in enumerate(images)]
    sink = Recorder()
    run_pipeline(source, estimator, [sink])
    expected = estimator.predict(images)
    assert sink.indices == list(range(5))
    assert all(len(poses) > 0 for poses in expected)
    for frame, poses in zip(sink.frames, expected, strict=True):
        assert len(frame.poses) == len(poses)
        for got, want in zip(frame.poses, poses, strict=True):
            np.testing.assert_allclose(got.keypoints, want.keypoints, rtol=1e-5, atol=1e-4)


class ScriptedClock:
    """Stands in for the pipeline's ``time`` module: time moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


def test_fps_is_frames_over_the_seconds_to_the_last_frame_written(monkeypatch) -> None:
    import posecli.pipeline

    clock = ScriptedClock()
    monkeypatch.setattr(posecli.pipeline, "time", clock)

    class Timed(StandInEstimator):
        def heatmaps(self, images: list[np.ndarray]) -> list[StandInHeatmaps]:
            clock.now += 0.5 if self.batches else 10.0  # the first pass warms up
            return super().heatmaps(images)

    seen: list[PipelineProgress] = []

    def progress(state: PipelineProgress) -> None:
        seen.append(state)
        clock.now += 1.0  # the display's own time: counted up to the last frame only

    stats = run_pipeline(frames(5), Timed(), [Recorder()], progress=progress)
    assert stats.seconds == pytest.approx(10.0 + 4 * 0.5 + 4 * 1.0)  # warm-up included
    assert stats.fps == pytest.approx(5 / 16.0)
    assert seen[-1].elapsed == pytest.approx(stats.seconds)
    assert seen[-1].fps == pytest.approx(stats.fps)  # the bar ends on the summary's figure
    assert seen[1].fps == pytest.approx(2 / seen[1].elapsed)


def test_a_stopped_latency_first_run_counts_every_frame_read() -> None:
    stop = threading.Event()

    def camera():
        index = 0
        while True:
            time.sleep(0.001)
            yield SourceFrame(np.full((8, 12, 3), index % 256, np.uint8), index, index / 30)
            index += 1

    def quit_at_five(frame: Frame, image: np.ndarray) -> None:
        if len(sink.frames) >= 5:
            stop.set()

    sink = Recorder()
    estimator = StandInEstimator(delay=0.01)
    stats = run_pipeline(camera(), estimator, [sink, quit_at_five], latency_first=True, stop=stop)
    assert stats.frames == len(sink.frames) >= 5
    assert stats.read == stats.frames + stats.dropped  # stale and in-flight ones are dropped
    assert stats.dropped > 0


def test_a_stopped_run_counts_the_frames_it_never_finished() -> None:
    stop = threading.Event()

    def stop_at_twenty(frame: Frame, image: np.ndarray) -> None:
        if frame.index == 20:
            stop.set()

    stats = run_pipeline(frames(300), StandInEstimator(), [stop_at_twenty], stop=stop)
    assert 20 < stats.read < 300
    assert stats.read == stats.frames + stats.dropped  # the frame read as it stopped: dropped


# ---------------------------------------------------------------------------------------------
# Following people between bottom-up frames (issue 38)


class World:
    """A scripted video: ``people[i]`` the x positions of the people in frame ``i``,
    ``brightness[i]`` its background; pixel ``(0, 0)`` carries the frame index."""

    def __init__(self, people: list[list[float]], brightness: list[int] | None = None) -> None:
        self.people = people
        self.brightness = brightness or [60] * len(people)

    def frames(self) -> list[SourceFrame]:
        source = []
        for index, value in enumerate(self.brightness):
            image = np.full((36, 64, 3), value, dtype=np.uint8)
            image[0, 0] = index
            source.append(SourceFrame(image=image, index=index, time=index / 10))
        return source


class FollowingEstimator(StandInEstimator):
    """Bottom-up: the world's people of the frame (``bottom_up`` lists the frames it ran on);
    following: each followed person whose predicted x is within 6 px of one of the frame's
    people is found there, the others are lost."""

    def __init__(self, world: World, detect_every: int, *, refines: bool = True) -> None:
        super().__init__()
        self.config = InferenceConfig(detect_every=detect_every)
        self.world = world
        self.can_follow = refines
        self.bottom_up: list[int] = []
        self.followed: list[int] = []

    def heatmaps(self, images: list[np.ndarray]) -> list[StandInHeatmaps]:
        self.bottom_up += [int(image[0, 0, 0]) for image in images]
        return super().heatmaps(images)

    def poses(self, heatmaps: StandInHeatmaps, image: np.ndarray | None = None) -> list[Pose]:
        return [person_at(x) for x in self.world.people[heatmaps.value]]

    def follow(self, image: np.ndarray, people: list[Pose]) -> tuple[list[Pose], int]:
        index = int(image[0, 0, 0])
        self.followed.append(index)
        here = self.world.people[index]
        found = []
        for person in people:
            near = [x for x in here if abs(x - person.keypoints[0, 0]) <= 6]
            found += [person_at(near[0])] if near else []
        return found, len(people) - len(found)


def _follow(world: World, detect_every: int, **changes) -> tuple[FollowingEstimator, Recorder]:
    estimator, sink = FollowingEstimator(world, detect_every, **changes), Recorder()
    run_pipeline(world.frames(), estimator, [sink], tracker=Tracker())
    return estimator, sink


def _ids_at(frame: Frame, x_range: tuple[float, float]) -> list[int | None]:
    return [p.track_id for p in frame.poses if x_range[0] <= p.keypoints[0, 0] <= x_range[1]]


def test_a_moving_person_keeps_one_id_with_the_network_on_every_fifth_frame() -> None:
    world = World([[10.0 + 3 * i] for i in range(20)])
    estimator, sink = _follow(world, 5)
    assert estimator.bottom_up == [0, 5, 10, 15]  # the network's calls
    assert estimator.followed == [i for i in range(20) if i % 5]
    assert [[p.track_id for p in frame.poses] for frame in sink.frames] == [[1]] * 20
    walked = [frame.poses[0].keypoints[0, 0] for frame in sink.frames]
    assert walked == [10 + 3 * i for i in range(20)]  # each frame's own position


def test_a_person_entering_between_bottom_up_frames_is_found_at_the_next_one() -> None:
    world = World([[10.0 + i] + ([200.0 - i] if i >= 7 else []) for i in range(16)])
    estimator, sink = _follow(world, 5)
    assert estimator.bottom_up == [0, 5, 10, 15]
    newcomer = [_ids_at(frame, (150, 250)) for frame in sink.frames]
    assert newcomer[:10] == [[]] * 10  # not looked for before frame 10
    assert newcomer[10] == [None]  # found, unconfirmed (TrackerConfig.min_hits)
    assert newcomer[11:] == [[2]] * 5  # followed and confirmed
    assert all(_ids_at(frame, (0, 100)) == [1] for frame in sink.frames)


def test_a_scene_cut_triggers_a_bottom_up_frame() -> None:
    world = World([[10.0 + i] for i in range(12)], brightness=[60] * 7 + [200] * 5)
    estimator, sink = _follow(world, 5)
    assert estimator.bottom_up == [0, 5, 7, 10]
    assert all(len(frame.poses) == 1 for frame in sink.frames)


def test_a_lost_person_triggers_a_bottom_up_frame_and_is_not_shown_meanwhile() -> None:
    walker = [[10.0 + i] for i in range(12)]
    world = World([walker[i] + ([100.0] if i < 7 else []) for i in range(12)])
    world.people[7] = [10.0 + 7, 150.0]  # the second person jumps away: the refiner loses them
    estimator, sink = _follow(world, 5)
    assert sorted(estimator.bottom_up) == [0, 5, 8, 10]  # frame 8 at once (by the decoder)
    assert [len(frame.poses) for frame in sink.frames] == [2] * 7 + [1] + [1] * 4
    assert all(_ids_at(frame, (0, 50)) == [1] for frame in sink.frames)


@pytest.mark.parametrize("changes", [{"detect_every": 1}, {"detect_every": 5, "refines": False}])
def test_without_following_every_frame_is_bottom_up_and_tracked_as_before(changes) -> None:
    world = World([[10.0 + 3 * i] + ([80.0] if 4 <= i < 9 else []) for i in range(14)])
    detect_every = changes.pop("detect_every")
    estimator, sink = _follow(world, detect_every, **changes)
    assert estimator.bottom_up == list(range(14)) and estimator.followed == []
    tracker = Tracker()  # today's path: each frame's people, tracked in order
    people = [estimator.poses(StandInHeatmaps(i), None) for i in range(14)]
    expected = [tracker.update(poses, i / 10) for i, poses in enumerate(people)]
    for frame, poses in zip(sink.frames, expected, strict=True):
        assert [p.track_id for p in frame.poses] == [p.track_id for p in poses]
        for got, want in zip(frame.poses, poses, strict=True):
            np.testing.assert_array_equal(got.keypoints, want.keypoints)


def test_detect_every_defaults_to_following_for_the_tracking_commands_only() -> None:
    from types import SimpleNamespace

    from posecli import options
    from posecli.streams import tracks_header

    def default(specs) -> list[int]:
        return [spec.default for spec in specs if spec.name == "detect_every"]

    every = options.STREAM_DETECT_EVERY
    assert every > 1 and default(options.STREAM_INFERENCE_OPTIONS) == [every]
    assert default(options.BATCH_INFERENCE_OPTIONS) == [every]
    assert default(options.INFERENCE_OPTIONS) == []  # images, eval: every image bottom-up
    assert InferenceConfig().detect_every == 1  # the library's default: as before
    chosen = options.inference_options(detect_every=every)
    assert chosen.inference.detect_every == every
    assert options.inference_options(refine=False, detect_every=every).inference.detect_every == 1
    refinement = SimpleNamespace(refiner=SimpleNamespace(name="refiner-int8"))
    estimator = SimpleNamespace(model=SimpleNamespace(name="stand-in"), refinement=refinement)
    header = tracks_header("video", "in.mp4", None, estimator, chosen)  # type: ignore[arg-type]
    assert header["options"]["detect_every"] == every  # the track file records it
    assert header["refiner_name"] == "refiner-int8"  # and which refiner file ran
    estimator.refinement = None
    assert tracks_header("video", "in.mp4", None, estimator, chosen)["refiner_name"] is None  # type: ignore[arg-type]
