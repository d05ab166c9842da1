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
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
from typer import Argument, Option

from posecli import __version__, options, runs
from posecli import batch as batch_jobs
from posecli.config import LabelConfig, TrainConfig
from posecli.errors import PoseCliError, ResumableInterruptError, UsageError
from posecli.io import display
from posecli.runs import ImageOutputs, InferenceOptions
from posecli.signals import Termination, sigterm_as_interrupt

if TYPE_CHECKING:
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


# Shared options


def _typer_check(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An option callback running a library check while parsing (UsageError → exit 2, the
    option named)."""

    def callback(value: Any) -> Any:
        try:
            check(value)
        except UsageError as error:
            raise typer.BadParameter(str(error)) from None
        return value

    return callback


def _parameter(spec: options.OptionSpec) -> inspect.Parameter:
    """The keyword-only command parameter of ``spec``: ``Annotated[kind, Option(...)]``."""
    callback = _typer_check(spec.check) if spec.check is not None else None
    option = Option(
        *spec.flags, help=spec.help, rich_help_panel=spec.panel, callback=callback, **spec.limits
    )
    annotation = Annotated[spec.kind, option]
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(spec.name, keyword, default=spec.default, annotation=annotation)


def _with_options(
    specs: Sequence[options.OptionSpec], build: Callable[..., Any], keyword: str, first=False
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the options ``specs``, passed to it as ``keyword=build(**values)``.

    The command declares ``keyword``; typer sees the individual options instead, after the
    command's own (before them with ``first``). Logging is set up (its ``quiet``) before the
    options are checked, so their warnings show as the command's would.
    """
    parameters = [_parameter(spec) for spec in specs]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name != keyword]

        @functools.wraps(command)
        def wrapper(**values: Any) -> None:
            _setup_logging(values.get("quiet", False))
            shared = {spec.name: values.pop(spec.name) for spec in specs}
            command(**{keyword: build(**shared)}, **values)

        if first:  # the command's own options follow, keyword-only too
            own = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in own]
        order = [*parameters, *own] if first else [*own, *parameters]
        wrapper.__signature__ = signature.replace(parameters=order)  # type: ignore[attr-defined]
        return wrapper

    return decorate


with_inference_options = _with_options(
    options.INFERENCE_OPTIONS, options.inference_options, "options"
)
with_stream_options = _with_options(
    options.STREAM_INFERENCE_OPTIONS, options.inference_options, "options"
)
Force = Annotated[bool, Option("--force", "-f", help="Overwrite existing outputs.")]
Quiet = Annotated[bool, Option("--quiet", "-q", help="No progress, warnings or summary.")]
_TRACKS_HELP = "JSON-lines tracks: one line per frame."
Tracks = Annotated[Path | None, Option("--json", help=_TRACKS_HELP)]
Smooth = Annotated[bool, Option("--smooth", help="One-Euro smoothing of tracked keypoints.")]
_OPENPOSE_HELP = "Folder of the OpenPose JSON files (default: NAME_openpose/ beside the output)."
OpenPoseDir = Annotated[Path | None, Option(help=_OPENPOSE_HELP)]


class OutputFormat(str, Enum):
    """Extra per-frame JSON formats."""

    posecli = "posecli"
    openpose = "openpose"


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
    """Frames per second of the run so far (``PipelineProgress.fps``: the summary's figure)."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("fps")
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
        yield lambda state: update(completed=state.frames, total=state.total, fps=state.fps)


# video and webcam


@app.command()
@with_stream_options
def video(
    source: Annotated[str, Argument(metavar="IN", help="Video file or URL ffmpeg reads.")],
    out: Annotated[Path | None, Option("--out", "-o", help="Annotated H.264 MP4 to write.")] = None,
    json_path: Tracks = None,
    no_video: Annotated[
        bool, Option("--no-video", help="Write no video, only --json / --format outputs.")
    ] = False,
    start: Annotated[float | None, Option(min=0.0, help="Start at this time, s.")] = None,
    end: Annotated[float | None, Option(min=0.0, help="Stop at this time, s.")] = None,
    every: Annotated[int, Option(min=1, help="Process one frame in N.")] = 1,
    smooth: Smooth = False,
    output_format: Annotated[
        OutputFormat, Option("--format", help="openpose: also per-frame OpenPose JSON (COCO-18).")
    ] = OutputFormat.posecli,
    openpose_dir: OpenPoseDir = None,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
) -> None:
    """Find and track people in a video: annotated MP4 (audio kept) and/or JSON tracks."""
    from posecli.io.sources import VideoSource

    openpose = output_format is OutputFormat.openpose
    outputs = runs.video_outputs(
        source, out, json_path, no_video=no_video, openpose=openpose, openpose_dir=openpose_dir
    )
    runs.check_stream_outputs(outputs, force)
    with VideoSource(source, start=start, end=end, every=every) as frames:
        estimator = runs.load_estimator(options)  # after the input is known to be readable
        total = None if quiet else runs.expected_frames(frames)
        settings = {"start": start, "end": end, "every": every, "smooth": smooth}
        header = runs.tracks_header("video", source, frames.info, estimator, options, **settings)
        with _frame_progress("video", quiet) as progress:
            stats = runs.track_stream(
                frames, estimator, outputs, smooth=smooth, force=force, video_info=frames.info,
                total=total, progress=progress, header=header,
            )  # fmt: skip
    _say(quiet, f"{stats.frames} frames at {stats.fps:.1f} fps: {runs.written(*outputs.paths())}")


@app.command()
@with_stream_options
def webcam(
    camera: Annotated[
        str, Option(help="Camera index (0, 1…) or stream URL (also a video file).")
    ] = "0",
    out: Annotated[
        Path | None, Option("--out", "-o", help="Record the annotated stream to this MP4.")
    ] = None,
    json_path: Tracks = None,
    no_display: Annotated[bool, Option("--no-display", help="Show no window.")] = False,
    smooth: Smooth = False,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
) -> None:
    """Live poses from a camera: a window with skeletons and FPS (q or Esc quits)."""
    from posecli.io.cameras import CameraSource

    outputs, show = runs.webcam_outputs(out, json_path, no_display=no_display)
    runs.check_stream_outputs(outputs, force)
    estimator = runs.load_estimator(options)
    stop = threading.Event()
    window = display.Window(stop) if show else None
    header = runs.tracks_header("webcam", camera, None, estimator, options, smooth=smooth)
    with CameraSource(camera) as frames, _frame_progress("webcam", quiet) as progress:
        stats = runs.track_stream(
            frames, estimator, outputs, smooth=smooth, force=force, latency_first=True,
            progress=progress, window=window, stop=stop, header=header,
        )  # fmt: skip
    summary = runs.camera_summary(stats, frames.dropped)
    _say(quiet, summary + (": " + runs.written(out, json_path) if out or json_path else ""))


# images and eval


@app.command()
@with_inference_options
def images(
    inputs: Annotated[
        list[str],
        Argument(metavar="DIR|GLOB|FILE...", help="Image folders, glob patterns or files."),
    ],
    json_path: Annotated[Path, Option("--json", help="COCO keypoint results file to write.")],
    out_dir: Annotated[
        Path | None, Option("--out-dir", help="Folder for annotated copies of the images.")
    ] = None,
    output_format: Annotated[
        OutputFormat, Option("--format", help="openpose: also OpenPose JSON per image (COCO-18).")
    ] = OutputFormat.posecli,
    openpose_dir: OpenPoseDir = None,
    strict: Annotated[
        bool, Option("--strict", help="Stop at an unreadable image (default: skip it).")
    ] = False,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
) -> None:
    """Find people in still images: COCO results JSON (+ image-id listing), annotated copies."""
    from posecli.io.sources import ImageSource

    openpose = None
    if output_format is OutputFormat.openpose or openpose_dir is not None:
        openpose = runs.openpose_folder(openpose_dir, json_path)
    outputs = ImageOutputs(json_path, out_dir, openpose)
    frames = ImageSource(inputs, skip_unreadable=not strict)  # a missing input fails here
    runs.check_image_outputs(frames.paths, outputs, force)
    estimator = runs.load_estimator(options)
    with _frame_progress("images", quiet) as progress:
        results, stats = runs.detect_images(frames, estimator, outputs, force=force,
                                            progress=progress)
    people = f"{len(results)} people in {stats.frames} images ({stats.fps:.1f} images/s)"
    skipped = f", {len(frames.skipped)} unreadable skipped" if frames.skipped else ""
    written = runs.written(json_path, outputs.listing, out_dir, openpose)
    _say(quiet, f"{people}{skipped}: {written}")


@app.command("eval")
@with_inference_options
def evaluate(
    annotations: Annotated[Path, Option(help="COCO person_keypoints JSON (ground truth).")],
    images_dir: Annotated[Path, Option("--images", help="Folder holding the annotated images.")],
    metrics: Annotated[
        Path | None, Option(help="Write the metrics here as JSON; detections go beside it.")
    ] = None,
    by_height: Annotated[
        bool,
        Option(
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
    frames = runs.annotated_images(annotations, images_dir, sizes=by_height)
    detections = runs.detections_path(metrics) if metrics is not None else None
    runs.check_outputs([metrics, detections], force)
    estimator = runs.load_estimator(options)
    with _frame_progress("images", quiet) as progress:
        evaluation = runs.evaluate_model(
            estimator, annotations, images_dir, frames=frames, detections=detections,
            by_height=by_height, force=force, progress=progress,
        )  # fmt: skip
    for line in evaluation.lines():
        stdout.print(line, markup=False)
    if metrics is not None:
        runs.write_json_atomically(metrics, evaluation.scores, force=force)
    summary = f"{len(evaluation.results)} people in {evaluation.stats.frames} images, model "
    summary += estimator.model.name
    if estimator.refinement is not None:
        summary += f" refined by {estimator.refinement.refiner.name}"
    _say(quiet, summary + (f": {runs.written(metrics, detections)}" if metrics else ""))


@app.command()
@_with_options(options.CLUSTER_OPTIONS, batch_jobs.Cluster, "cluster")
@with_inference_options
def batch(
    inputs: Annotated[
        list[str], Argument(metavar="INPUTS...", help="Videos, images, folders or globs.")
    ],
    out_dir: Annotated[Path, Option("--out", "-o", help="Folder of the outputs.")],
    mp4: Annotated[
        bool, Option("--mp4", help="Also write each video annotated: DIR/STEM.mp4.")
    ] = False,
    smooth: Smooth = False,
    force: Force = False,
    quiet: Quiet = False,
    *,
    options: InferenceOptions,
    cluster: batch_jobs.Cluster,
) -> None:
    """Many videos (DIR/STEM.jsonl each) and images (DIR/images.json) in one resumable job,
    here or on a Ray cluster."""
    plan = batch_jobs.plan_batch(inputs, out_dir, mp4=mp4, force=force)
    with _progress_display("batch", quiet, (*_COUNT, *_TIMES)) as update:
        summary = batch_jobs.run_batch(
            plan, options, cluster, smooth=smooth,
            progress=lambda state: update(completed=state.done, total=state.total),
        )  # fmt: skip
    for line in summary.lines():
        _say(quiet, line)
    summary.check(plan.out_dir / batch_jobs.SUMMARY_NAME)


# train

@app.command()
@_with_options(options.TRAIN_OPTIONS, options.train_config, "config", first=True)
def train(
    threads: Annotated[int, Option(min=0, help="CPU threads for torch (0: default).")] = 0,
    quiet: Quiet = False,
    *,
    config: TrainConfig,
) -> None:
    """Train a network on COCO-format keypoints (focal L2 loss, five-scale supervision)."""
    from posecli.train.trainer import train as run_training

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


# label and export

_TEACHERS_HELP = "Folder of the teacher ONNX files (see ../shared/teachers)."
Teachers = Annotated[Path, Option(help=_TEACHERS_HELP)]


@app.command()
@_with_options(options.LABEL_OPTIONS, LabelConfig, "config")
def label(
    images_inputs: Annotated[
        list[str], Option("--images", help="Image folder, glob or file; repeat for more.")
    ],
    out: Annotated[Path, Option("--out", "-o", help="Pseudo-label COCO JSON to write.")],
    teachers: Teachers,
    force: Force = False,
    quiet: Quiet = False,
    *,
    config: LabelConfig,
) -> None:
    """Pseudo-label photos with teacher models into COCO keypoints (resumable)."""
    from posecli.io.sources import expand_image_inputs
    from posecli.train.label import check_label_output, label_images

    check_label_output(out, force)
    paths = expand_image_inputs(images_inputs)
    with _labelling_progress(quiet) as progress:
        written = label_images(paths, teachers, out, config, progress)
    _say(quiet, f"labelled {len(paths)} images: {written}")


@app.command("import-lspet")
def import_lspet(
    dataset: Annotated[Path, Argument(help="LSPet folder: joints.mat and images/im00001.jpg ….")],
    out: Annotated[Path, Option("--out", "-o", help="COCO keypoint JSON to write.")],
    teachers: Teachers,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """LSPet's human joints as COCO keypoints, face points and bystanders from the teachers."""
    from posecli.train.label import check_label_output
    from posecli.train.lspet import import_lspet as run_import

    _setup_logging(quiet)
    check_label_output(out, force)
    with _labelling_progress(quiet) as progress:
        written = run_import(dataset, teachers, out, LabelConfig(), progress)
    _say(quiet, f"imported LSPet: {written}")


@contextmanager
def _labelling_progress(quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress display over labelled images."""
    with _progress_display("label", quiet, (*_COUNT, TimeRemainingColumn())) as update:
        yield lambda done, total: update(completed=done, total=total)


@app.command()
def export(
    model: Annotated[
        list[str],
        Option(
            "--model",
            "-m",
            help="Checkpoint path or model name; repeated: their weight average (one kind and "
            "config).",
        ),
    ],
    out: Annotated[Path, Option("--out", "-o", help="Checkpoint file to write.")],
    half: Annotated[bool, Option("--half/--no-half", help="Store float tensors as fp16.")] = True,
    file_format: Annotated[
        str,
        Option("--format", help="pt; onnx (an .onnx --out); onnx-int8 (a refiner, quantised)."),
    ] = "pt",
    calibration: Annotated[
        list[str] | None,
        Option(
            "--calibration",
            help="onnx-int8: images to calibrate on (folders, globs, files; repeatable).",
        ),
    ] = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Copy a checkpoint for shipping (fp16, training state dropped, provenance kept) or ONNX,
    quantise a refiner to int8, or average several fine-tunes of one network into one."""
    _setup_logging(quiet)
    runs.check_outputs([out], force)
    name, written = runs.export_checkpoint(
        model, out, half=half, file_format=file_format, calibration=calibration or ()
    )
    _say(quiet, f"exported {name}: {written} ({written.stat().st_size / 1e6:.1f} MB)")


@app.command()
def report(
    tracks: Annotated[Path, Argument(metavar="TRACKS.jsonl", help="Tracks of video --json.")],
    out: Annotated[Path | None, Option("--out", "-o", help="HTML page to write.")] = None,
    png: Annotated[Path | None, Option(help="Folder for the figures as PNG files.")] = None,
    video: Annotated[str | None, Option(help="The tracks' video, for the contact sheet.")] = None,
    frames: Annotated[int, Option(min=0, help="Frames on the contact sheet (0: none).")] = 12,
    smooth: Annotated[
        bool, Option("--smooth/--no-smooth", help="Smooth keypoints before angles, as --smooth.")
    ] = True,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """A self-contained HTML page of a track file: contact sheet, trajectories, joint angles."""
    from posecli.report import make_report

    _setup_logging(quiet)
    result, written = make_report(
        tracks, out=out, png_dir=png, video=video, smooth=smooth, sheet_count=frames, force=force
    )
    _say(quiet, f"{len(result.people)} people, {len(written)} files: {runs.written(out, png)}")


@app.command()
def info() -> None:
    """Versions, device, native decoder and known models."""
    for line in runs.installation_report():
        stdout.print(line, markup=False)


# Entry point


def _version(value: bool) -> None:
    if value:
        stdout.print(f"posecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        Option("--version", callback=_version, is_eager=True, help="Print the version."),
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
