"""The ``posecli`` command line: video, webcam, images, eval, train, label, export and info.

This is the only module that imports typer and rich, prints, and exits: it parses options into
the calls of ``posecli.runs`` and the trainer, shows their progress, and maps errors to exit
codes. Library errors (``PoseCliError``) become one line on stderr and their exit code: 1 for
runtime failures, 2 for bad usage; Ctrl-C exits with 130 and SIGTERM with 143 once the outputs
hold the work already done.

Commands import the heavy modules (torch, OpenCV, the pipeline) when they run, so that
``posecli --help`` and usage errors answer at once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import platform
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
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

from posecli import __version__, runs
from posecli.config import (
    MODEL_PRESETS,
    REFINER_PRESETS,
    DecodeConfig,
    InferenceConfig,
    LabelConfig,
    TrainConfig,
)
from posecli.errors import OutputError, PoseCliError, ResumableInterruptError, UsageError
from posecli.io import display
from posecli.runs import ImageOutputs, InferenceOptions, StreamOutputs
from posecli.signals import Termination, sigterm_as_interrupt

if TYPE_CHECKING:
    from posecli.io.sources import VideoSource
    from posecli.pipeline import PipelineProgress

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
_MAX_INPUT_SIZE = 8192  # largest --box-size / --long-side, pixels


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


_REQUIRED = inspect.Parameter.empty  # the default of an option that must be given


def _option(name: str, kind: Any, default: Any, help: str, *flags: str, **settings: Any) -> Any:
    """A keyword-only command parameter ``name`` of type ``kind``: the option ``flags`` (default
    ``--name``) with its help and limits, as ``Annotated[kind, typer.Option(...)]``."""
    option = typer.Option(*flags, help=help, **settings)
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(name, keyword, default=default, annotation=Annotated[kind, option])


def _with_options(
    parameters: Sequence[inspect.Parameter], build: Callable[..., Any], keyword: str, first=False
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the options ``parameters``, passed to it as ``keyword=build(**values)``.

    The command declares ``keyword``; typer sees the individual options instead, after the
    command's own (before them with ``first``).
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name != keyword]
        names = [parameter.name for parameter in parameters]

        @functools.wraps(command)
        def wrapper(**values: Any) -> None:
            shared = {name: values.pop(name) for name in names}
            command(**{keyword: build(**shared)}, **values)

        if first:  # the command's own options follow, keyword-only too
            own = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in own]
        order = [*parameters, *own] if first else [*own, *parameters]
        wrapper.__signature__ = signature.replace(parameters=order)  # type: ignore[attr-defined]
        return wrapper

    return decorate


_INFERENCE = InferenceConfig()
_DECODE = DecodeConfig()
_inference = functools.partial(_option, rich_help_panel="Inference")
_SCALES = ",".join(f"{scale:g}" for scale in _INFERENCE.scales)
_SIZES = {"min": runs.MIN_INPUT_SIZE, "max": _MAX_INPUT_SIZE}

#: The options of every inference command (``options: InferenceOptions``).
_INFERENCE_OPTIONS = (
    _inference("model", str, "default", "Registered model name or checkpoint path.",
               "--model", "-m"),
    _inference("device", str, _INFERENCE.device, "auto, cpu, cuda or cuda:N."),
    _inference("half", bool, _INFERENCE.half, "fp16 inference (CUDA only).", "--half"),
    _inference(
        "scales", str, _SCALES, "Search scales, e.g. 1 or 0.5,1,1.5,2 (heatmaps averaged).",
        callback=_check_scales,
    ),
    _inference("flip", bool, _INFERENCE.flip, "Also run the mirrored image.", "--flip/--no-flip"),
    _inference("box_size", int, _INFERENCE.box_size, "Network input height at scale 1, pixels.",
               **_SIZES),
    _inference(
        "long_side", int, _INFERENCE.long_side,
        "Resize so the longer image side is N at scale 1; overrides --box-size (0: off).",
        min=0, max=_MAX_INPUT_SIZE,
    ),
    _inference("batch_size", int, _INFERENCE.batch_size, "Frames per forward pass.", min=1),
    _inference("peak_threshold", float, _DECODE.peak_threshold,
               "Minimum keypoint heatmap peak (> 0).", min=0.0),
    _inference("part_threshold", float, _DECODE.part_threshold,
               "Body-part heatmap value a link must exceed.", min=0.0),
    _inference("min_score", float, _DECODE.min_person_score,
               "Drop people whose score (the one reported, 0–1) is lower.", min=0.0, max=1.0),
    _inference("min_part_score", float, _DECODE.min_mean_part_score,
               "Decoder: drop people whose total score per keypoint is lower.", min=0.0),
    _inference("max_people", int, _DECODE.max_people, "Keep the N best people (0: all).", min=0),
    _inference("threads", int, 0, "CPU threads for torch (0: torch's default).", min=0),
    _inference("refine", bool, _INFERENCE.refine,
               "Refine the people top-down with --refiner and merge.", "--refine/--no-refine"),
    _inference("refiner", str, _INFERENCE.refiner,
               "Refiner checkpoint path (or registered name).", "--refiner"),
    _inference("instances", int, _INFERENCE.instances,
               "Instance selectors run per box (0: all the refiner has).", min=0),
)


def inference_options(
    *,
    model: str,
    threads: int,
    scales: str,
    peak_threshold: float,
    part_threshold: float,
    min_score: float,
    min_part_score: float,
    max_people: int,
    **inference: Any,
) -> InferenceOptions:
    """The record of the shared inference options (UsageError for settings no run can use)."""
    decode = DecodeConfig(
        peak_threshold=peak_threshold,
        part_threshold=part_threshold,
        min_mean_part_score=min_part_score,
        min_person_score=min_score,
        max_people=max_people,
    )
    configs = InferenceConfig(scales=_parse_scales(scales), **inference), decode
    return InferenceOptions(model, *configs, threads=threads)


with_inference_options = _with_options(_INFERENCE_OPTIONS, inference_options, "options")
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, warnings or summary.")]
_TRACKS_HELP = "JSON-lines tracks: one line per frame."
Tracks = Annotated[Path | None, typer.Option("--json", help=_TRACKS_HELP)]
Smooth = Annotated[bool, typer.Option("--smooth", help="One-Euro smoothing of tracked keypoints.")]
_OPENPOSE_HELP = "Folder of the OpenPose JSON files (default: NAME_openpose/ beside the output)."
OpenPoseDir = Annotated[Path | None, typer.Option(help=_OPENPOSE_HELP)]


class OutputFormat(str, Enum):
    """Extra per-frame JSON formats."""

    posecli = "posecli"
    openpose = "openpose"


# ---------------------------------------------------------------------------------------------
# Logging and progress


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


#: The columns of a progress display: what it counts, then how fast and how long.
_COUNT = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
_TIMES = (TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


@contextmanager
def _progress_display(
    description: str, quiet: bool, columns: Sequence[ProgressColumn], **fields: Any
) -> Iterator[Callable[..., None]]:
    """A rich progress display on stderr; yields ``update(completed=, total=, **fields)``.

    Erased if the command fails, whose error is one line; after Ctrl-C it stays: it shows how
    far the run got. Quiet: ``update`` does nothing.
    """
    if quiet:
        yield lambda **changes: None
        return
    with Progress(*columns, console=stderr) as progress:
        task = progress.add_task(description, total=None, **fields)
        try:
            yield functools.partial(progress.update, task)
        except Exception:
            progress.live.transient = True
            raise


@contextmanager
def _frame_progress(description: str, quiet: bool) -> Iterator[Callable[[PipelineProgress], None]]:
    """A progress display over frames (count, fps, ETA); yields a pipeline progress callback."""
    with _progress_display(description, quiet, (*_COUNT, _FpsColumn(), *_TIMES)) as update:
        yield lambda state: update(completed=state.frames, total=state.total)


# ---------------------------------------------------------------------------------------------
# video and webcam


@app.command()
@with_inference_options
def video(
    source: Annotated[
        str, typer.Argument(metavar="IN", help="Video file or URL (anything ffmpeg reads).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Annotated H.264 MP4 to write.")
    ] = None,
    json_path: Tracks = None,
    no_video: Annotated[
        bool, typer.Option("--no-video", help="Write no video, only --json / --format outputs.")
    ] = False,
    start: Annotated[float | None, typer.Option(min=0.0, help="Start at this time, s.")] = None,
    end: Annotated[float | None, typer.Option(min=0.0, help="Stop at this time, s.")] = None,
    every: Annotated[int, typer.Option(min=1, help="Process one frame in N.")] = 1,
    smooth: Smooth = False,
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", help="openpose: also per-frame OpenPose JSON (COCO-18)."),
    ] = OutputFormat.posecli,
    openpose_dir: OpenPoseDir = None,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
) -> None:
    """Find and track people in a video: annotated MP4 (audio kept) and/or JSON tracks."""
    from posecli.io.sources import VideoSource

    _setup_logging(quiet)
    openpose = output_format is OutputFormat.openpose
    outputs = runs.video_outputs(
        source, out, json_path, no_video=no_video, openpose=openpose, openpose_dir=openpose_dir
    )
    runs.check_stream_outputs(outputs, force)
    with VideoSource(source, start=start, end=end, every=every) as frames:
        estimator = runs.load_estimator(options)  # after the input is known to be readable
        total = None if quiet else _expected_frames(frames)
        with _frame_progress("video", quiet) as progress:
            stats = runs.track_stream(
                frames,
                estimator,
                outputs,
                smooth=smooth,
                force=force,
                video_info=frames.info,
                total=total,
                progress=progress,
            )
    _say(quiet, f"{stats.frames} frames at {stats.fps:.1f} fps: {runs.written(*outputs.paths())}")


def _expected_frames(frames: VideoSource) -> int | None:
    """Frames the video should yield, for the progress bar; ``None`` when it cannot tell."""
    try:
        return frames.expected_frames()
    except PoseCliError as error:  # decoding will tell what is wrong, if anything
        logger.debug("frame count unknown: %s", error)
        return None


@app.command()
@with_inference_options
def webcam(
    camera: Annotated[
        str, typer.Option(help="Camera index (0, 1…) or stream URL (also a video file).")
    ] = "0",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Record the annotated stream to this MP4.")
    ] = None,
    json_path: Tracks = None,
    no_display: Annotated[bool, typer.Option("--no-display", help="Show no window.")] = False,
    smooth: Smooth = False,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
) -> None:
    """Live poses from a camera: a window with skeletons and FPS (q or Esc quits)."""
    from posecli.io.cameras import CameraSource

    _setup_logging(quiet)
    runs.check_video_suffix(out)
    show = not no_display and display.available()
    if not no_display and not show:
        logger.warning("no display available: running without a window")
    if not show and out is None and json_path is None:
        raise UsageError("no display and nothing to write: give --out or --json")
    outputs = StreamOutputs(out, json_path)
    runs.check_stream_outputs(outputs, force)
    estimator = runs.load_estimator(options)
    stop = threading.Event()
    window = display.Window(stop) if show else None
    with CameraSource(camera) as frames, _frame_progress("webcam", quiet) as progress:
        stats = runs.track_stream(
            frames,
            estimator,
            outputs,
            smooth=smooth,
            force=force,
            latency_first=True,
            progress=progress,
            window=window,
            stop=stop,
        )
    summary = f"{stats.frames} frames at {stats.fps:.1f} fps ({stats.dropped} stale frames dropped)"
    _say(quiet, summary + (": " + runs.written(out, json_path) if out or json_path else ""))


# ---------------------------------------------------------------------------------------------
# images and eval


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
    openpose_dir: OpenPoseDir = None,
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
        openpose = runs.openpose_folder(openpose_dir, json_path)
    outputs = ImageOutputs(json_path, out_dir, openpose)
    frames = ImageSource(inputs, skip_unreadable=not strict)  # a missing input fails here
    runs.check_image_outputs(frames.paths, outputs, force)
    estimator = runs.load_estimator(options)
    with _frame_progress("images", quiet) as progress:
        results, stats = runs.detect_images(
            frames, estimator, outputs, force=force, progress=progress
        )
    people = f"{len(results)} people in {stats.frames} images ({stats.fps:.1f} images/s)"
    skipped = f", {len(frames.skipped)} unreadable skipped" if frames.skipped else ""
    written = runs.written(json_path, outputs.listing, out_dir, openpose)
    _say(quiet, f"{people}{skipped}: {written}")


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
    from posecli.evaluate import SUMMARY_KEYS

    _setup_logging(quiet)
    frames = runs.annotated_images(annotations, images_dir, sizes=by_height)
    detections = runs.detections_path(metrics) if metrics is not None else None
    runs.check_outputs([metrics, detections], force)
    estimator = runs.load_estimator(options)
    with _frame_progress("images", quiet) as progress:
        evaluation = runs.evaluate_model(
            estimator,
            annotations,
            images_dir,
            frames=frames,
            detections=detections,
            by_height=by_height,
            force=force,
            progress=progress,
        )
    for key in SUMMARY_KEYS:
        stdout.print(f"{key:<5} {evaluation.scores[key]:.4f}")
    for band in evaluation.scores.get("by_height", []):
        low, high = band["low"], band["high"]
        heights = f"{low:.0f}–{high:.0f}" if high is not None else f"≥ {low:.0f}"
        found = f"found {band['found50']:.2f} at OKS 0.5, {band['found75']:.2f} at 0.75"
        stdout.print(f"height {heights} px: {band['people']} people, {found}")
    if metrics is not None:
        runs.write_json_atomically(metrics, evaluation.scores, force=force)
    summary = f"{len(evaluation.results)} people in {evaluation.stats.frames} images, model "
    summary += estimator.model.name
    if estimator.refinement is not None:
        summary += f" refined by {estimator.refinement.refiner.name}"
    _say(quiet, summary + (f": {runs.written(metrics, detections)}" if metrics else ""))


# ---------------------------------------------------------------------------------------------
# train

_TRAIN = TrainConfig(annotations="", images="")
_AUGMENT, _LABEL = _TRAIN.augment, LabelConfig()
_PRESETS = f"{', '.join(MODEL_PRESETS)}; or a top-down refiner: {', '.join(REFINER_PRESETS)}"

#: ``posecli train``'s options, turned into a ``TrainConfig`` by :func:`train_config`.
_TRAIN_OPTIONS = (
    _option("annotations", list[Path], _REQUIRED,
            "COCO person_keypoints JSON to train on; repeat to join several."),
    _option("images_dir", list[Path], _REQUIRED,
            "Folder of the training images, one per --annotations.", "--images"),
    _option("val_annotations", Path | None, None, "COCO validation set: AP after each epoch."),
    _option("val_images", Path | None, None,
            "Validation images (default: beside the annotations)."),
    _option("preset", str | None, None,
            f"Network shape: {_PRESETS} (default: {_TRAIN.preset}; not with --init)."),
    _option("init", str | None, None, "Start from this checkpoint or model name."),
    _option("init_stacks", int, _TRAIN.init_stacks, "Grow the --init network to this many "
            "hourglass stacks, new ones copied from its last (0: keep its shape).", min=0),
    _option("epochs", int, _TRAIN.epochs, "Passes over the images.", min=1),
    _option("max_steps", int, _TRAIN.max_steps, "Stop after this many steps (0: all epochs).",
            min=0),
    _option("batch_size", int, _TRAIN.batch_size, "Images per step.", min=1),
    _option("input_size", int, _TRAIN.input_size, "Square training crop, multiple of 64.", min=64),
    _option("lr", float, _TRAIN.lr, "Learning rate.", min=0.0),
    _option("optimizer", str, _TRAIN.optimizer, "sgd or adamw."),
    _option("loss", str, _TRAIN.loss.kind,
            "focal (focal L2) or l2; the paper trains l2, then focal."),
    _option("warmup_steps", int, _TRAIN.warmup_steps, "Linear learning-rate warm-up steps.", min=0),
    _option("checkpoint_every_steps", int, _TRAIN.checkpoint_every_steps,
            "Also checkpoint every N steps (0: each epoch only).", "--checkpoint-every", min=0),
    _option("workers", int, _TRAIN.workers, "Data-loading processes.", min=0),
    _option("device", str, _TRAIN.device, "auto, cpu, cuda or cuda:N."),
    _option("seed", int, _TRAIN.seed, "Data order, augmentation, initial weights."),
    _option("out", Path, Path(_TRAIN.out), "Run folder.", "--out", "-o"),
    _option("resume", bool, False, "Continue the run in --out where it stopped.", "--resume"),
    _option("scale_min", float, _AUGMENT.scale_min,
            "Smallest random zoom (1: the long side fills the crop).", min=0.05),
    _option("scale_max", float, _AUGMENT.scale_max, "Largest random zoom.", min=0.05),
    _option("mosaic", float, _AUGMENT.mosaic_probability,
            "Probability of a 2×2 mosaic of four images (people at half size)."),
    _option("min_keypoint_score", float, _TRAIN.min_keypoint_score,
            "Pseudo-labels: keypoints scored below are masked out (neither taught present nor "
            "absent); at most the --keep-keypoint the labels were made with, or those kept "
            "keypoints are lost.", min=0.0, max=1.0),
    _option("amp", bool, _TRAIN.amp,
            "Mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16."),
    _option("pretrained", bool, _TRAIN.pretrained,
            "Start a fresh network's EfficientNet-Lite0 encoder from ImageNet."),
)


def train_config(
    *,
    annotations: list[Path],
    images_dir: list[Path],
    val_annotations: Path | None,
    val_images: Path | None,
    preset: str | None,
    init: str | None,
    out: Path,
    loss: str,
    scale_min: float,
    scale_max: float,
    mosaic: float,
    **fields: Any,
) -> TrainConfig:
    """The ``TrainConfig`` of ``posecli train``'s options; UsageError for a bad combination."""
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
    sets = [(str(a), str(i)) for a, i in zip(annotations, images_dir, strict=True)]
    augment = replace(_AUGMENT, scale_min=scale_min, scale_max=scale_max, mosaic_probability=mosaic)
    return TrainConfig(
        annotations=sets[0][0],
        images=sets[0][1],
        more_datasets=tuple(sets[1:]),
        out=str(out),
        val_annotations=str(val_annotations) if val_annotations else None,
        val_images=str(val_images) if val_images else None,
        preset=preset or ("" if init else _TRAIN.preset),  # "": none, the network is --init's
        init=init,
        loss=replace(_TRAIN.loss, kind=loss),
        augment=augment,
        **fields,
    )


@app.command()
@_with_options(_TRAIN_OPTIONS, train_config, "config", first=True)
def train(
    threads: Annotated[int, typer.Option(min=0, help="CPU threads for torch (0: default).")] = 0,
    quiet: Quiet = False,
    *,
    config: TrainConfig,
) -> None:
    """Train a network on COCO-format keypoints (focal L2 loss, five-scale supervision)."""
    from posecli.train.trainer import train as run_training

    _setup_logging(quiet)
    if threads:
        import torch

        torch.set_num_threads(threads)
    with _training_progress(quiet) as progress:
        checkpoint = run_training(config, progress)
    _say(quiet, f"trained: {checkpoint}")


@contextmanager
def _training_progress(quiet: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress display over optimiser steps, with the loss; validation AP printed."""
    columns = (*_COUNT, TextColumn("loss {task.fields[loss]}"), *_TIMES)
    with _progress_display("train", quiet, columns, loss="...") as update:

        def on_record(record: dict[str, Any]) -> None:
            event = record.get("event")
            if event == "start":
                update(total=record["total_steps"], completed=record["step"])
            elif event == "batch":
                update(completed=record["step"], loss=f"{record['loss']:.4g}")
            elif event == "val":
                scores = " ".join(f"{key} {record[key]:.3f}" for key in ("AP", "AP50", "AR"))
                _say(quiet, f"epoch {record.get('epoch')}: {scores}")

        yield on_record


# ---------------------------------------------------------------------------------------------
# label and export

Teachers = Annotated[
    Path, typer.Option(help="Folder of the teacher ONNX files (see ../shared/teachers).")
]
_TEACHER_HELP = (
    "thunder (top-down on person boxes: hand-drawn ones from a person_boxes.json beside the "
    "images, else MoveNet MultiPose's), or movenet, openpose or both (bottom-up passes fused)."
)


@app.command()
def label(
    images_inputs: Annotated[
        list[str], typer.Option("--images", help="Image folder, glob or file; repeat for more.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pseudo-label COCO JSON to write.")],
    teachers: Teachers,
    teacher: Annotated[str, typer.Option(help=_TEACHER_HELP)] = _LABEL.teacher,
    keep_keypoint: Annotated[
        float, typer.Option(help="Keypoint confidence (0–1) needed to keep a keypoint.")
    ] = _LABEL.keep_keypoint,
    confident_person: Annotated[
        float, typer.Option(help="Person score (0–1) needed to label a person.")
    ] = _LABEL.confident_person,
    min_keypoints: Annotated[
        int, typer.Option(help="Kept keypoints (1–17) a labelled person needs.")
    ] = _LABEL.min_keypoints,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Pseudo-label photos with teacher models into COCO keypoints (resumable)."""
    from posecli.io.sources import expand_image_inputs
    from posecli.train.label import label_images

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
    teachers: Teachers,
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
    from posecli.train.label import partial_path

    if out.exists() and not partial_path(out).exists() and not force:
        raise OutputError(f"{out} exists (use --force to overwrite)")


@contextmanager
def _labelling_progress(quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress display over labelled images."""
    with _progress_display("label", quiet, (*_COUNT, TimeRemainingColumn())) as update:
        yield lambda done, total: update(completed=done, total=total)


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
    _setup_logging(quiet)
    runs.check_outputs([out], force)
    name, written = runs.export_checkpoint(model, out, half=half)
    _say(quiet, f"exported {name}: {written} ({written.stat().st_size / 1e6:.1f} MB)")


@app.command()
def info() -> None:
    """Versions, device, native decoder and known models."""
    import numpy
    import torch

    from posecli.decode import native_available
    from posecli.device import resolve_device
    from posecli.weights import list_models

    cuda = torch.cuda.is_available()
    cuda_note = f"{torch.cuda.device_count()} CUDA device(s)" if cuda else "CUDA not available"
    stdout.print(f"posecli {__version__}")
    stdout.print(f"python  {platform.python_version()} ({sys.executable})")
    stdout.print(f"torch   {torch.__version__}, numpy {numpy.__version__}")
    stdout.print(f"device  {resolve_device('auto')} (auto; {cuda_note})")
    stdout.print(f"native decoder  {'built' if native_available() else 'NOT built (slow NumPy)'}")
    stdout.print("models:")
    for entry in list_models():
        state = "present" if entry.present else "missing"
        stdout.print(f"  {entry.name:<20} {state:<8} {entry.path}  ({entry.description})")
    stdout.print(f"presets (for train --preset): {', '.join(MODEL_PRESETS)}")
    stdout.print(f"refiner presets (train --preset): {', '.join(REFINER_PRESETS)}")


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


def _fail(message: str) -> None:
    """One line on stderr."""
    stderr.print(f"posecli: error: {' '.join(message.split())}", markup=False)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Ctrl-C exits with 130 and SIGTERM with 143, both after the outputs were finalised.
    """
    with sigterm_as_interrupt() as termination:
        code = _run_command(list(argv) if argv is not None else sys.argv[1:], termination)
    return EXIT_TERMINATED if termination.received and code == EXIT_INTERRUPTED else code


def _run_command(args: list[str], termination: Termination) -> int:
    """:func:`run` without the SIGTERM handler: every error becomes one line and a code."""
    command = typer.main.get_command(app)
    if not args:  # the root's help, as a usage error
        stderr.print(command.get_help(typer.Context(command, info_name="posecli")), markup=False)
        return EXIT_USAGE
    try:
        with _restored_logging():
            code = command.main(args=args, prog_name="posecli", standalone_mode=False)
    except typer.TyperException as error:  # typer's (click's) usage errors and friends
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
