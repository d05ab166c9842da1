"""The ``posecli`` command line: video, webcam, images, eval, train and info.

This is the only module that imports typer and rich, prints, and exits. Library errors
(``PoseCliError``) become one line on stderr and their exit code: 1 for runtime failures, 2 for
bad usage; Ctrl-C exits with 130 once the outputs hold the frames already done.

Commands import the heavy modules (torch, OpenCV, the pipeline) when they run, so that
``posecli --help`` and usage errors answer at once.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import platform
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from posecli import __version__
from posecli.config import (
    MODEL_PRESETS,
    REFINER_PRESETS,
    DecodeConfig,
    InferenceConfig,
    LabelConfig,
    TrainConfig,
)
from posecli.errors import (
    InputError,
    OutputError,
    PoseCliError,
    ResumableInterruptError,
    UsageError,
)
from posecli.pose import Frame

if TYPE_CHECKING:
    import numpy as np

    from posecli.estimator import Estimator
    from posecli.io.ffmpeg import VideoInfo
    from posecli.io.sources import ImageSource, SourceFrame, VideoSource
    from posecli.pipeline import PipelineProgress, PipelineStats

#: Exit codes: success, bad usage, interrupted by Ctrl-C (128 + SIGINT), stopped by SIGTERM
#: (128 + 15, handled like Ctrl-C); failures exit 1.
EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143

app = typer.Typer(
    name="posecli",
    help="Multi-person 2D pose estimation (Simple Pose / IMHN) for videos, webcams and images.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)
logger = logging.getLogger("posecli.cli")


# ---------------------------------------------------------------------------------------------
# Shared options


#: Largest search scale: beyond it the network input outgrows any memory.
_MAX_SCALE = 16.0


def _parse_scales(value: str) -> tuple[float, ...]:
    """``"1"`` or ``"0.5,1,1.5,2"`` → positive floats; a bad list is a usage error (exit 2)."""
    try:
        scales = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if any(not 0 < scale <= _MAX_SCALE for scale in scales):  # NaN and inf fail too
        raise typer.BadParameter(f"scales must be in (0, {_MAX_SCALE:g}], got {value!r}")
    return scales


def _check_scales(value: str) -> str:
    """Option callback: reject a bad ``--scales`` list while parsing (exit 2, option named)."""
    _parse_scales(value)
    return value


_INFERENCE = InferenceConfig()
_DECODE = DecodeConfig()
_PANEL = "Inference"
_MIN_INPUT_SIZE = 16  # smallest --box-size / --long-side, pixels
_MAX_INPUT_SIZE = 8192  # largest --box-size / --long-side, pixels

Model = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Registered model name or checkpoint path.", rich_help_panel=_PANEL
    ),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=_PANEL)]
Half = Annotated[
    bool, typer.Option("--half", help="fp16 inference (CUDA only).", rich_help_panel=_PANEL)
]
Scales = Annotated[
    str,
    typer.Option(
        callback=_check_scales,
        help="Search scales, e.g. 1 or 0.5,1,1.5,2 (heatmaps averaged).",
        rich_help_panel=_PANEL,
    ),
]
Flip = Annotated[
    bool,
    typer.Option("--flip/--no-flip", help="Also run the mirrored image.", rich_help_panel=_PANEL),
]
BoxSize = Annotated[
    int,
    typer.Option(
        min=_MIN_INPUT_SIZE,
        max=_MAX_INPUT_SIZE,
        help="Network input height at scale 1, pixels.",
        rich_help_panel=_PANEL,
    ),
]
LongSide = Annotated[
    int,
    typer.Option(
        min=0,
        max=_MAX_INPUT_SIZE,
        help="Resize so the longer image side is N at scale 1; overrides --box-size (0: off).",
        rich_help_panel=_PANEL,
    ),
]
BatchSize = Annotated[
    int, typer.Option(min=1, help="Frames per forward pass.", rich_help_panel=_PANEL)
]
PeakThreshold = Annotated[
    float,
    typer.Option(min=0.0, help="Minimum keypoint heatmap peak (> 0).", rich_help_panel=_PANEL),
]
PartThreshold = Annotated[
    float,
    typer.Option(
        min=0.0, help="Body-part heatmap value a link must exceed.", rich_help_panel=_PANEL
    ),
]
MinScore = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Drop people whose score (the one reported, 0–1) is lower.",
        rich_help_panel=_PANEL,
    ),
]
MinPartScore = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="Decoder: drop people whose total score per keypoint is lower.",
        rich_help_panel=_PANEL,
    ),
]
Threads = Annotated[
    int,
    typer.Option(min=0, help="CPU threads for torch (0: torch's default).", rich_help_panel=_PANEL),
]
MaxPeople = Annotated[
    int, typer.Option(min=0, help="Keep the N best people (0: all).", rich_help_panel=_PANEL)
]
Refine = Annotated[
    bool,
    typer.Option(
        "--refine/--no-refine",
        help="Refine the people top-down with --refiner and merge (issue 16).",
        rich_help_panel=_PANEL,
    ),
]
RefinerName = Annotated[
    str,
    typer.Option(
        "--refiner", help="Refiner checkpoint path (or registered name).", rich_help_panel=_PANEL
    ),
]
Instances = Annotated[
    int,
    typer.Option(
        min=0,
        help="Instance selectors run per box (0: all the refiner has).",
        rich_help_panel=_PANEL,
    ),
]
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, warnings or summary.")]


@dataclass(frozen=True)
class InferenceOptions:
    """The model and the inference/decoding settings common to every inference command."""

    model: str
    inference: InferenceConfig
    decode: DecodeConfig
    threads: int = 0  # torch CPU threads, 0: torch's default


def inference_options(
    *,
    model: str,
    device: str,
    half: bool,
    scales: str,
    flip: bool,
    box_size: int,
    long_side: int,
    batch_size: int,
    peak_threshold: float,
    part_threshold: float,
    min_score: float,
    max_people: int,
    threads: int,
    min_part_score: float = _DECODE.min_mean_part_score,
    refine: bool = False,
    refiner: str = "",
    instances: int = 0,
) -> InferenceOptions:
    """Build the configs of the shared inference options (the one place that knows them)."""
    if not 0 < peak_threshold < math.inf:
        raise UsageError(f"--peak-threshold must be a number > 0, got {peak_threshold}")
    numbers = {"--part-threshold": part_threshold, "--min-part-score": min_part_score}
    for name, value in {**numbers, "--min-score": min_score}.items():
        if not math.isfinite(value):
            raise UsageError(f"{name} must be a number, got {value}")
    if 0 < long_side < _MIN_INPUT_SIZE:
        raise UsageError(
            f"--long-side must be 0 (off) or at least {_MIN_INPUT_SIZE}, got {long_side}"
        )
    if refine and not refiner:
        raise UsageError("--refine needs --refiner PATH (no refiner is bundled yet)")
    if refiner and not refine:
        raise UsageError("--refiner is used only with --refine")
    inference = InferenceConfig(
        box_size=box_size,
        long_side=long_side,
        scales=_parse_scales(scales),
        flip=flip,
        batch_size=batch_size,
        device=device,
        half=half,
        refine=refine,
        refiner=refiner,
        instances=instances,
    )
    decode = DecodeConfig(
        peak_threshold=peak_threshold,
        part_threshold=part_threshold,
        min_mean_part_score=min_part_score,
        min_person_score=min_score,
        max_people=max_people,
    )
    return InferenceOptions(model=model, inference=inference, decode=decode, threads=threads)


#: The shared inference options, added to a command by :func:`with_inference_options`.
_INFERENCE_PARAMETERS: tuple[tuple[str, Any, Any], ...] = (
    ("model", Model, "default"),
    ("device", Device, _INFERENCE.device),
    ("half", Half, _INFERENCE.half),
    ("scales", Scales, ",".join(f"{scale:g}" for scale in _INFERENCE.scales)),
    ("flip", Flip, _INFERENCE.flip),
    ("box_size", BoxSize, _INFERENCE.box_size),
    ("long_side", LongSide, _INFERENCE.long_side),
    ("batch_size", BatchSize, _INFERENCE.batch_size),
    ("peak_threshold", PeakThreshold, _DECODE.peak_threshold),
    ("part_threshold", PartThreshold, _DECODE.part_threshold),
    ("min_score", MinScore, _DECODE.min_person_score),
    ("min_part_score", MinPartScore, _DECODE.min_mean_part_score),
    ("max_people", MaxPeople, _DECODE.max_people),
    ("threads", Threads, 0),
    ("refine", Refine, _INFERENCE.refine),
    ("refiner", RefinerName, _INFERENCE.refiner),
    ("instances", Instances, _INFERENCE.instances),
)


def with_inference_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the shared inference options, passed to it as ``options``.

    The command declares ``options: InferenceOptions``; typer sees the individual options
    (``--model``, ``--device``, ``--scales``…) instead, and the wrapper builds the record with
    :func:`inference_options`.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for name, p in signature.parameters.items() if name != "options"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, kind, default in _INFERENCE_PARAMETERS
    ]
    names = [name for name, _, _ in _INFERENCE_PARAMETERS]

    @functools.wraps(command)
    def wrapper(**values: Any) -> None:
        shared_values = {name: values.pop(name) for name in names}
        command(options=inference_options(**shared_values), **values)

    wrapper.__signature__ = signature.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
    return wrapper


# ---------------------------------------------------------------------------------------------
# Output helpers


class OutputFormat(str, Enum):
    """Extra per-frame JSON formats."""

    posecli = "posecli"
    openpose = "openpose"


def _setup_logging(quiet: bool) -> None:
    """Library warnings go to stderr through rich (above the progress bar); errors only if quiet.

    :func:`run` restores the previous logging state when the command ends.
    """
    handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
    library = logging.getLogger("posecli")
    library.handlers[:] = [handler]
    library.setLevel(logging.ERROR if quiet else logging.WARNING)
    library.propagate = False


@contextmanager
def _restored_logging() -> Iterator[None]:
    """Undo :func:`_setup_logging` afterwards (``run`` may be called in-process, e.g. by tests)."""
    library = logging.getLogger("posecli")
    state = (list(library.handlers), library.level, library.propagate)
    try:
        yield
    finally:
        library.handlers[:], library.level, library.propagate = state


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        stderr.print(message, markup=False)


class _FpsColumn(ProgressColumn):
    """Frames per second, measured by rich over the last seconds."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:5.1f} fps" if speed else "  ... fps", style="progress.data.speed")


@contextmanager
def _progress_display(columns: Sequence[ProgressColumn | str]) -> Iterator[Progress]:
    """A rich progress display on stderr; erased if the command fails, whose error is one line.

    After Ctrl-C it stays: it shows how far the run got.
    """
    with Progress(*columns, console=stderr) as progress:
        try:
            yield progress
        except Exception:
            progress.live.transient = True
            raise


@contextmanager
def _progress(description: str, quiet: bool) -> Iterator[Callable[[PipelineProgress], None]]:
    """A rich progress display (frames, fps, ETA); yields a pipeline progress callback."""
    if quiet:
        yield lambda update: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _FpsColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with _progress_display(columns) as progress:
        task = progress.add_task(description, total=None)

        def update(state: PipelineProgress) -> None:
            progress.update(task, completed=state.frames, total=state.total)

        yield update


def _openpose_dir(explicit: Path | None, beside: Path) -> Path:
    """``--openpose-dir``, else ``NAME_openpose/`` next to the main output ``beside``."""
    return explicit if explicit is not None else beside.with_name(f"{beside.stem}_openpose")


def _write_json_file(path: Path, data: Any, force: bool) -> Path:
    """Write ``data`` as JSON atomically (temporary name, then rename)."""
    from posecli.io.sinks import check_output, temporary_path

    check_output(path, force=force)
    temporary = temporary_path(path)
    try:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
    return path


def _set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch (0: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _load_estimator(options: InferenceOptions) -> Estimator:
    """Load the model (ModelNotFoundError / CheckpointError: exit 1) and build the Estimator."""
    from posecli.estimator import Estimator
    from posecli.weights import load_model

    _set_threads(options.threads)
    model = load_model(options.model, device=options.inference.device)
    return Estimator(model, options.inference, options.decode)


def _check_outputs(
    outputs: Sequence[Path | None], force: bool, directories: Sequence[Path] = ()
) -> None:
    """Fail early (before loading a model) on outputs that exist without ``--force``."""
    from posecli.io.sinks import check_output

    for path in outputs:
        if path is not None:
            check_output(path, force=force)
    for path in directories:
        check_output(path, force=force, directory=True)


def _same_file(a: Path | str, b: Path | None) -> bool:
    return b is not None and "://" not in str(a) and Path(a).resolve() == b.resolve()


# ---------------------------------------------------------------------------------------------
# video


@app.command()
@with_inference_options
def video(
    source: Annotated[
        str, typer.Argument(metavar="IN", help="Video file or URL (anything ffmpeg reads).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Annotated H.264 MP4 to write.")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="JSON-lines tracks: one line per frame.")
    ] = None,
    no_video: Annotated[
        bool, typer.Option("--no-video", help="Write no video, only --json / --format outputs.")
    ] = False,
    start: Annotated[float | None, typer.Option(min=0.0, help="Start at this time, s.")] = None,
    end: Annotated[float | None, typer.Option(min=0.0, help="Stop at this time, s.")] = None,
    every: Annotated[int, typer.Option(min=1, help="Process one frame in N.")] = 1,
    smooth: Annotated[
        bool, typer.Option("--smooth", help="One-Euro smoothing of tracked keypoints.")
    ] = False,
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", help="openpose: also per-frame OpenPose JSON (COCO-18)."),
    ] = OutputFormat.posecli,
    openpose_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of the OpenPose JSON files (default: OUT_openpose/)."),
    ] = None,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
) -> None:
    """Find and track people in a video: annotated MP4 (audio kept) and/or JSON tracks."""
    from posecli.io.sources import VideoSource

    _setup_logging(quiet)
    openpose = _video_outputs(source, out, json_path, no_video, output_format, openpose_dir)
    _check_outputs([out, json_path], force, [openpose] if openpose else [])
    _check_image_outputs([], [], None, openpose, force)  # OpenPose files there already
    with VideoSource(source, start=start, end=end, every=every) as frames:
        estimator = _load_estimator(options)  # after the input is known to be readable
        total = None if quiet else _expected_frames(frames)
        stats = _run_stream(
            frames,
            estimator,
            out=out,
            json_path=json_path,
            openpose=openpose,
            smooth=smooth,
            force=force,
            quiet=quiet,
            total=total,
            video_info=frames.info,
            description="video",
            latency_first=False,
        )
    written = _written(out, json_path, openpose)
    _say(quiet, f"{stats.frames} frames at {stats.fps:.1f} fps: {written}")


def _video_outputs(
    source: str,
    out: Path | None,
    json_path: Path | None,
    no_video: bool,
    output_format: OutputFormat,
    openpose_dir: Path | None,
) -> Path | None:
    """Check the output options of ``video`` (UsageError); return the OpenPose folder, if any."""
    if openpose_dir is not None:
        output_format = OutputFormat.openpose
    if no_video and out is not None:
        raise UsageError("--out and --no-video exclude each other")
    if not no_video and out is None:
        raise UsageError("--out OUT.mp4 is required (or --no-video with --json)")
    main_output = out or json_path
    if main_output is None and output_format is not OutputFormat.openpose:
        raise UsageError("nothing to write: give --json or --format openpose with --no-video")
    if out is not None and out.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise UsageError(f"--out must name an .mp4 file, got {out}")
    if _same_file(source, out) or _same_file(source, json_path):
        raise UsageError("an output would overwrite the input")
    if out is not None and _same_file(out, json_path):
        raise UsageError("--out and --json name the same file")
    if output_format is not OutputFormat.openpose:
        return None
    if openpose_dir is None and main_output is None:
        raise UsageError("--format openpose with --no-video needs --openpose-dir or --json")
    return _openpose_dir(openpose_dir, main_output)  # type: ignore[arg-type]


def _expected_frames(frames: VideoSource) -> int | None:
    """Frames the video should yield, for the progress bar; ``None`` when it cannot tell."""
    try:
        return frames.expected_frames()
    except PoseCliError as error:  # decoding will tell what is wrong, if anything
        logger.debug("frame count unknown: %s", error)
        return None


def _written(*paths: Path | None) -> str:
    return ", ".join(str(path) for path in paths if path is not None)


def _run_stream(
    frames: Iterable[SourceFrame],
    estimator: Estimator,
    *,
    out: Path | None,
    json_path: Path | None,
    openpose: Path | None,
    smooth: bool,
    force: bool,
    quiet: bool,
    total: int | None,
    video_info: VideoInfo | None,
    description: str,
    latency_first: bool,
    window: _Window | None = None,
    stop: threading.Event | None = None,
) -> PipelineStats:
    """Open the sinks of a video or camera run, track and draw, and run the pipeline.

    ``video_info`` describes the source video (frame rate, timescale, audio), ``None`` for a
    camera. ``window`` shows the annotated frames and sets ``stop`` when the user quits.

    Leaving the sinks' ``with`` blocks on an exception (Ctrl-C included) finalises them with the
    frames done: a playable MP4, complete JSON lines.
    """
    from fractions import Fraction

    from posecli.io.draw import draw_poses
    from posecli.io.sinks import JsonLinesSink, OpenPoseSink, VideoSink
    from posecli.pipeline import openpose_writer, run_pipeline, track_writer, video_writer
    from posecli.track import Tracker, TrackerConfig

    with ExitStack() as outputs:
        sinks = []
        if out is not None:
            rate = video_info.frame_rate if video_info is not None else Fraction(30)
            video_sink = VideoSink(
                out,
                rate,
                audio_source=video_info.source if video_info and video_info.has_audio else None,
                timescale=_timescale(video_info),
                force=force,
            )
            sinks.append(video_writer(outputs.enter_context(video_sink)))
        if json_path is not None:
            sinks.append(track_writer(outputs.enter_context(JsonLinesSink(json_path, force=force))))
        if openpose is not None:
            prefix = (out or json_path or openpose).stem
            openpose_sink = OpenPoseSink(openpose, prefix=prefix, force=force)
            sinks.append(openpose_writer(outputs.enter_context(openpose_sink)))
        if window is not None:
            sinks.append(window)
        drawing = out is not None or window is not None
        with _progress(description, quiet) as progress:
            return run_pipeline(
                frames,
                estimator,
                sinks,
                tracker=Tracker(TrackerConfig(smooth=smooth)),
                draw=draw_poses if drawing else None,
                latency_first=latency_first,
                total=total,
                progress=progress,
                stop=stop,
            )


def _timescale(video_info: VideoInfo | None) -> int | None:
    """MP4 ticks per second of the source stream, so that variable timestamps stay exact."""
    if video_info is None or not video_info.time_base:
        return None
    return round(1 / video_info.time_base)


# ---------------------------------------------------------------------------------------------
# webcam


class _Window:
    """A display sink: the annotated frames with their FPS; ``q`` or Esc (or closing) stops.

    Every OpenCV window call happens here, on the pipeline's writer thread: OpenCV's GUI (Qt)
    must be driven from one thread. The window goes away with the process.
    """

    TITLE = "posecli webcam (q or Esc quits)"

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._last: float | None = None
        self._fps = 0.0

    def __call__(self, frame: Frame, image: np.ndarray) -> None:
        import cv2

        from posecli.io.draw import draw_fps

        now = time.perf_counter()
        if self._last is not None and now > self._last:
            instant = 1.0 / (now - self._last)
            self._fps = 0.9 * self._fps + 0.1 * instant if self._fps else instant
        self._last = now
        shown = cv2.cvtColor(draw_fps(image.copy(), self._fps), cv2.COLOR_RGB2BGR)
        try:
            cv2.imshow(self.TITLE, shown)
            key = cv2.waitKey(1) & 0xFF
            closed = cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error as error:
            first_line = str(error).strip().splitlines()[-1]
            raise PoseCliError(f"cannot show a window ({first_line}); use --no-display") from None
        if key in (ord("q"), ord("Q"), 27) or closed:
            self.stop.set()


def display_available() -> bool:
    """Whether a window can be shown: a display server (on Linux) and an OpenCV GUI backend.

    Only checks: the window itself is created by :class:`_Window` on the writer thread.
    """
    import cv2

    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    backend = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return backend is not None and backend.group(1).upper() != "NONE"


@app.command()
@with_inference_options
def webcam(
    camera: Annotated[
        str, typer.Option(help="Camera index (0, 1…) or stream URL (also a video file).")
    ] = "0",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Record the annotated stream to this MP4.")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="JSON-lines tracks: one line per frame.")
    ] = None,
    no_display: Annotated[bool, typer.Option("--no-display", help="Show no window.")] = False,
    smooth: Annotated[
        bool, typer.Option("--smooth", help="One-Euro smoothing of tracked keypoints.")
    ] = False,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
) -> None:
    """Live poses from a camera: a window with skeletons and FPS (q or Esc quits)."""
    from posecli.io.sources import CameraSource

    _setup_logging(quiet)
    if out is not None and out.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise UsageError(f"--out must name an .mp4 file, got {out}")
    show = not no_display and display_available()
    if not no_display and not show:
        logger.warning("no display available: running without a window")
    if not show and out is None and json_path is None:
        raise UsageError("no display and nothing to write: give --out or --json")
    _check_outputs([out, json_path], force)
    estimator = _load_estimator(options)
    stop = threading.Event()
    window = _Window(stop) if show else None
    with CameraSource(camera) as frames:
        stats = _run_stream(
            frames,
            estimator,
            out=out,
            json_path=json_path,
            openpose=None,
            smooth=smooth,
            force=force,
            quiet=quiet,
            total=None,
            video_info=None,
            description="webcam",
            latency_first=True,
            window=window,
            stop=stop,
        )
    summary = f"{stats.frames} frames at {stats.fps:.1f} fps ({stats.dropped} stale frames dropped)"
    _say(quiet, summary + (": " + _written(out, json_path) if out or json_path else ""))


# ---------------------------------------------------------------------------------------------
# images and eval


def _detect_images(
    frames: ImageSource,
    estimator: Estimator,
    *,
    image_ids: Sequence[int],
    json_path: Path | None,
    out_dir: Path | None,
    openpose: Path | None,
    force: bool,
    quiet: bool,
    done: list[int] | None = None,
) -> tuple[list[dict], PipelineStats]:
    """Run still images through the pipeline into COCO results (also saved to ``json_path``).

    ``image_ids[i]`` is the id of ``frames.paths[i]``. ``done`` receives the index of every
    image written, also when the run is interrupted.

    Returns:
        The COCO results and the pipeline stats.
    """
    from posecli.io.draw import draw_poses
    from posecli.io.sinks import CocoResultsSink, ImageDirectorySink, OpenPoseSink
    from posecli.pipeline import (
        coco_collector,
        coco_writer,
        image_writer,
        openpose_writer,
        run_pipeline,
    )

    results: list[dict] = []
    written = done if done is not None else []
    with frames, ExitStack() as outputs:
        sinks = [coco_collector(results, image_ids)]
        if json_path is not None:
            coco = outputs.enter_context(CocoResultsSink(json_path, force=force))
            sinks.append(coco_writer(coco, image_ids))
        if out_dir is not None:
            annotated = outputs.enter_context(ImageDirectorySink(out_dir, force=force))
            sinks.append(image_writer(annotated))
        if openpose is not None:
            sinks.append(
                openpose_writer(outputs.enter_context(OpenPoseSink(openpose, force=force)))
            )
        sinks.append(lambda frame, image: written.append(frame.index))
        with _progress("images", quiet) as progress:
            stats = run_pipeline(
                frames,
                estimator,
                sinks,
                draw=draw_poses if out_dir is not None else None,
                total=len(frames),
                progress=progress,
            )
    return results, stats


def _listing_path(json_path: Path) -> Path:
    """``POSES.images.json`` beside ``POSES.json``: the id of every image, with its file name."""
    return json_path.with_name(f"{json_path.stem}.images.json")


def _image_listing(frames: ImageSource, image_ids: Sequence[int], done: Sequence[int]) -> list:
    """``{"id", "file_name"}`` of the images done, in order; a skipped one adds ``"error"``."""
    errors = dict(frames.skipped)
    listing = []
    for index in sorted({*done, *errors}):
        entry: dict[str, Any] = {"id": image_ids[index], "file_name": frames.paths[index].name}
        if index in errors:
            entry["error"] = errors[index]
        listing.append(entry)
    return listing


def _check_image_outputs(
    paths: Sequence[Path],
    outputs: Sequence[Path],
    out_dir: Path | None,
    openpose: Path | None,
    force: bool,
) -> None:
    """Fail before the model loads on an output that would replace an input image, and on
    annotated copies or OpenPose files that exist already (without ``--force``)."""
    from posecli.io.sinks import OpenPoseSink, check_directory_files

    folders = {path.resolve().parent for path in paths}
    if out_dir is not None and out_dir.resolve() in folders:
        raise UsageError(f"--out-dir {out_dir} holds the input images: copies would replace them")
    if any(_same_file(path, output) for path in paths for output in outputs):
        raise UsageError("an output would overwrite an input image")
    if out_dir is not None:
        check_directory_files(out_dir, [path.name for path in paths], force=force)
    if openpose is not None:
        OpenPoseSink.check(openpose, force=force)


@app.command()
@with_inference_options
def images(
    inputs: Annotated[
        list[str],
        typer.Argument(metavar="DIR|GLOB|FILE...", help="Image folders, glob patterns or files."),
    ],
    json_path: Annotated[Path, typer.Option("--json", help="COCO keypoint results file to write.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Folder for annotated copies of the images.")
    ] = None,
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", help="openpose: also one OpenPose JSON per image (COCO-18)."),
    ] = OutputFormat.posecli,
    openpose_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of the OpenPose JSON files (default: POSES_openpose/)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at an unreadable image (default: skip it).")
    ] = False,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
) -> None:
    """Find people in still images: COCO results JSON (+ image-id listing), annotated copies."""
    from posecli.io.sources import ImageSource

    _setup_logging(quiet)
    openpose = None
    if output_format is OutputFormat.openpose or openpose_dir is not None:
        openpose = _openpose_dir(openpose_dir, json_path)
    listing_path = _listing_path(json_path)
    frames = ImageSource(inputs, skip_unreadable=not strict)  # a missing input fails here
    _check_image_outputs(frames.paths, [json_path, listing_path], out_dir, openpose, force)
    directories = [path for path in (out_dir, openpose) if path is not None]
    _check_outputs([json_path, listing_path], force, directories)
    ids = [image_id for image_id, _ in frames.ids]
    estimator = _load_estimator(options)
    done: list[int] = []
    outputs = {"json_path": json_path, "out_dir": out_dir, "openpose": openpose}
    try:
        results, stats = _detect_images(
            frames, estimator, image_ids=ids, **outputs, force=force, quiet=quiet, done=done
        )
    except KeyboardInterrupt:  # the results of the images done are saved: list them too
        if done:
            _write_json_file(listing_path, _image_listing(frames, ids, done), force)
        raise
    _write_json_file(listing_path, _image_listing(frames, ids, done), force)
    people = f"{len(results)} people in {stats.frames} images ({stats.fps:.1f} images/s)"
    skipped = f", {len(frames.skipped)} unreadable skipped" if frames.skipped else ""
    _say(quiet, f"{people}{skipped}: {_written(json_path, listing_path, out_dir, openpose)}")


@app.command("eval")
@with_inference_options
def evaluate(
    annotations: Annotated[Path, typer.Option(help="COCO person_keypoints JSON (ground truth).")],
    images_dir: Annotated[
        Path, typer.Option("--images", help="Folder holding the annotated images.")
    ],
    metrics: Annotated[
        Path | None,
        typer.Option(help="Write the metrics here as JSON; detections go beside it."),
    ] = None,
    by_height: Annotated[
        bool,
        typer.Option(
            "--by-height",
            help="Also print the share of people found (OKS ≥ 0.5 / 0.75) per band of their "
            "height at the network input.",
        ),
    ] = False,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
) -> None:
    """COCO keypoint AP of a model on an annotated image set (same pipeline as `images`)."""
    from posecli.evaluate import SUMMARY_KEYS, coco_keypoint_ap, recall_by_height

    _setup_logging(quiet)
    frames, ids = _annotated_images(annotations, images_dir, by_height)
    detections = _detections_path(metrics) if metrics is not None else None
    _check_outputs([metrics, detections], force)
    estimator = _load_estimator(options)
    results, stats = _detect_images(
        frames,
        estimator,
        image_ids=ids,
        json_path=detections,
        out_dir=None,
        openpose=None,
        force=force,
        quiet=quiet,
    )
    scores: dict[str, Any] = coco_keypoint_ap(annotations, results)
    for key in SUMMARY_KEYS:
        stdout.print(f"{key:<5} {scores[key]:.4f}")
    if by_height:
        scores["by_height"] = recall_by_height(
            annotations, results, lambda height, width: estimator.geometry(height, width).factor_y
        )
        _print_bands(scores["by_height"])
    if metrics is not None:
        _write_json_file(metrics, scores, force)
    summary = f"{len(results)} people in {stats.frames} images, model {estimator.model.name}"
    if estimator.refinement is not None:
        summary += f" refined by {estimator.refinement.refiner.name}"
    _say(quiet, summary + (f": {_written(metrics, detections)}" if metrics else ""))


def _print_bands(bands: list[dict[str, Any]]) -> None:
    """One stdout line per band of ``recall_by_height``."""
    for band in bands:
        low, high = band["low"], band["high"]
        heights = f"{low:.0f}–{high:.0f}" if high is not None else f"≥ {low:.0f}"
        stdout.print(
            f"height {heights} px: {band['people']} people, found {band['found50']:.2f} "
            f"at OKS 0.5, {band['found75']:.2f} at 0.75"
        )


def _annotated_images(
    annotations: Path, images_dir: Path, sizes: bool
) -> tuple[ImageSource, list[int]]:
    """The images of an annotation file and their ids, every entry and file checked (before
    the model loads): InputError for a bad entry or a missing image."""
    from posecli.evaluate import check_images, load_annotations
    from posecli.io.sources import ImageSource

    ground_truth = load_annotations(annotations)
    check_images(ground_truth, annotations, sizes=sizes)
    ids_by_path = {
        (images_dir / image["file_name"]).resolve(): image_id
        for image_id, image in ground_truth.imgs.items()
    }
    if not ids_by_path:
        raise InputError(f"{annotations} lists no images")
    frames = ImageSource(sorted(ids_by_path))
    return frames, [ids_by_path[path.resolve()] for path in frames.paths]


def _detections_path(metrics: Path) -> Path:
    """``METRICS.detections.json`` beside the metrics file."""
    return metrics.with_name(f"{metrics.stem}.detections.json")


# ---------------------------------------------------------------------------------------------
# train

_TRAIN = TrainConfig(annotations="", images="")
_LABEL = LabelConfig()


@app.command()
def train(
    annotations: Annotated[
        list[Path],
        typer.Option(help="COCO person_keypoints JSON to train on; repeat to join several."),
    ],
    images_dir: Annotated[
        list[Path],
        typer.Option("--images", help="Folder of the training images, one per --annotations."),
    ],
    val_annotations: Annotated[
        Path | None, typer.Option(help="COCO validation set: AP after each epoch.")
    ] = None,
    val_images: Annotated[
        Path | None, typer.Option(help="Validation images (default: beside the annotations).")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help=f"Network shape: {', '.join(MODEL_PRESETS)}; or a top-down refiner (issue 16, "
            f"trained on person crops): {', '.join(REFINER_PRESETS)} (default: {_TRAIN.preset}; "
            "not with --init, whose network it is)."
        ),
    ] = None,
    init: Annotated[
        str | None, typer.Option(help="Start from this checkpoint or model name.")
    ] = None,
    init_stacks: Annotated[
        int,
        typer.Option(
            min=0,
            help="Grow the --init network to this many hourglass stacks, new ones copied from "
            "its last (0: keep its shape).",
        ),
    ] = _TRAIN.init_stacks,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the images.")] = _TRAIN.epochs,
    max_steps: Annotated[
        int, typer.Option(min=0, help="Stop after this many steps (0: all epochs).")
    ] = _TRAIN.max_steps,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step.")] = _TRAIN.batch_size,
    input_size: Annotated[
        int, typer.Option(min=64, help="Square training crop, multiple of 64.")
    ] = _TRAIN.input_size,
    lr: Annotated[float, typer.Option(min=0.0, help="Learning rate.")] = _TRAIN.lr,
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = _TRAIN.optimizer,
    loss: Annotated[
        str, typer.Option(help="focal (focal L2) or l2; the paper trains l2, then focal.")
    ] = _TRAIN.loss.kind,
    warmup_steps: Annotated[
        int, typer.Option(min=0, help="Linear learning-rate warm-up steps.")
    ] = _TRAIN.warmup_steps,
    checkpoint_every: Annotated[
        int, typer.Option(min=0, help="Also checkpoint every N steps (0: each epoch only).")
    ] = _TRAIN.checkpoint_every_steps,
    workers: Annotated[int, typer.Option(min=0, help="Data-loading processes.")] = _TRAIN.workers,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = _TRAIN.device,
    seed: Annotated[
        int, typer.Option(help="Data order, augmentation, initial weights.")
    ] = _TRAIN.seed,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path(_TRAIN.out),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")
    ] = False,
    scale_min: Annotated[
        float,
        typer.Option(min=0.05, help="Smallest random zoom (1: the long side fills the crop)."),
    ] = _TRAIN.augment.scale_min,
    scale_max: Annotated[float, typer.Option(min=0.05, help="Largest random zoom.")] = (
        _TRAIN.augment.scale_max
    ),
    mosaic: Annotated[
        float,
        typer.Option(help="Probability of a 2×2 mosaic of four images (people at half size)."),
    ] = _TRAIN.augment.mosaic_probability,
    min_keypoint_score: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Pseudo-labels: keypoints scored below are masked out (neither taught present "
            "nor absent); at most the --keep-keypoint the labels were made with, or those "
            "kept keypoints are lost.",
        ),
    ] = _TRAIN.min_keypoint_score,
    amp: Annotated[
        bool, typer.Option(help="Mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16.")
    ] = _TRAIN.amp,
    pretrained: Annotated[
        bool,
        typer.Option(help="Start a fresh network's EfficientNet-Lite0 encoder from ImageNet."),
    ] = _TRAIN.pretrained,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads for torch (0: default).")] = 0,
    quiet: Quiet = False,
) -> None:
    """Train a network on COCO-format keypoints (focal L2 loss, five-scale supervision)."""
    from posecli.train.trainer import train as run_training

    _setup_logging(quiet)
    _set_threads(threads)
    if init is not None and preset is not None:
        raise UsageError(
            f"--preset {preset} and --init exclude each other: the network is --init's "
            "(grow it with --init-stacks)"
        )
    if len(annotations) != len(images_dir):
        raise UsageError(
            f"{len(annotations)} --annotations but {len(images_dir)} --images: give one image "
            "folder per annotation file, in the same order"
        )
    config = TrainConfig(
        annotations=str(annotations[0]),
        images=str(images_dir[0]),
        more_datasets=tuple(
            (str(a), str(i)) for a, i in zip(annotations[1:], images_dir[1:], strict=True)
        ),
        out=str(out),
        val_annotations=str(val_annotations) if val_annotations else None,
        val_images=str(val_images) if val_images else None,
        preset=preset or ("" if init else _TRAIN.preset),  # "": none, the network is --init's
        init=init,
        init_stacks=init_stacks,
        resume=resume,
        input_size=input_size,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        workers=workers,
        optimizer=optimizer,
        lr=lr,
        warmup_steps=warmup_steps,
        checkpoint_every_steps=checkpoint_every,
        loss=replace(_TRAIN.loss, kind=loss),
        augment=replace(
            _TRAIN.augment, scale_min=scale_min, scale_max=scale_max, mosaic_probability=mosaic
        ),
        min_keypoint_score=min_keypoint_score,
        amp=amp,
        pretrained=pretrained,
        device=device,
        seed=seed,
    )
    with _training_progress(quiet) as progress:
        checkpoint = run_training(config, progress)
    _say(quiet, f"trained: {checkpoint}")


@contextmanager
def _training_progress(quiet: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A rich progress bar over optimiser steps, with the loss; validation AP printed."""
    if quiet:
        yield lambda record: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with _progress_display(columns) as progress:
        task = progress.add_task("train", total=None, loss="...")

        def update(record: dict[str, Any]) -> None:
            event = record.get("event")
            if event == "start":
                progress.update(task, total=record["total_steps"], completed=record["step"])
            elif event == "batch":
                progress.update(task, completed=record["step"], loss=f"{record['loss']:.4g}")
            elif event == "val":
                scores = " ".join(f"{key} {record[key]:.3f}" for key in ("AP", "AP50", "AR"))
                progress.console.print(f"epoch {record.get('epoch')}: {scores}")

        yield update


# ---------------------------------------------------------------------------------------------
# label and export


@app.command()
def label(
    images_inputs: Annotated[
        list[str],
        typer.Option("--images", help="Image folder, glob or file; repeat for more."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pseudo-label COCO JSON to write.")],
    teachers: Annotated[
        Path, typer.Option(help="Folder of the teacher ONNX files (see ../shared/teachers).")
    ],
    teacher: Annotated[
        str,
        typer.Option(
            help="thunder (top-down on person boxes: hand-drawn ones from a person_boxes.json "
            "beside the images, else MoveNet MultiPose's), or movenet, openpose or both "
            "(bottom-up passes fused)."
        ),
    ] = _LABEL.teacher,
    keep_keypoint: Annotated[
        float,
        typer.Option(help="Keypoint confidence (0–1) needed to keep a keypoint."),
    ] = _LABEL.keep_keypoint,
    confident_person: Annotated[
        float,
        typer.Option(help="Person score (0–1) needed to label a person."),
    ] = _LABEL.confident_person,
    min_keypoints: Annotated[
        int, typer.Option(help="Kept keypoints (1–17) a labelled person needs.")
    ] = _LABEL.min_keypoints,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Pseudo-label photos with teacher models into COCO keypoints (resumable)."""
    from posecli.io.sources import expand_image_inputs
    from posecli.label import label_images

    _setup_logging(quiet)
    _check_label_output(out, force)
    paths = expand_image_inputs(images_inputs)
    config = LabelConfig(
        teacher=teacher,
        keep_keypoint=keep_keypoint,
        confident_person=confident_person,
        min_keypoints=min_keypoints,
    )
    with _labelling_progress(quiet) as progress:
        written = label_images(paths, teachers, out, config, progress)
    _say(quiet, f"labelled {len(paths)} images: {written}")


@app.command("import-lspet")
def import_lspet(
    dataset: Annotated[
        Path, typer.Argument(help="LSPet folder: joints.mat and images/im00001.jpg ….")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="COCO keypoint JSON to write.")],
    teachers: Annotated[
        Path, typer.Option(help="Folder of the teacher ONNX files (see ../shared/teachers).")
    ],
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """LSPet's human joints as COCO keypoints, face points and bystanders from the teachers."""
    from posecli.train.lspet import import_lspet as run_import

    _setup_logging(quiet)
    _check_label_output(out, force)
    with _labelling_progress(quiet) as progress:
        written = run_import(dataset, teachers, out, LabelConfig(), progress)
    _say(quiet, f"imported LSPet: {written}")


def _check_label_output(out: Path, force: bool) -> None:
    """Refuse an existing label file without --force, unless its run is being resumed."""
    from posecli.label import partial_path

    if out.exists() and not partial_path(out).exists() and not force:
        raise OutputError(f"{out} exists (use --force to overwrite)")


@contextmanager
def _labelling_progress(quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar over labelled images."""
    if quiet:
        yield lambda done, total: None
        return
    columns = (TextColumn("label"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with _progress_display(columns) as progress:
        task = progress.add_task("label", total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@app.command()
def export(
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint path or model name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write.")],
    half: Annotated[
        bool, typer.Option("--half/--no-half", help="Store float tensors as float16.")
    ] = True,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Copy a checkpoint for shipping: fp16 storage, training state dropped, provenance kept."""
    from posecli.weights import checkpoint_kind, load_model, load_refiner, save_checkpoint

    _setup_logging(quiet)
    _check_outputs([out], force)
    loader = load_refiner if checkpoint_kind(model) == "refiner" else load_model
    source = loader(model)
    provenance = {**source.provenance, "exported_from": source.name, "half": half}
    written = save_checkpoint(
        out, source.network, source.config, source.preprocessing, provenance, half=half
    )
    _say(quiet, f"exported {source.name}: {written} ({written.stat().st_size / 1e6:.1f} MB)")


# ---------------------------------------------------------------------------------------------
# info


@app.command()
def info() -> None:
    """Versions, device, native decoder and known models."""
    import numpy
    import torch

    from posecli.decode import native_available
    from posecli.weights import list_models, resolve_device

    cuda = torch.cuda.is_available()
    stdout.print(f"posecli {__version__}")
    stdout.print(f"python  {platform.python_version()} ({sys.executable})")
    stdout.print(f"torch   {torch.__version__}, numpy {numpy.__version__}")
    cuda_note = f"{torch.cuda.device_count()} CUDA device(s)" if cuda else "CUDA not available"
    stdout.print(f"device  {resolve_device('auto')} (auto; {cuda_note})")
    stdout.print(f"native decoder  {'built' if native_available() else 'NOT built (slow NumPy)'}")
    stdout.print("models:")
    for entry in list_models():
        state = "present" if entry.present else "missing"
        stdout.print(f"  {entry.name:<20} {state:<8} {entry.path}  ({entry.description})")
    stdout.print(f"presets (for train --preset): {', '.join(MODEL_PRESETS)}")
    stdout.print(f"refiner presets (train --preset, issue 16): {', '.join(REFINER_PRESETS)}")


# ---------------------------------------------------------------------------------------------
# Entry point


def _version(value: bool) -> None:
    if value:
        stdout.print(f"posecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Multi-person 2D pose estimation (Simple Pose / IMHN) for videos, webcams and images."""


#: click's exception base class (typer may vendor click): usage errors and friends.
_ClickError = next(k for k in typer.BadParameter.__mro__ if k.__name__ == "ClickException")


def _fail(message: str) -> None:
    """One line on stderr."""
    stderr.print(f"posecli: error: {' '.join(message.split())}", markup=False)


class _Termination:
    """A SIGTERM handler that does what Ctrl-C does, so the outputs are finalised the same way.

    It calls the SIGINT handler in force (the trainer's saves after the step under way), or
    raises ``KeyboardInterrupt`` where SIGINT is ignored; ``received`` says it happened.
    """

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = True
        on_interrupt = signal.getsignal(signal.SIGINT)
        if not callable(on_interrupt):
            raise KeyboardInterrupt
        on_interrupt(signal.SIGINT, frame)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[_Termination]:
    """Handle SIGTERM like Ctrl-C while a command runs (main thread only: Python's rule)."""
    termination = _Termination()
    if threading.current_thread() is not threading.main_thread():
        yield termination
        return
    previous = signal.signal(signal.SIGTERM, termination)
    try:
        yield termination
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Ctrl-C exits with 130 and SIGTERM with 143, both after the outputs were finalised.
    """
    with _sigterm_as_interrupt() as termination:
        code = _run_command(argv, termination)
    return EXIT_TERMINATED if termination.received and code == EXIT_INTERRUPTED else code


def _run_command(argv: Sequence[str] | None, termination: _Termination) -> int:
    """:func:`run` without the SIGTERM handler: every error becomes one line and a code."""
    command = typer.main.get_command(app)
    try:
        with _restored_logging():
            code = command.main(
                args=list(argv) if argv is not None else None,
                prog_name="posecli",
                standalone_mode=False,
            )
    except _ClickError as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            stderr.print(error.format_message(), markup=False)
            return EXIT_USAGE
        context = getattr(error, "ctx", None)
        where = f" (see {context.command_path} --help)" if context is not None else ""
        _fail(error.format_message() + where)
        return error.exit_code
    except ResumableInterruptError as error:
        stderr.print(f"posecli: {error}", markup=False)
        return error.exit_code
    except PoseCliError as error:
        _fail(str(error))
        return error.exit_code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        what = "terminated (SIGTERM)" if termination.received else "interrupted"
        stderr.print(f"posecli: {what}; outputs hold the work done so far, finalised")
    return code if isinstance(code, int) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point (``posecli``) and ``python -m posecli``."""
    sys.exit(run(argv))
