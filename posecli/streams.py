"""Video and camera runs: their outputs (annotated MP4, JSON-lines tracks, OpenPose folder, CSV)
checked from the command's options, the sinks opened, and frames tracked through the pipeline.

The pipeline (and with it torch) is imported when a stream runs, so that importing the command
line stays fast. Library code: errors are ``PoseCliError`` subclasses, progress goes through
callbacks, nothing is printed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posecli import __version__
from posecli.config import TrackerConfig
from posecli.errors import PoseCliError, UsageError
from posecli.io import display
from posecli.io.draw import DEFAULT_DRAW_THRESHOLD, draw_poses
from posecli.io.files import STDOUT, check_output
from posecli.io.sinks import CsvSink, JsonLinesSink, OpenPoseSink, VideoSink
from posecli.outputs import check_outputs, check_standard_output, openpose_folder, same_file
from posecli.track import Tracker

if TYPE_CHECKING:
    from posecli.estimator import Estimator
    from posecli.inference import InferenceOptions
    from posecli.io.ffmpeg import VideoInfo
    from posecli.io.sources import SourceFrame, VideoSource
    from posecli.pipeline import FrameSink, PipelineStats, ProgressCallback

logger = logging.getLogger(__name__)


#: File suffixes an annotated video may be written to.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")


@dataclass(frozen=True)
class StreamOutputs:
    """What a video or camera run writes: annotated MP4, JSON-lines tracks, OpenPose folder,
    CSV table."""

    video: Path | None = None
    tracks: Path | None = None
    openpose: Path | None = None
    table: Path | None = None

    def paths(self) -> tuple[Path | None, ...]:
        return (self.video, self.tracks, self.openpose, self.table)


def video_outputs(
    source: str,
    out: Path | None,
    tracks: Path | None,
    *,
    no_video: bool,
    openpose: bool,
    openpose_dir: Path | None,
    table: Path | None = None,
) -> StreamOutputs:
    """The outputs of ``posecli video`` from its options (``table``: ``--csv``); UsageError
    for a bad combination."""
    if no_video and out is not None:
        raise UsageError("--out and --no-video exclude each other")
    if not no_video and out is None:
        raise UsageError("--out OUT.mp4 is required (or --no-video with --json or --csv)")
    openpose = openpose or openpose_dir is not None
    main_output = out or (None if str(tracks) == STDOUT else tracks)
    if out is None and tracks is None and table is None and not openpose:
        raise UsageError("nothing to write: give --json, --csv or --format openpose")
    check_video_suffix(out)
    check_standard_output(tracks, table)
    if any(same_file(source, path) for path in (out, tracks, table)):
        raise UsageError("an output would overwrite the input")
    if out is not None and same_file(out, tracks):
        raise UsageError("--out and --json name the same file")
    if not openpose:
        return StreamOutputs(out, tracks, table=table)
    if openpose_dir is None and main_output is None:
        raise UsageError("--format openpose with --no-video needs --openpose-dir or --json FILE")
    return StreamOutputs(out, tracks, openpose_folder(openpose_dir, main_output), table)  # type: ignore[arg-type]


def check_video_suffix(out: Path | None) -> None:
    """UsageError unless ``out`` (if any) names an MP4 file."""
    if out is not None and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"--out must name an .mp4 file, got {out}")


def webcam_outputs(
    out: Path | None, tracks: Path | None, *, no_display: bool, table: Path | None = None
) -> tuple[StreamOutputs, bool]:
    """The outputs of ``posecli webcam`` (``table``: ``--csv``) and whether it shows a window
    (a display is there and not declined); UsageError when there is nothing to show or write."""
    check_video_suffix(out)
    check_standard_output(tracks, table)
    show = not no_display and display.available()
    if not no_display and not show:
        logger.warning("no display available: running without a window")
    if not show and out is None and tracks is None and table is None:
        raise UsageError("no display and nothing to write: give --out, --json or --csv")
    return StreamOutputs(out, tracks, table=table), show


def camera_summary(stats: PipelineStats, camera_dropped: int) -> str:
    """The summary of a camera run, each frame captured counted once: processed, or dropped
    (by the camera's grabber, by the pipeline as stale, or on its way when the run stopped).

    ``camera_dropped``: the closed camera source's ``dropped``.
    """
    captured, dropped = stats.read + camera_dropped, stats.dropped + camera_dropped
    return f"{captured} frames captured, {stats.frames} processed at {stats.fps:.1f} fps, " + (
        f"{dropped} dropped to stay live"
    )


def expected_frames(frames: VideoSource) -> int | None:
    """Frames the video should yield, for progress; ``None`` when it cannot tell."""
    try:
        return frames.expected_frames()
    except PoseCliError as error:  # decoding will tell what is wrong, if anything
        logger.debug("frame count unknown: %s", error)
        return None


def check_stream_outputs(outputs: StreamOutputs, force: bool) -> None:
    """OutputError for an output of a stream that exists without ``force``, OpenPose files
    already in its folder included (before any model loads)."""
    if outputs.video is not None:  # an MP4 is finished by seeking: a regular file, not a pipe
        check_output(outputs.video, force=force, regular=True)
    check_outputs([outputs.tracks, outputs.table], force, [outputs.openpose])
    if outputs.openpose is not None:
        OpenPoseSink.check(outputs.openpose, force=force)


def track_stream(
    frames: Iterable[SourceFrame],
    estimator: Estimator,
    outputs: StreamOutputs,
    *,
    smooth: bool = False,
    force: bool = False,
    video_info: VideoInfo | None = None,
    latency_first: bool = False,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    window: FrameSink | None = None,
    stop: threading.Event | None = None,
    header: Mapping[str, Any] | None = None,
    draw_threshold: float = DEFAULT_DRAW_THRESHOLD,
) -> PipelineStats:
    """Open the sinks of a video or camera run, track and draw, and run the pipeline.

    ``video_info`` describes the source video (frame rate, timescale, audio), ``None`` for a
    camera. ``window`` shows the annotated frames and sets ``stop`` when the user quits.
    ``header`` (see :func:`tracks_header`) is the first line of the JSON-lines tracks.
    Keypoints scored above ``draw_threshold`` are drawn. Leaving the sinks' ``with`` blocks on
    an exception (Ctrl-C included) finalises them with the frames done: a playable MP4,
    complete JSON lines and CSV rows.
    """
    from posecli.pipeline import run_pipeline

    with ExitStack() as stack:
        sinks = _stream_sinks(stack, outputs, force, video_info, header)
        if window is not None:
            sinks.append(window)
        drawing = outputs.video is not None or window is not None
        return run_pipeline(
            frames,
            estimator,
            sinks,
            tracker=Tracker(TrackerConfig(smooth=smooth)),
            draw=partial(draw_poses, min_confidence=draw_threshold) if drawing else None,
            latency_first=latency_first,
            total=total,
            progress=progress,
            stop=stop,
        )


def _stream_sinks(
    stack: ExitStack,
    outputs: StreamOutputs,
    force: bool,
    video_info: VideoInfo | None,
    header: Mapping[str, Any] | None,
) -> list[FrameSink]:
    """The opened sinks of a stream's outputs (closed by ``stack``)."""
    sinks: list[FrameSink] = []
    if outputs.video is not None:
        rate = video_info.frame_rate if video_info is not None else Fraction(30)
        audio = video_info.source if video_info is not None and video_info.has_audio else None
        video = VideoSink(
            outputs.video, rate, audio_source=audio, timescale=timescale(video_info), force=force
        )
        sinks.append(stack.enter_context(video))
    if outputs.tracks is not None:
        tracks = JsonLinesSink(outputs.tracks, force=force, header=header)
        sinks.append(stack.enter_context(tracks))
    if outputs.table is not None:
        sinks.append(stack.enter_context(CsvSink(outputs.table, force=force)))
    if outputs.openpose is not None:
        named = [path for path in outputs.paths() if path is not None and str(path) != STDOUT]
        prefix = named[0].stem
        openpose = OpenPoseSink(outputs.openpose, prefix=prefix, force=force)
        sinks.append(stack.enter_context(openpose))
    return sinks


def tracks_header(
    command: str,
    source: str,
    video_info: VideoInfo | None,
    estimator: Estimator,
    options: InferenceOptions,
    **settings: Any,
) -> dict[str, Any]:
    """The header record of a track file: what made it (``posecli report`` shows it), with the
    names of the model and refiner files that ran (``None``: no refinement).

    ``settings`` are the command's own options (``start``, ``every``, ``smooth``…).
    """
    rate = video_info.frame_rate if video_info is not None else None
    return {
        "format": "posecli-tracks",
        "version": 1,
        "posecli": __version__,
        "command": command,
        "source": source,
        "fps": float(rate) if rate else None,
        "model": options.model,
        "model_name": estimator.model.name,
        "refiner_name": refinement.refiner.name if (refinement := estimator.refinement) else None,
        "options": {
            **settings,
            **options.inference.to_dict(),
            **options.decode.to_dict(),
        },
    }


def timescale(video_info: VideoInfo | None) -> int | None:
    """MP4 ticks per second of the source stream, so that variable timestamps stay exact."""
    if video_info is None or not video_info.time_base:
        return None
    return round(1 / video_info.time_base)
