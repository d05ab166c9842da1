"""The streaming pipeline shared by ``posecli video``, ``webcam``, ``images`` and ``eval``.

Frames flow through four stages connected by bounded queues, so memory stays flat however long
the input is::

    reader thread ──▶ inference (calling thread) ──▶ decoder thread ──▶ writer thread
    source frames     Estimator.heatmaps, batched     Estimator.poses,     draw, sinks
                      (bottom-up frames)              track (or follow)

* The **reader** iterates the source (ffmpeg decodes in its own process; camera sources grab on
  their own thread). In latency-first mode (webcams) it keeps only the newest frame waiting for
  inference: stale frames are dropped, never queued, and every queue holds one frame.
* **Inference** runs on the calling thread, ``InferenceConfig.batch_size`` frames at a time;
  torch releases the GIL while it computes. It runs the bottom-up network on the frames its
  :class:`posecli.follow.BottomUpSchedule` says are due: all of them, unless the run tracks
  with a refining estimator and ``InferenceConfig.detect_every`` > 1 (issue 38).
* The **decoder** turns heatmaps into poses in image pixels, and refines them top-down when the
  estimator refines (``posecli.refine``); the native decoder and torch release the GIL, so this
  overlaps the next forward pass. For a tracker that takes low-score candidates
  (``candidate_min_score``, see ``posecli.track``) it decodes a second time at that threshold.
  Then it gives people track ids. A frame without heatmaps is followed instead
  (:class:`posecli.follow.Follower`: the refiner on the boxes of the people tracked in the
  previous frame), unless a followed person was lost in the previous frame: then it runs the
  bottom-up network on the frame itself and decodes it.
* The **writer** draws the people and hands each frame to the sinks (video encoder, JSON
  writers, display) in source order, then reports progress.

Cross-frame state: everything that depends on earlier frames lives on one thread each and sees
frames in source order: the schedule of bottom-up frames (frame count, last thumbnail for scene
cuts) on the inference thread; the tracker's tracks and the follower's "lost" flag on the
decoder thread, so that following frame ``t`` sees the tracks of frame ``t − 1``. With
``detect_every`` 1 (or no tracker, or no refiner) every frame is a bottom-up frame and the
output is that of tracking each frame's detected people in order.

Failure and interruption:

* an error in the source ends reading; the frames read before it are finished and written, then
  the error is raised to the caller (a video that breaks at minute 50 keeps its first 50 minutes);
* an error in inference, decoding, tracking, drawing or a sink stops every stage at once and is
  raised to the caller;
* ``KeyboardInterrupt`` (Ctrl-C on the calling thread, or raised by the source) stops the reader;
  frames already through inference are decoded and written, the stages end, and the interrupt is
  re-raised, so that the caller's sinks finalise complete files for the frames done;
* ``stop`` (a ``threading.Event`` set by anyone, e.g. a display window's ``q`` key) ends the run
  like the end of the source.

This module is library code: no printing, progress goes through a callback.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from posecli.config import DecodeConfig
from posecli.estimator import Estimator, Heatmaps, decode_heatmaps
from posecli.follow import BottomUpSchedule, Follower
from posecli.io.sources import SourceFrame
from posecli.pose import Frame, Pose

logger = logging.getLogger(__name__)

#: Frames buffered between two stages by default: enough to absorb jitter between stages, small
#: enough that a 768×576 stream at box size 512 holds ~70 MB in flight at most (images of
#: 1.3 MB in three queues, heatmaps of 4.4 MB in one).
QUEUE_SIZE = 8

#: How often blocked stages wake up to check whether the run was stopped, in seconds.
POLL_SECONDS = 0.05

#: How long the end of a run waits for a stage thread before giving up on it, in seconds.
JOIN_SECONDS = 30.0

#: How long a stopped run waits for a reader blocked inside its source, in seconds.
READER_JOIN_SECONDS = 1.0


#: Where finished frames go: ``sink(frame, image)`` is called on the writer thread, once per
#: frame, in source order, with the frame's people (track ids set when tracking) and its image,
#: ``(H, W, 3)`` uint8 RGB, annotated when the pipeline draws. Every sink of
#: ``posecli.io.sinks`` is one (``Sink.__call__``); opening and closing them is the caller's.
FrameSink = Callable[[Frame, np.ndarray], None]


class PoseTracker(Protocol):
    """Gives people identities across frames (see ``posecli.track``).

    A tracker with a ``candidate_min_score`` attribute (``posecli.track.Tracker``) is called as
    ``update(poses, time, candidates=...)`` with the people a second decoding at that decoder
    threshold finds, those the run's thresholds drop included (see
    :func:`candidate_decode_config`); it returns ``poses`` only, so the people shown still
    respect the run's thresholds.
    """

    def update(self, poses: list[Pose], time: float) -> list[Pose]: ...


def candidate_decode_config(estimator: object, tracker: object) -> DecodeConfig | None:
    """The decoder settings of the tracker's low-score candidates: the estimator's, down to the
    tracker's ``candidate_min_score`` and with no ``max_people``; ``None`` when the tracker
    takes none, the estimator is no :class:`Estimator`, or the run drops nobody the second
    decoding would find (its ``min_mean_part_score`` is as low and no ``min_person_score``)."""
    floor = getattr(tracker, "candidate_min_score", None)
    if floor is None or not isinstance(estimator, Estimator):
        return None
    decode = estimator.decode_config
    if decode.min_mean_part_score <= floor and decode.min_person_score <= 0:
        return None
    floor = min(floor, decode.min_mean_part_score)
    return replace(decode, min_mean_part_score=floor, max_people=0)


def follow_every(estimator: object, tracker: object) -> int:
    """One frame in how many the bottom-up network runs on: the estimator's
    ``config.detect_every`` where people are tracked (``tracker`` has ``followed``) and the
    estimator can follow them (``can_follow``: it refines), else 1."""
    if not hasattr(tracker, "followed") or not getattr(estimator, "can_follow", False):
        return 1
    return estimator.config.detect_every  # type: ignore[attr-defined]


#: ``draw(image, poses) -> annotated``: ``(H, W, 3)`` uint8 RGB in, a new annotated image out.
DrawFunction = Callable[[np.ndarray, Sequence[Pose]], np.ndarray]


def frames_per_second(frames: int, seconds: float) -> float:
    """``frames / seconds``, 0 before any time has passed: the one fps of progress and summary."""
    return frames / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class PipelineProgress:
    """Progress after a frame was written.

    Attributes:
        frames: frames written so far.
        total: frames the source is expected to yield, ``None`` when unknown (cameras, URLs).
        dropped: stale frames dropped so far in latency-first mode.
        elapsed: seconds since the run started.
        frame: the frame just written.
    """

    frames: int
    total: int | None
    dropped: int
    elapsed: float
    frame: Frame

    @property
    def fps(self) -> float:
        """Frames written per second of the run so far: the figure of :attr:`PipelineStats.fps`."""
        return frames_per_second(self.frames, self.elapsed)


@dataclass(frozen=True)
class PipelineStats:
    """Summary of a finished run.

    Every frame taken from the source is counted once: ``read == frames + dropped``.

    Attributes:
        frames: frames written (processed).
        dropped: frames read but never written: stale ones dropped in latency-first mode, and
            those still on their way when the run stopped (``stop``, Ctrl-C, a failure).
        seconds: from the start of the run (source opened; the first frame's decoding and the
            network's warm-up included) to the last frame written; 0 without frames.
        read: frames taken from the source.
    """

    frames: int
    dropped: int
    seconds: float
    read: int

    @property
    def fps(self) -> float:
        """Frames written per second of the run (:attr:`seconds`); progress shows it live."""
        return frames_per_second(self.frames, self.seconds)


ProgressCallback = Callable[[PipelineProgress], None]


@dataclass
class _Work:
    """One frame on its way through the stages (heatmaps are released once decoded)."""

    source: SourceFrame
    heatmaps: Heatmaps | None = None  # None: a frame not due for the bottom-up network
    poses: list[Pose] | None = None  # tracked when the run tracks


class _End:
    """Marks the end of the stream in a queue."""


_END = _End()


class _StoppedError(Exception):
    """Raised inside a stage when the run was aborted by another stage's failure."""


class _Run:
    """The state of one pipeline run: queues, events, threads and the first failure."""

    def __init__(
        self,
        source: Iterable[SourceFrame],
        estimator: Estimator,
        sinks: Sequence[FrameSink],
        *,
        tracker: PoseTracker | None,
        draw: DrawFunction | None,
        latency_first: bool,
        queue_size: int,
        total: int | None,
        progress: ProgressCallback | None,
        stop: threading.Event | None,
    ) -> None:
        self.source = source
        self.estimator = estimator
        self.sinks = list(sinks)
        self.tracker = tracker
        self.candidate_decode = candidate_decode_config(estimator, tracker)
        every = follow_every(estimator, tracker)
        self.schedule = BottomUpSchedule(every, estimator.config.scene_cut)
        self.follower = Follower(estimator, tracker) if every > 1 else None  # type: ignore[arg-type]
        self.draw = draw
        self.latency_first = latency_first
        self.total = total
        self.progress = progress
        self.stop = stop or threading.Event()
        if latency_first:  # one frame per stage: nothing waits long enough to go stale
            queue_size = 1
        self.batch_size = 1 if latency_first else estimator.config.batch_size
        self.frames_queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.heatmaps_queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.poses_queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stop_reading = threading.Event()  # graceful: finish the frames already read
        self.interrupted = threading.Event()  # Ctrl-C: inference no longer takes frames
        self.abort = threading.Event()  # immediate: every stage stops now
        self.failure: BaseException | None = None
        self.failure_lock = threading.Lock()
        self.read_count = 0
        self.written = 0
        self.dropped = 0  # stale, in latency-first mode
        self.started = time.perf_counter()
        self.last_written = self.started

    # -- failure bookkeeping ------------------------------------------------------------------

    def fail(self, error: BaseException, *, graceful: bool) -> None:
        """Record the first failure; stop reading (graceful) or stop everything."""
        with self.failure_lock:
            if self.failure is None:
                self.failure = error
        self.stop_reading.set()
        if not graceful:
            self.abort.set()

    # -- queue helpers that never block past an abort --------------------------------------------

    def put(self, target: queue.Queue, item: object, cancel: threading.Event | None = None) -> None:
        """Put ``item`` once there is room; ``_StoppedError`` on abort or when ``cancel`` is set."""
        while True:
            if self.abort.is_set() or (cancel is not None and cancel.is_set()):
                raise _StoppedError
            try:
                target.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def get(self, source: queue.Queue) -> object:
        """The next item; ``_StoppedError`` on abort."""
        while True:
            if self.abort.is_set():
                raise _StoppedError
            try:
                return source.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue

    def put_newest(self, target: queue.Queue, item: object) -> None:
        """Replace whatever frame still waits in ``target`` (latency first)."""
        while True:
            try:
                target.put_nowait(item)
                return
            except queue.Full:
                try:
                    target.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    continue

    # -- stages ---------------------------------------------------------------------------------

    def read(self) -> None:
        """Reader thread: source frames into the frame queue, then the end marker.

        A source that fails ends the stream there (graceful): the frames before it are
        finished. After a Ctrl-C nobody takes frames any more, so the reader just leaves.
        """
        frames: Iterator[SourceFrame] | None = None
        try:
            frames = iter(self.source)
            for source_frame in frames:
                self.read_count += 1
                if self.stop_reading.is_set() or self.stop.is_set():
                    break
                work = _Work(source_frame)
                if self.latency_first:
                    self.put_newest(self.frames_queue, work)
                else:
                    self.put(self.frames_queue, work, cancel=self.interrupted)
            self.put(self.frames_queue, _END, cancel=self.interrupted)
        except _StoppedError:
            pass
        except BaseException as error:  # KeyboardInterrupt raised by a source included
            self.fail(error, graceful=True)
            self._put_end_after_failure()
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # a generator source stops its decoder now, on this thread

    def _put_end_after_failure(self) -> None:
        try:
            self.put(self.frames_queue, _END, cancel=self.interrupted)
        except _StoppedError:
            return

    def infer(self) -> None:
        """Calling thread: batches of frames through the network, heatmaps to the decoder."""
        ended = False
        while not ended:
            batch: list[_Work] = []
            while len(batch) < self.batch_size:
                item = self.get(self.frames_queue) if not batch else self._get_nowait()
                if item is None:
                    break
                if item is _END:
                    ended = True
                    break
                batch.append(item)
            if batch:
                self._infer_due(batch)
        self.put(self.heatmaps_queue, _END)

    def _infer_due(self, batch: list[_Work]) -> None:
        """Heatmaps of the frames of ``batch`` due for the bottom-up network; all to the decoder."""
        due = [work for work in batch if self.schedule.due(work.source.image)]
        if due:
            heatmaps = self.estimator.heatmaps([work.source.image for work in due])
            for work, maps in zip(due, heatmaps, strict=True):
                work.heatmaps = maps
        for work in batch:
            self.put(self.heatmaps_queue, work)

    def _get_nowait(self) -> object | None:
        """The next waiting frame without blocking (to fill a batch), or ``None``."""
        try:
            return self.frames_queue.get_nowait()
        except queue.Empty:
            return None

    def decode(self) -> None:
        """Decoder thread: heatmaps → poses in image pixels, tracked (or followed)."""
        self._stage(self.heatmaps_queue, self._decode_one, self.poses_queue)

    def _decode_one(self, work: _Work) -> None:
        source, follower = work.source, self.follower
        if follower is not None and work.heatmaps is None:
            if not follower.lost:
                work.poses = follower.follow(source.image, source.time)
                return
            work.heatmaps = self.estimator.heatmaps([source.image])[0]
        assert work.heatmaps is not None
        poses = self.estimator.poses(work.heatmaps, source.image)
        if self.tracker is not None:
            extra = {}
            if self.candidate_decode is not None:
                extra["candidates"] = decode_heatmaps(work.heatmaps, self.candidate_decode)
            poses = self.tracker.update(poses, source.time, **extra)
        if follower is not None:
            follower.detected()
        work.poses, work.heatmaps = poses, None

    def write(self) -> None:
        """Writer thread: drawing and the sinks, in source order."""
        self._stage(self.poses_queue, self._write_one, None)

    def _write_one(self, work: _Work) -> None:
        source = work.source
        poses = work.poses or []
        height, width = source.image.shape[:2]
        frame = Frame(source.index, source.time, width, height, poses, source.name, source.image_id)
        image = self.draw(source.image, poses) if self.draw is not None else source.image
        for sink in self.sinks:
            sink(frame, image)
        self.written += 1
        self.last_written = time.perf_counter()
        if self.progress is not None:
            elapsed = self.last_written - self.started
            self.progress(PipelineProgress(self.written, self.total, self.dropped, elapsed, frame))

    def _stage(
        self,
        inbox: queue.Queue,
        handle: Callable[[_Work], None],
        outbox: queue.Queue | None,
    ) -> None:
        """Run ``handle`` on every item of ``inbox`` until the end marker, forwarding to ``outbox``.

        Any failure aborts the whole run.
        """
        try:
            while (work := self.get(inbox)) is not _END:
                handle(work)  # type: ignore[arg-type]
                if outbox is not None:
                    self.put(outbox, work)
            if outbox is not None:
                self.put(outbox, _END)
        except _StoppedError:
            return
        except BaseException as error:  # re-raised on the calling thread
            self.fail(error, graceful=False)

    # -- the whole run --------------------------------------------------------------------------

    def run(self) -> PipelineStats:
        reader = threading.Thread(target=self.read, name="pipeline-read", daemon=True)
        stages = [
            threading.Thread(target=self.decode, name="pipeline-decode", daemon=True),
            threading.Thread(target=self.write, name="pipeline-write", daemon=True),
        ]
        for thread in (reader, *stages):
            thread.start()
        try:
            self.infer()
        except _StoppedError:
            pass
        except KeyboardInterrupt as interrupt:
            self._finish_after_interrupt(interrupt)
        except BaseException as error:
            self.fail(error, graceful=False)
        finally:
            self._join(reader, stages)
        if self.failure is not None:
            raise self.failure
        seconds = self.last_written - self.started
        return PipelineStats(self.written, self.read_count - self.written, seconds, self.read_count)

    def _finish_after_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        """Ctrl-C: stop reading, let the frames already inferred reach the sinks."""
        logger.info("interrupted: finishing the frames already processed")
        self.interrupted.set()
        self.fail(interrupt, graceful=True)
        try:
            self.put(self.heatmaps_queue, _END)
        except _StoppedError:
            return
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            self.abort.set()

    def _join(self, reader: threading.Thread, stages: list[threading.Thread]) -> None:
        """Wait for the stages, then the reader; a second Ctrl-C while waiting aborts the rest.

        A reader blocked inside its source (a stalled camera or stream) is left to the caller,
        whose closing of the source ends it; it is not waited for long once reading stopped.
        """
        for thread in stages:
            self._join_one(thread, JOIN_SECONDS)
        stopping = self.stop_reading.is_set() or self.abort.is_set()
        self._join_one(reader, READER_JOIN_SECONDS if stopping else JOIN_SECONDS)

    def _join_one(self, thread: threading.Thread, seconds: float) -> None:
        try:
            thread.join(seconds)
        except KeyboardInterrupt:
            self.abort.set()
            thread.join(seconds)
        if thread.is_alive():
            logger.warning("%s did not stop within %.0f s", thread.name, seconds)


def run_pipeline(
    source: Iterable[SourceFrame],
    estimator: Estimator,
    sinks: Sequence[FrameSink] = (),
    *,
    tracker: PoseTracker | None = None,
    draw: DrawFunction | None = None,
    latency_first: bool = False,
    queue_size: int = QUEUE_SIZE,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> PipelineStats:
    """Run every frame of ``source`` through inference, decoding, tracking, drawing and ``sinks``.

    Args:
        source: yields ``SourceFrame`` records (upright RGB uint8 ``(H, W, 3)`` images).
        estimator: the model and inference settings; ``estimator.config.batch_size`` frames
            go through the network together (1 in latency-first mode).
        sinks: receive each finished frame and its (annotated) image, in source order.
        tracker: gives people track ids; ``None`` leaves ``track_id`` unset (still images).
        draw: annotates each image for the sinks; ``None`` passes the source image unchanged.
        latency_first: webcams: keep only the newest frame waiting for inference (older ones
            are dropped), batches of 1 and one frame between stages, so that what is shown or
            recorded is as recent as the stages allow.
        queue_size: frames buffered between two stages (1 in latency-first mode).
        total: expected number of frames, for progress reports.
        progress: called on the writer thread after each frame is written.
        stop: set it (from any thread) to end the run as if the source had ended.

    Returns:
        What was done (:class:`PipelineStats`): frames read, written and dropped, and the
        seconds to the last frame written.

    Raises:
        Whatever a stage raised (``PoseCliError`` subclasses for expected failures), and
        ``KeyboardInterrupt`` after the frames already inferred were written.
    """
    if queue_size < 1:
        raise ValueError(f"queue_size must be at least 1, got {queue_size}")
    run = _Run(
        source,
        estimator,
        sinks,
        tracker=tracker,
        draw=draw,
        latency_first=latency_first,
        queue_size=queue_size,
        total=total,
        progress=progress,
        stop=stop,
    )
    return run.run()
