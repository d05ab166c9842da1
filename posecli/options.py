"""The options that several commands share, as data, and the records they become.

Each :class:`OptionSpec` says what one command-line option is (name, type, default, help,
limits); ``posecli.cli`` turns the tables into typer options and passes the parsed values to
:func:`inference_options` or :func:`train_config`, which build the frozen config records the
library runs on. Keeping the tables here keeps ``cli.py`` to parsing, progress and exit codes,
and lets any other front end (a batch runner, a notebook) build the same records from the same
names and defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from posecli.batch import Cluster
from posecli.config import (
    BACKENDS,
    GROUPINGS,
    MODEL_PRESETS,
    PRN_PRESETS,
    REFINER_PRESETS,
    DecodeConfig,
    InferenceConfig,
    LabelConfig,
    TrainConfig,
)
from posecli.errors import UsageError
from posecli.runs import MIN_INPUT_SIZE, InferenceOptions

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


def check_grouping(value: str) -> str:
    """One of :data:`posecli.config.GROUPINGS`; UsageError else."""
    if value not in GROUPINGS:
        raise UsageError(f"unknown grouping {value!r}: use {', '.join(GROUPINGS)}")
    return value


def check_backend(value: str) -> str:
    """One of :data:`posecli.config.BACKENDS`; UsageError else."""
    if value not in BACKENDS:
        raise UsageError(f"unknown backend {value!r}: use {', '.join(BACKENDS)}")
    return value


_INFERENCE, _DECODE = InferenceConfig(), DecodeConfig()
_PANEL = {"panel": "Inference"}
_SIZES = {"min": MIN_INPUT_SIZE, "max": MAX_INPUT_SIZE, **_PANEL}
_SCALES = ",".join(f"{scale:g}" for scale in _INFERENCE.scales)

#: The options of every inference command (images, eval, batch; video and webcam change one
#: default: :data:`STREAM_INFERENCE_OPTIONS`).
INFERENCE_OPTIONS = (
    option("model", str, "default", "Registered model name or checkpoint path.", "--model", "-m",
           **_PANEL),
    option("device", str, _INFERENCE.device, "auto, cpu, cuda or cuda:N.", **_PANEL),
    option("half", bool, _INFERENCE.half, "fp16 inference (CUDA only).", "--half", **_PANEL),
    option("scales", str, _SCALES, "Search scales, e.g. 1 or 0.5,1,1.5,2 (heatmaps averaged).",
           check=parse_scales, **_PANEL),
    option("flip", bool, _INFERENCE.flip, "Also run the mirrored image.", "--flip/--no-flip",
           **_PANEL),
    option("box_size", int, _INFERENCE.box_size, "Network input height at scale 1, pixels.",
           **_SIZES),
    option("long_side", int, _INFERENCE.long_side, "Resize so the longer image side is N at "
           "scale 1; overrides --box-size (0: off).", **{**_SIZES, "min": 0}),
    option("batch_size", int, _INFERENCE.batch_size, "Frames per forward pass.", min=1, **_PANEL),
    option("peak_threshold", float, _DECODE.peak_threshold, "Minimum keypoint heatmap peak (> 0).",
           min=0.0, **_PANEL),
    option("part_threshold", float, _DECODE.part_threshold,
           "Body-part heatmap value a link must exceed.", min=0.0, **_PANEL),
    option("min_score", float, _DECODE.min_person_score,
           "Drop people whose score (the one reported, 0–1) is lower.", min=0.0, max=1.0, **_PANEL),
    option("min_part_score", float, _DECODE.min_mean_part_score,
           "Decoder: drop people whose total score per keypoint is lower.", min=0.0, **_PANEL),
    option("max_people", int, _DECODE.max_people, "Keep the N best people (0: all).", min=0,
           **_PANEL),
    option("grouping", str, _DECODE.grouping, "greedy (assembly along body parts) or prn (the "
           "Pose Residual Network picks each person's peaks in its box).", check=check_grouping,
           **_PANEL),
    option("prn", str, _INFERENCE.prn, "PRN checkpoint path or registered name for --grouping "
           "prn (default: the bundled prn).", "--prn", **_PANEL),
    option("backend", str, _INFERENCE.backend, "auto (onnxruntime on CPU, torch on CUDA), torch "
           "or onnxruntime.", check=check_backend, **_PANEL),
    option("threads", int, _INFERENCE.threads, "CPU threads of the backend (0: its default).",
           min=0, **_PANEL),
    option("refine", bool, True, "Refine the people top-down with --refiner (default: the "
           "bundled refiner) and merge.", "--refine/--no-refine", **_PANEL),
    option("refiner", str, _INFERENCE.refiner, "Refiner checkpoint path or registered name "
           "(default: the bundled refiner).", "--refiner", **_PANEL),
    option("instances", int, _INFERENCE.instances,
           "Instance selectors run per box (0: all the refiner has).", min=0, **_PANEL),
    option("refine_flip", bool, _INFERENCE.refine_flip, "Also refine each person mirrored and "
           "average.", "--refine-flip/--no-refine-flip", **_PANEL),
    option("refine_int8", bool, _INFERENCE.refine_int8, "Bundled refiner on onnxruntime: run "
           "its int8 file (faster, AP level).", "--refine-int8/--no-refine-int8", **_PANEL),
)

#: The options of the streaming commands (video, webcam): those of :data:`INFERENCE_OPTIONS`,
#: but for speed the refiner's flip test off and its int8 file on by default
#: (``InferenceConfig.refine_flip``, ``InferenceConfig.refine_int8``).
_STREAM_DEFAULTS = {"refine_flip": False, "refine_int8": True}
STREAM_INFERENCE_OPTIONS = tuple(
    replace(spec, default=_STREAM_DEFAULTS[spec.name]) if spec.name in _STREAM_DEFAULTS else spec
    for spec in INFERENCE_OPTIONS
)


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
    **inference: Any,
) -> InferenceOptions:
    """The record of :data:`INFERENCE_OPTIONS` values (UsageError for settings no run can use);
    the other keywords are ``InferenceConfig`` fields."""
    decode = DecodeConfig(
        peak_threshold=peak_threshold,
        part_threshold=part_threshold,
        min_mean_part_score=min_part_score,
        min_person_score=min_score,
        max_people=max_people,
        grouping=grouping,
    )
    configs = InferenceConfig(scales=parse_scales(scales), refine=refine, **inference), decode
    return InferenceOptions(model, *configs)


_TRAIN = TrainConfig(annotations="", images="")
_AUGMENT = _TRAIN.augment
_PRESETS = (
    f"{', '.join(MODEL_PRESETS)}; or a top-down refiner: {', '.join(REFINER_PRESETS)}; or a "
    f"Pose Residual Network (--images not read): {', '.join(PRN_PRESETS)}"
)

#: The options of ``posecli train``, turned into a ``TrainConfig`` by :func:`train_config`.
TRAIN_OPTIONS = (
    option("annotations", list[Path], REQUIRED,
           "COCO person_keypoints JSON to train on; repeat to join several."),
    option("images_dir", list[Path], REQUIRED,
           "Folder of the training images, one per --annotations.", "--images"),
    option("val_annotations", Path | None, None, "COCO validation set: AP after each epoch."),
    option("val_images", Path | None, None, "Validation images (default: beside the annotations)."),
    option("preset", str | None, None,
           f"Network shape: {_PRESETS} (default: {_TRAIN.preset}; not with --init)."),
    option("init", str | None, None, "Start from this checkpoint or model name."),
    option("init_stacks", int, _TRAIN.init_stacks, "Grow the --init network to this many "
           "hourglass stacks, new ones copied from its last (0: keep its shape).", min=0),
    option("init_instances", int, _TRAIN.init_instances, "Grow the --init refiner to this many "
           "instance selectors, new modulation blocks the identity (0: keep its N).", min=0),
    option("init_crop", str, "", "Train the --init refiner on crops of this size, HxW "
           "(e.g. 256x192, multiples of 32; its weights fit any crop; empty: its own)."),
    option("epochs", int, _TRAIN.epochs, "Passes over the images.", min=1),
    option("max_steps", int, _TRAIN.max_steps, "Stop after this many steps (0: all epochs).",
           min=0),
    option("batch_size", int, _TRAIN.batch_size, "Images per step.", min=1),
    option("input_size", int, _TRAIN.input_size, "Square training crop, multiple of 64.", min=64),
    option("lr", float, _TRAIN.lr, "Learning rate.", min=0.0),
    option("optimizer", str, _TRAIN.optimizer, "sgd or adamw."),
    option("loss", str, _TRAIN.loss.kind,
           "focal (focal L2) or l2; the paper trains l2, then focal."),
    option("warmup_steps", int, _TRAIN.warmup_steps, "Linear learning-rate warm-up steps.", min=0),
    option("checkpoint_every_steps", int, _TRAIN.checkpoint_every_steps,
           "Also checkpoint every N steps (0: each epoch only).", "--checkpoint-every", min=0),
    option("workers", int, _TRAIN.workers, "Data-loading processes.", min=0),
    option("device", str, _TRAIN.device, "auto, cpu, cuda or cuda:N."),
    option("seed", int, _TRAIN.seed, "Data order, augmentation, initial weights."),
    option("out", Path, Path(_TRAIN.out), "Run folder.", "--out", "-o"),
    option("resume", bool, False, "Continue the run in --out where it stopped.", "--resume"),
    option("scale_min", float, _AUGMENT.scale_min,
           "Smallest random zoom (1: the long side fills the crop).", min=0.05),
    option("scale_max", float, _AUGMENT.scale_max, "Largest random zoom.", min=0.05),
    option("mosaic", float, _AUGMENT.mosaic_probability,
           "Probability of a 2×2 mosaic of four images (people at half size)."),
    option("min_keypoint_score", float, _TRAIN.min_keypoint_score, "Pseudo-labels: keypoints "
           "scored below are masked out (neither taught present nor absent); at most the "
           "--keep-keypoint the labels were made with, or those kept keypoints are lost.",
           min=0.0, max=1.0),
    option("amp", bool, _TRAIN.amp,
           "Mixed precision: fp16 on CUDA; bf16 on CPUs with native bf16, except refiners "
           "(faster in fp32 there)."),
    option("pretrained", bool, _TRAIN.pretrained,
           "Start a fresh network's EfficientNet-Lite0 encoder from ImageNet."),
)


def train_config(
    *,
    annotations: list[Path],
    images_dir: list[Path],
    val_annotations: Path | None = None,
    val_images: Path | None = None,
    preset: str | None = None,
    init: str | None = None,
    out: Path = Path(_TRAIN.out),
    loss: str = _TRAIN.loss.kind,
    scale_min: float = _AUGMENT.scale_min,
    scale_max: float = _AUGMENT.scale_max,
    mosaic: float = _AUGMENT.mosaic_probability,
    init_crop: str = "",
    **fields: Any,
) -> TrainConfig:
    """The ``TrainConfig`` of :data:`TRAIN_OPTIONS` values; UsageError for a bad combination.
    The other keywords are ``TrainConfig`` fields."""
    if init is not None and preset is not None:
        raise UsageError(
            f"--preset {preset} and --init exclude each other: the network is --init's "
            "(grow it with --init-stacks)"
        )
    if len(annotations) != len(images_dir) or not annotations:
        raise UsageError(
            f"{len(annotations)} --annotations but {len(images_dir)} --images: give one image "
            "folder per annotation file, in the same order"
        )
    sets = [(str(a), str(i)) for a, i in zip(annotations, images_dir, strict=True)]
    augment = replace(_AUGMENT, scale_min=scale_min, scale_max=scale_max, mosaic_probability=mosaic)
    crop_height, crop_width = parse_crop(init_crop)
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
        init_crop_height=crop_height,
        init_crop_width=crop_width,
        **fields,
    )


def parse_crop(text: str) -> tuple[int, int]:
    """``"HxW"`` as ``(H, W)`` (``""``: ``(0, 0)``, the network's own); UsageError otherwise."""
    if not text:
        return 0, 0
    height, _, width = text.lower().partition("x")
    if not (height.isdigit() and width.isdigit()):
        raise UsageError(f"--init-crop {text!r} is not HEIGHTxWIDTH, e.g. 256x192")
    return int(height), int(width)


_LABEL = LabelConfig()

#: The options of ``posecli label``: ``LabelConfig`` fields.
LABEL_OPTIONS = (
    option("teacher", str, _LABEL.teacher, "thunder (top-down on person boxes: hand-drawn ones "
           "from a person_boxes.json beside the images, else MoveNet MultiPose's), or movenet, "
           "openpose or both (bottom-up passes fused)."),
    option("keep_keypoint", float, _LABEL.keep_keypoint,
           "Keypoint confidence (0–1) needed to keep a keypoint."),
    option("confident_person", float, _LABEL.confident_person,
           "Person score (0–1) needed to label a person."),
    option("min_keypoints", int, _LABEL.min_keypoints,
           "Kept keypoints (1–17) a labelled person needs."),
)


_CLUSTER, _RAY = Cluster(), {"panel": "Cluster"}

#: Where ``posecli batch`` runs: ``posecli.batch.Cluster`` fields.
CLUSTER_OPTIONS = (
    option("address", str | None, _CLUSTER.address, "Run on Ray: auto (the cluster this machine "
           "is part of), local (a new Ray instance here) or a head's HOST:PORT (default: in "
           "this process, no Ray).", "--ray", **_RAY),
    option("workers", int, _CLUSTER.workers,
           "Videos or pose actors at once on Ray (0: one per CPU of the cluster).", min=0, **_RAY),
    option("gpus_per_worker", float, _CLUSTER.gpus_per_worker,
           "GPUs each Ray worker reserves (e.g. 0.5: two per GPU).", min=0.0, **_RAY),
)
