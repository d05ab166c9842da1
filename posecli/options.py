"""The options that several commands share, as data, and the records they become.

Each :class:`OptionSpec` says what one command-line option is (name, type, default, help,
limits); ``posecli.cli`` turns the tables into typer options and passes the parsed values to
:func:`inference_options` (or ``posecli.training_options.train_config``), which build the
frozen config records the library runs on. Keeping the tables here keeps ``cli.py`` to
parsing, progress and exit codes, and lets any other front end (a batch runner, a notebook)
build the same records from the same names and defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from posecli.batch.cluster import CONNECT_TIMEOUT, Cluster
from posecli.config import (
    MIN_INPUT_SIZE,
    DecodeConfig,
    InferenceConfig,
)
from posecli.errors import UsageError
from posecli.inference import InferenceOptions
from posecli.io.draw import DEFAULT_DRAW_THRESHOLD
from posecli.io.sources import MAX_IMAGE_PIXELS

#: The default of an option that must be given.
REQUIRED = inspect.Parameter.empty

#: Largest search scale: beyond it the network input outgrows any memory.
MAX_SCALE = 16.0

#: Largest ``--box-size`` / ``--long-side``, pixels.
MAX_INPUT_SIZE = 8192


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option: ``--name`` (or ``flags``), its type, default, help and limits.

    ``check`` validates the text while parsing (UsageError: the CLI names the option);
    ``panel`` groups options in ``--help``.
    """

    name: str
    kind: Any
    default: Any
    help: str
    flags: tuple[str, ...] = ()
    limits: Mapping[str, float] = field(default_factory=dict)
    check: Callable[[Any], Any] | None = None
    panel: str | None = None


def option(name: str, kind: Any, default: Any, help: str, *flags: str, **limits: Any) -> OptionSpec:
    """An :class:`OptionSpec` in one line: ``check`` and ``panel`` may be given among ``limits``."""
    check, panel = limits.pop("check", None), limits.pop("panel", None)
    return OptionSpec(name, kind, default, help, flags, limits, check, panel)


def parse_scales(value: str) -> tuple[float, ...]:
    """``"1"`` or ``"0.5,1,1.5,2"`` → positive floats up to :data:`MAX_SCALE`; UsageError else."""
    try:
        scales = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise UsageError(f"{value!r} is not a comma-separated list of numbers") from None
    if any(not 0 < scale <= MAX_SCALE for scale in scales):  # NaN and inf fail too
        raise UsageError(f"scales must be in (0, {MAX_SCALE:g}], got {value!r}")
    return scales


#: Config fields that an option of another name sets.
FIELD_OPTIONS = {"min_person_score": "min_score", "min_mean_part_score": "min_part_score"}


def option_flag(field: str) -> str:
    """The command-line flag that sets config field ``field`` (``ConfigError.field``)."""
    return "--" + FIELD_OPTIONS.get(field, field).replace("_", "-")


_INFERENCE, _DECODE = InferenceConfig(), DecodeConfig()
_PANEL = {"panel": "Inference"}
_SIZES = {"min": MIN_INPUT_SIZE, "max": MAX_INPUT_SIZE, **_PANEL}
_SCALES = ",".join(f"{scale:g}" for scale in _INFERENCE.scales)

#: The options of every inference command (images, eval, batch; video and webcam change one
#: default: :data:`STREAM_INFERENCE_OPTIONS`).
INFERENCE_OPTIONS = (
    option(
        "model",
        str,
        "default",
        "Registered model name or checkpoint path.",
        "--model",
        "-m",
        **_PANEL,
    ),
    option("device", str, _INFERENCE.device, "auto, cpu, cuda or cuda:N.", **_PANEL),
    option("half", bool, _INFERENCE.half, "fp16 inference (CUDA only).", "--half", **_PANEL),
    option(
        "scales",
        str,
        _SCALES,
        "Search scales, e.g. 1 or 0.5,1,1.5,2 (heatmaps averaged).",
        check=parse_scales,
        **_PANEL,
    ),
    option(
        "flip", bool, _INFERENCE.flip, "Also run the mirrored image.", "--flip/--no-flip", **_PANEL
    ),
    option(
        "box_size", int, _INFERENCE.box_size, "Network input height at scale 1, pixels.", **_SIZES
    ),
    option(
        "long_side",
        int,
        _INFERENCE.long_side,
        "Resize so the longer image side is N at scale 1; overrides --box-size (0: off).",
        **{**_SIZES, "min": 0},
    ),
    option("batch_size", int, _INFERENCE.batch_size, "Frames per forward pass.", min=1, **_PANEL),
    option(
        "peak_threshold",
        float,
        _DECODE.peak_threshold,
        "Minimum keypoint heatmap peak (> 0).",
        min=0.0,
        **_PANEL,
    ),
    option(
        "part_threshold",
        float,
        _DECODE.part_threshold,
        "Body-part heatmap value a link must exceed.",
        min=0.0,
        **_PANEL,
    ),
    option(
        "min_score",
        float,
        _DECODE.min_person_score,
        "Drop people whose score (the one reported, 0–1) is lower.",
        min=0.0,
        max=1.0,
        **_PANEL,
    ),
    option(
        "min_part_score",
        float,
        _DECODE.min_mean_part_score,
        "Decoder: drop people whose total score per keypoint is lower.",
        min=0.0,
        **_PANEL,
    ),
    option(
        "max_people", int, _DECODE.max_people, "Keep the N best people (0: all).", min=0, **_PANEL
    ),
    option(
        "grouping",
        str,
        _DECODE.grouping,
        "greedy (assembly along body parts) or prn (the "
        "Pose Residual Network picks each person's peaks in its box).",
        **_PANEL,
    ),
    option(
        "prn",
        str,
        _INFERENCE.prn,
        "PRN checkpoint path or registered name for --grouping prn (default: the bundled prn).",
        "--prn",
        **_PANEL,
    ),
    option(
        "backend",
        str,
        _INFERENCE.backend,
        "auto (onnxruntime on CPU, torch on CUDA), torch or onnxruntime.",
        **_PANEL,
    ),
    option(
        "threads",
        int,
        _INFERENCE.threads,
        "CPU threads of the backend (0: its default).",
        min=0,
        **_PANEL,
    ),
    option(
        "refine",
        bool,
        True,
        "Refine the people top-down with --refiner (default: the bundled refiner) and merge.",
        "--refine/--no-refine",
        **_PANEL,
    ),
    option(
        "refiner",
        str,
        _INFERENCE.refiner,
        "Refiner checkpoint path or registered name (default: the bundled refiner).",
        "--refiner",
        **_PANEL,
    ),
    option(
        "instances",
        int,
        _INFERENCE.instances,
        "Instance selectors run per box (0: all the refiner has).",
        min=0,
        **_PANEL,
    ),
    option(
        "refine_flip",
        bool,
        _INFERENCE.refine_flip,
        "Also refine each person mirrored and average.",
        "--refine-flip/--no-refine-flip",
        **_PANEL,
    ),
    option(
        "refine_int8",
        bool,
        _INFERENCE.refine_int8,
        "Bundled refiner on onnxruntime: run its int8 file (faster, AP level).",
        "--refine-int8/--no-refine-int8",
        **_PANEL,
    ),
)

#: The options of the streaming commands (video, webcam): those of :data:`INFERENCE_OPTIONS`,
#: but for speed the refiner's flip test off and its int8 file on by default
#: (``InferenceConfig.refine_flip``, ``InferenceConfig.refine_int8``).
_STREAM_DEFAULTS = {"refine_flip": False, "refine_int8": True}

#: ``--detect-every`` of video, webcam and batch videos (issue 38, ``posecli.follow``): measured
#: on the shared videos, see README.md "Following people between bottom-up frames".
STREAM_DETECT_EVERY = 10

#: The option of the commands that track (video, webcam, batch): ``InferenceConfig.detect_every``.
DETECT_EVERY_OPTION = option(
    "detect_every",
    int,
    STREAM_DETECT_EVERY,
    "Tracking: run the bottom-up network on one frame "
    "in N (and after scene cuts and lost people); follow the people with the refiner in between "
    "(1: every frame; with --refine only).",
    min=1,
    **_PANEL,
)
STREAM_INFERENCE_OPTIONS = tuple(
    replace(spec, default=_STREAM_DEFAULTS[spec.name]) if spec.name in _STREAM_DEFAULTS else spec
    for spec in INFERENCE_OPTIONS
) + (DETECT_EVERY_OPTION,)

#: The options of ``posecli batch``: those of images, and ``--detect-every`` for its videos.
BATCH_INFERENCE_OPTIONS = (*INFERENCE_OPTIONS, DETECT_EVERY_OPTION)


def inference_options(
    *,
    model: str = "default",
    refine: bool = True,
    scales: str = _SCALES,
    peak_threshold: float = _DECODE.peak_threshold,
    part_threshold: float = _DECODE.part_threshold,
    min_score: float = _DECODE.min_person_score,
    min_part_score: float = _DECODE.min_mean_part_score,
    max_people: int = _DECODE.max_people,
    grouping: str = _DECODE.grouping,
    detect_every: int = _INFERENCE.detect_every,
    **inference: Any,
) -> InferenceOptions:
    """The record of :data:`INFERENCE_OPTIONS` values (UsageError for settings no run can use);
    the other keywords are ``InferenceConfig`` fields. People are followed between bottom-up
    frames by the refiner: without ``refine`` ``detect_every`` is 1."""
    decode = DecodeConfig(
        peak_threshold=peak_threshold,
        part_threshold=part_threshold,
        min_mean_part_score=min_part_score,
        min_person_score=min_score,
        max_people=max_people,
        grouping=grouping,
    )
    detect_every = detect_every if refine else 1
    inference.update(scales=parse_scales(scales), refine=refine, detect_every=detect_every)
    configs = InferenceConfig(**inference), decode
    return InferenceOptions(model, *configs)


_CLUSTER, _RAY = Cluster(), {"panel": "Cluster"}

#: Where ``posecli batch`` runs: ``posecli.batch.Cluster`` fields (checked there, once).
CLUSTER_OPTIONS = (
    option(
        "address",
        str | None,
        _CLUSTER.address,
        "Run on Ray: auto (the cluster this machine "
        "is part of), local (a new Ray instance here) or a head's HOST:PORT (default: in "
        "this process, no Ray).",
        "--ray",
        **_RAY,
    ),
    option(
        "workers",
        int | None,
        _CLUSTER.workers,
        "With --ray: videos or pose actors at once (default or 0: one per CPU of the cluster).",
        **_RAY,
    ),
    option(
        "gpus_per_worker",
        float | None,
        _CLUSTER.gpus_per_worker,
        "With --ray: GPUs each Ray worker reserves (e.g. 0.5: two per GPU; default 0).",
        **_RAY,
    ),
    option(
        "timeout",
        float | None,
        _CLUSTER.timeout,
        f"With --ray: seconds to wait for Ray to connect or start (default {CONNECT_TIMEOUT:g}).",
        "--ray-timeout",
        **_RAY,
    ),
)


# ---------------------------------------------------------------------------------------------
# The commands' own options (``posecli.cli`` gives each command its table, in this order)


class OutputFormat(str, Enum):
    """Extra per-frame JSON formats (``--format``)."""

    posecli = "posecli"
    openpose = "openpose"


FORCE = option("force", bool, False, "Overwrite existing outputs.", "--force", "-f")
QUIET = option("quiet", bool, False, "No progress, warnings or summary.", "--quiet", "-q")
_TRACKS = option(
    "json_path",
    Path | None,
    None,
    "JSON-lines tracks: one line per frame (-: standard output).",
    "--json",
)
_TABLE = option(
    "csv_path",
    Path | None,
    None,
    "CSV table: one row per person per frame (-: standard output; see README).",
    "--csv",
)
_DRAW = option(
    "draw_threshold",
    float,
    DEFAULT_DRAW_THRESHOLD,
    "Draw the keypoints scored above this (0–1), and limbs between two of them.",
    "--draw-threshold",
    min=0.0,
    max=1.0,
)
_SMOOTH = option("smooth", bool, False, "One-Euro smoothing of tracked keypoints.", "--smooth")
_SPAN = (
    option("start", float | None, None, "Start at this time, s.", min=0.0),
    option("end", float | None, None, "Stop at this time, s.", min=0.0),
    option("every", int, 1, "Process one frame in N.", min=1),
)
_OPENPOSE_DIR = option(
    "openpose_dir",
    Path | None,
    None,
    "Folder of the OpenPose JSON files (default: NAME_openpose/ beside the output).",
)


def _output_format(help: str) -> OptionSpec:
    return option("output_format", OutputFormat, OutputFormat.posecli, help, "--format")


VIDEO_OPTIONS = (
    option("out", Path | None, None, "Annotated H.264 MP4 to write.", "--out", "-o"),
    _TRACKS,
    _TABLE,
    option(
        "no_video",
        bool,
        False,
        "Write no video, only --json / --csv / --format outputs.",
        "--no-video",
    ),
    *_SPAN,
    _SMOOTH,
    _output_format("openpose: also per-frame OpenPose JSON (COCO-18)."),
    _OPENPOSE_DIR,
    _DRAW,
    FORCE,
    QUIET,
)
WEBCAM_OPTIONS = (
    option("camera", str, "0", "Camera index (0, 1…) or stream URL (also a video file)."),
    option("out", Path | None, None, "Record the annotated stream to this MP4.", "--out", "-o"),
    _TRACKS,
    _TABLE,
    option("no_display", bool, False, "Show no window.", "--no-display"),
    _SMOOTH,
    _DRAW,
    FORCE,
    QUIET,
)
IMAGES_OPTIONS = (
    option("json_path", Path, REQUIRED, "COCO keypoint results file to write.", "--json"),
    option("out_dir", Path | None, None, "Folder for annotated copies of the images.", "--out-dir"),
    _output_format("openpose: also OpenPose JSON per image (COCO-18)."),
    _OPENPOSE_DIR,
    option("strict", bool, False, "Stop at an unreadable image (default: skip it).", "--strict"),
    option(
        "max_megapixels",
        float,
        MAX_IMAGE_PIXELS / 1e6,
        "Larger images are unreadable, refused before decoding (0: any).",
        min=0.0,
    ),
    _TABLE,
    _DRAW,
    FORCE,
    QUIET,
)
EVAL_OPTIONS = (
    option("annotations", Path, REQUIRED, "COCO person_keypoints JSON (ground truth)."),
    option("images_dir", Path, REQUIRED, "Folder holding the annotated images.", "--images"),
    option(
        "metrics", Path | None, None, "Write the metrics here as JSON; detections go beside it."
    ),
    option(
        "by_height",
        bool,
        False,
        "Also print the share of people found (OKS ≥ 0.5 / 0.75) "
        "per band of their height at the network input.",
        "--by-height",
    ),
    FORCE,
    QUIET,
)
BATCH_OPTIONS = (
    option("out_dir", Path, REQUIRED, "Folder of the outputs.", "--out", "-o"),
    option("mp4", bool, False, "Also write each video annotated: DIR/STEM.mp4.", "--mp4"),
    option("table", bool, False, "Also write CSV tables: DIR/STEM.csv, DIR/images.csv.", "--csv"),
    _output_format(
        "openpose: also OpenPose JSON (COCO-18) per video frame "
        "(DIR/STEM_openpose/) and per image (DIR/images_openpose/)."
    ),
    *_SPAN,
    _SMOOTH,
    FORCE,
    QUIET,
)
EXPORT_OPTIONS = (
    option(
        "model",
        list[str],
        REQUIRED,
        "Checkpoint path or model name; repeated: their weight average (one kind and config).",
        "--model",
        "-m",
    ),
    option("out", Path, REQUIRED, "Checkpoint file to write.", "--out", "-o"),
    option("half", bool, True, "Store float tensors as fp16.", "--half/--no-half"),
    option(
        "file_format",
        str,
        "pt",
        "pt; onnx (an .onnx --out); onnx-int8 (a refiner, quantised).",
        "--format",
    ),
    option(
        "calibration",
        list[str] | None,
        None,
        "onnx-int8: images to calibrate on (folders, globs, files; repeatable).",
        "--calibration",
    ),
    FORCE,
    QUIET,
)
REPORT_OPTIONS = (
    option("out", Path | None, None, "HTML page to write.", "--out", "-o"),
    option("png", Path | None, None, "Folder for the figures as PNG files."),
    option("video", str | None, None, "The tracks' video, for the contact sheet."),
    option("frames", int, 12, "Frames on the contact sheet (0: none).", min=0),
    option(
        "smooth", bool, True, "Smooth keypoints before angles, as --smooth.", "--smooth/--no-smooth"
    ),
    option(
        "draw_threshold",
        float | None,
        None,
        "Keypoints scored above this are drawn, found "
        "and measured (default: the tracks' --draw-threshold, else "
        f"{DEFAULT_DRAW_THRESHOLD:g}).",
        "--draw-threshold",
        min=0.0,
        max=1.0,
    ),
    FORCE,
    QUIET,
)
