"""The ``posecli`` command line: video, webcam, images, eval, train, label, export and info.

This package is the only one that prints and exits, and the only one importing typer and rich
(``posecli.cli.progress``: its progress displays): it parses options into the calls of the
library (``streams``, ``images``, ``evaluate``, ``export``, ``info``) and the trainer, shows
their progress, and maps errors to exit codes. Library errors (``PoseCliError``) become one
line on stderr and their exit code: 1 for runtime failures, 2 for bad usage; Ctrl-C exits
with 130 and SIGTERM with 143 once the outputs hold the work already done; standard output
closed by its reader (``--json - | head``) exits quietly with 141.

Commands import what needs torch (the networks, the pipeline, training) when they run, so that
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
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from typer import Argument, Option

from posecli import __version__, errors, inference, options, streams, training_options
from posecli import batch as batch_jobs
from posecli.cli.progress import (
    counted_progress,
    frame_progress,
    step_progress,
    training_progress,
)
from posecli.config import LabelConfig, TrainConfig
from posecli.errors import OutputClosedError, PoseCliError, ResumableInterruptError, UsageError
from posecli.evaluate import annotated_images, detections_path, evaluate_model
from posecli.export import export_checkpoint
from posecli.images import ImageOutputs, check_image_outputs, detect_images
from posecli.inference import InferenceOptions
from posecli.info import installation_report
from posecli.io import cameras, display
from posecli.io.sources import ImageSource, VideoSource, expand_image_inputs
from posecli.options import OutputFormat
from posecli.outputs import check_outputs, list_written, openpose_folder, write_json_atomically
from posecli.report import make_report
from posecli.signals import Termination, sigterm_as_interrupt
from posecli.transforms import check_network_inputs

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


def _annotated(spec: options.OptionSpec) -> Any:
    """``Annotated[kind, Option(...)]`` of ``spec``."""
    callback = _typer_check(spec.check) if spec.check is not None else None
    option = Option(
        *spec.flags, help=spec.help, rich_help_panel=spec.panel, callback=callback, **spec.limits
    )
    return Annotated[spec.kind, option]


def _parameter(spec: options.OptionSpec) -> inspect.Parameter:
    """The keyword-only command parameter of ``spec``."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(spec.name, keyword, default=spec.default, annotation=_annotated(spec))


def _with_options(
    specs: Sequence[options.OptionSpec],
    build: Callable[..., Any] | None = None,
    keyword: str = "",
    first: bool = False,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the options ``specs``: with ``build``, passed to it as
    ``keyword=build(**values)`` (the command declares ``keyword``); without, as themselves (the
    command declares them by name, their types plain).

    typer sees the individual options, after the command's own (before them with ``first``).
    Logging is set up (its ``quiet``) before the options are checked, so their warnings show as
    the command's would.
    """
    parameters = [_parameter(spec) for spec in specs]
    replaced = {keyword} if build is not None else {spec.name for spec in specs}

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        if not replaced <= signature.parameters.keys():
            raise TypeError(f"{command.__name__} does not declare {replaced}")
        own = [p for name, p in signature.parameters.items() if name not in replaced]

        @functools.wraps(command)
        def wrapper(**values: Any) -> None:
            _setup_logging(values.get("quiet", False))
            if build is not None:
                values[keyword] = build(**{spec.name: values.pop(spec.name) for spec in specs})
            command(**values)

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
with_batch_options = _with_options(
    options.BATCH_INFERENCE_OPTIONS, options.inference_options, "options"
)
Force = _annotated(options.FORCE)
Quiet = _annotated(options.QUIET)


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


# video and webcam


@app.command()
@with_stream_options
@_with_options(options.VIDEO_OPTIONS)
def video(
    source: Annotated[str, Argument(metavar="IN", help="Video file or URL ffmpeg reads.")],
    *,
    out: Path | None,
    json_path: Path | None,
    csv_path: Path | None,
    no_video: bool,
    start: float | None,
    end: float | None,
    every: int,
    smooth: bool,
    output_format: OutputFormat,
    openpose_dir: Path | None,
    draw_threshold: float,
    force: bool,
    quiet: bool,
    options: InferenceOptions,
) -> None:
    """Find and track people in a video: annotated MP4 (audio kept), JSON tracks and/or CSV."""
    openpose = output_format is OutputFormat.openpose
    outputs = streams.video_outputs(
        source, out, json_path, no_video=no_video, openpose=openpose, openpose_dir=openpose_dir,
        table=csv_path,
    )  # fmt: skip
    streams.check_stream_outputs(outputs, force)
    with VideoSource(source, start=start, end=end, every=every) as frames:
        check_network_inputs(options.inference, frames.info.height, frames.info.width)
        estimator = inference.load_estimator(options)  # after the input is known to be readable
        total = None if quiet else streams.expected_frames(frames)
        settings = {"start": start, "end": end, "every": every, "smooth": smooth,
                    "draw_threshold": draw_threshold}  # fmt: skip
        header = streams.tracks_header("video", source, frames.info, estimator, options, **settings)
        with frame_progress(stderr, "video", quiet) as progress:
            stats = streams.track_stream(
                frames, estimator, outputs, smooth=smooth, force=force, video_info=frames.info,
                total=total, progress=progress, header=header, draw_threshold=draw_threshold,
            )  # fmt: skip
    _say(quiet, f"{stats.frames} frames at {stats.fps:.1f} fps: {list_written(*outputs.paths())}")


@app.command()
@with_stream_options
@_with_options(options.WEBCAM_OPTIONS)
def webcam(
    *,
    camera: str,
    out: Path | None,
    json_path: Path | None,
    csv_path: Path | None,
    no_display: bool,
    smooth: bool,
    draw_threshold: float,
    force: bool,
    quiet: bool,
    options: InferenceOptions,
) -> None:
    """Live poses from a camera: a window with skeletons and FPS (q or Esc quits)."""
    outputs, show = streams.webcam_outputs(out, json_path, no_display=no_display, table=csv_path)
    streams.check_stream_outputs(outputs, force)
    estimator = inference.load_estimator(options)
    stop = threading.Event()
    window = display.Window(stop) if show else None
    settings = {"smooth": smooth, "draw_threshold": draw_threshold}
    header = streams.tracks_header("webcam", camera, None, estimator, options, **settings)
    with (
        cameras.CameraSource(camera) as frames,
        frame_progress(stderr, "webcam", quiet) as progress,
    ):
        stats = streams.track_stream(
            frames, estimator, outputs, smooth=smooth, force=force, latency_first=True,
            progress=progress, window=window, stop=stop, header=header,
            draw_threshold=draw_threshold,
        )  # fmt: skip
    summary = streams.camera_summary(stats, frames.dropped)
    names = list_written(*outputs.paths())
    _say(quiet, summary + (f": {names}" if names else ""))


# images and eval


@app.command()
@with_inference_options
@_with_options(options.IMAGES_OPTIONS)
def images(
    inputs: Annotated[
        list[str],
        Argument(metavar="DIR|GLOB|FILE...", help="Image folders, glob patterns or files."),
    ],
    *,
    json_path: Path,
    out_dir: Path | None,
    output_format: OutputFormat,
    openpose_dir: Path | None,
    strict: bool,
    max_megapixels: float,
    csv_path: Path | None,
    draw_threshold: float,
    force: bool,
    quiet: bool,
    options: InferenceOptions,
) -> None:
    """Find people in still images: COCO results JSON (+ image-id listing), annotated copies,
    CSV."""
    openpose = None
    if output_format is OutputFormat.openpose or openpose_dir is not None:
        openpose = openpose_folder(openpose_dir, json_path)
    outputs = ImageOutputs(json_path, out_dir, openpose, table=csv_path)
    limit = round(max_megapixels * 1e6)
    frames = ImageSource(inputs, skip_unreadable=not strict, max_pixels=limit)  # missing: fails
    check_image_outputs(frames.paths, outputs, force)
    estimator = inference.load_estimator(options)
    with frame_progress(
        stderr, "images", quiet, unit="images", skipped=lambda: len(frames.skipped)
    ) as progress:
        results, stats = detect_images(
            frames, estimator, outputs, force=force, progress=progress,
            draw_threshold=draw_threshold,
        )  # fmt: skip
    people = f"{len(results)} people in {stats.frames} images ({stats.fps:.1f} images/s)"
    skipped = f", {len(frames.skipped)} unreadable skipped" if frames.skipped else ""
    written = list_written(json_path, outputs.listing, out_dir, openpose, csv_path)
    _say(quiet, f"{people}{skipped}: {written}")


@app.command("eval")
@with_inference_options
@_with_options(options.EVAL_OPTIONS)
def evaluate(
    *,
    annotations: Path,
    images_dir: Path,
    metrics: Path | None,
    by_height: bool,
    force: bool,
    quiet: bool,
    options: InferenceOptions,
) -> None:
    """COCO keypoint AP of a model on an annotated image set (same pipeline as `images`)."""
    frames = annotated_images(annotations, images_dir, sizes=by_height, people=True)
    detections = detections_path(metrics) if metrics is not None else None
    check_outputs([metrics, detections], force)
    estimator = inference.load_estimator(options)
    with frame_progress(stderr, "images", quiet, unit="images") as progress:
        evaluation = evaluate_model(
            estimator, annotations, images_dir, frames=frames, detections=detections,
            by_height=by_height, force=force, progress=progress,
        )  # fmt: skip
    for line in evaluation.lines():
        stdout.print(line, markup=False)
    if metrics is not None:
        write_json_atomically(metrics, evaluation.scores, force=force)
    summary = f"{len(evaluation.results)} people in {evaluation.stats.frames} images, model "
    summary += estimator.model.name
    if estimator.refinement is not None:
        summary += f" refined by {estimator.refinement.refiner.name}"
    _say(quiet, summary + (f": {list_written(metrics, detections)}" if metrics else ""))


@app.command()
@_with_options(options.CLUSTER_OPTIONS, batch_jobs.Cluster, "cluster")
@with_batch_options
@_with_options(options.BATCH_OPTIONS)
def batch(
    inputs: Annotated[
        list[str], Argument(metavar="INPUTS...", help="Videos, images, folders or globs.")
    ],
    *,
    out_dir: Path,
    mp4: bool,
    table: bool,
    output_format: OutputFormat,
    start: float | None,
    end: float | None,
    every: int,
    smooth: bool,
    force: bool,
    quiet: bool,
    options: InferenceOptions,
    cluster: batch_jobs.Cluster,
) -> None:
    """Many videos (DIR/STEM.jsonl each) and images (DIR/images.json) in one resumable job,
    here or on a Ray cluster; one job per DIR at a time."""
    openpose = output_format is OutputFormat.openpose
    outputs = batch_jobs.BatchOutputs(mp4=mp4, openpose=openpose, table=table)
    settings = batch_jobs.VideoSettings(start, end, every, smooth)
    with batch_jobs.batch_lock(out_dir):
        plan = batch_jobs.plan_batch(inputs, out_dir, outputs=outputs, settings=settings,
                                     force=force)  # fmt: skip
        with counted_progress(stderr, "batch", quiet, "inputs") as update:
            summary = batch_jobs.run_batch(
                plan, options, cluster,
                progress=lambda state: update(completed=state.done, total=state.total),
            )  # fmt: skip
    for line in summary.lines():
        _say(quiet, line)
    summary.check(plan.out_dir / batch_jobs.SUMMARY_NAME)


# train


@app.command()
@_with_options(training_options.TRAIN_OPTIONS, training_options.train_config, "config", first=True)
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
    with training_progress(stderr, quiet, functools.partial(_say, quiet)) as progress:
        checkpoint = run_training(config, progress)
    _say(quiet, f"trained: {checkpoint}")


# label and export

_TEACHERS_HELP = "Folder of the teacher ONNX files (see ../shared/teachers)."
Teachers = Annotated[Path, Option(help=_TEACHERS_HELP)]


@app.command()
@_with_options(training_options.LABEL_OPTIONS, LabelConfig, "config")
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
    from posecli.train.label import check_label_output, label_images

    check_label_output(out, force)
    paths = expand_image_inputs(images_inputs)
    with step_progress(stderr, "label", quiet, "images") as progress:
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
    from posecli.train.lspet import LSPET_LABELS
    from posecli.train.lspet import import_lspet as run_import

    _setup_logging(quiet)
    check_label_output(out, force)
    with step_progress(stderr, "label", quiet, "images") as progress:
        written = run_import(dataset, teachers, out, LSPET_LABELS, progress)
    _say(quiet, f"imported LSPet: {written}")


@app.command()
@_with_options(options.EXPORT_OPTIONS)
def export(
    *,
    model: list[str],
    out: Path,
    half: bool,
    file_format: str,
    calibration: list[str] | None,
    force: bool,
    quiet: bool,
) -> None:
    """Copy a checkpoint for shipping (fp16, training state dropped, provenance kept) or ONNX,
    quantise a refiner to int8, or average several fine-tunes of one network into one."""
    check_outputs([out], force)
    with step_progress(stderr, "export", quiet, "images") as progress:
        name, written = export_checkpoint(
            model, out, half=half, file_format=file_format, calibration=calibration or (),
            progress=progress,
        )  # fmt: skip
    _say(quiet, f"exported {name}: {written} ({written.stat().st_size / 1e6:.1f} MB)")


@app.command()
@_with_options(options.REPORT_OPTIONS)
def report(
    tracks: Annotated[Path, Argument(metavar="TRACKS.jsonl", help="Tracks of video --json.")],
    *,
    out: Path | None,
    png: Path | None,
    video: str | None,
    frames: int,
    smooth: bool,
    draw_threshold: float | None,
    force: bool,
    quiet: bool,
) -> None:
    """A self-contained HTML page of a track file: contact sheet, trajectories, joint angles."""
    with step_progress(stderr, "report", quiet, "figures") as progress:
        result, written = make_report(
            tracks, out=out, png_dir=png, video=video, smooth=smooth, sheet_count=frames,
            force=force, threshold=draw_threshold, progress=progress,
        )  # fmt: skip
    _say(quiet, f"{len(result.people)} people, {len(written)} files: {list_written(out, png)}")


@app.command()
def info() -> None:
    """Versions, device, native decoder and known models."""
    for line in installation_report():
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


def _no_flag_types(command: click.Command) -> None:
    """Show no value type (``<bool>``) beside the flags in ``--help`` (``--help`` included):
    they take none. Typer prints one for every option unless its metavar is set."""
    for parameter in command.get_params(click.Context(command)):
        if getattr(parameter, "is_flag", False):  # typer's options are no click.Option
            parameter.metavar = ""
    for subcommand in getattr(command, "commands", {}).values():
        _no_flag_types(subcommand)


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
    _no_flag_types(command)
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
    except OutputClosedError as error:  # `--json - | head`: quiet, as if killed by SIGPIPE
        return error.exit_code
    except errors.ConfigError as error:  # a record refused a value: name the option that set it
        _fail(f"{options.option_flag(error.field)}: {error.message}")
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
