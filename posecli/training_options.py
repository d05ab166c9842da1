"""The options of ``posecli train`` and ``posecli label`` as data (``posecli.options``'s
:class:`~posecli.options.OptionSpec` rows), and :func:`train_config`, which turns the parsed
values into the ``TrainConfig`` the trainer runs on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from posecli.config import (
    MODEL_PRESETS,
    PRN_PRESETS,
    REFINER_PRESETS,
    LabelConfig,
    TrainConfig,
)
from posecli.errors import UsageError
from posecli.options import REQUIRED, option

_TRAIN = TrainConfig(annotations="", images="")
_AUGMENT = _TRAIN.augment
_PRESETS = (
    f"{', '.join(MODEL_PRESETS)}; or a top-down refiner: {', '.join(REFINER_PRESETS)}; or a "
    f"Pose Residual Network (--images not read): {', '.join(PRN_PRESETS)}"
)

#: The options of ``posecli train``, turned into a ``TrainConfig`` by :func:`train_config`.
TRAIN_OPTIONS = (
    option(
        "annotations",
        list[Path],
        REQUIRED,
        "COCO person_keypoints JSON to train on; repeat to join several.",
    ),
    option(
        "images_dir",
        list[Path],
        REQUIRED,
        "Folder of the training images, one per --annotations.",
        "--images",
    ),
    option("val_annotations", Path | None, None, "COCO validation set: AP after each epoch."),
    option("val_images", Path | None, None, "Validation images (default: beside the annotations)."),
    option(
        "preset",
        str | None,
        None,
        f"Network shape: {_PRESETS} (default: {_TRAIN.preset}; not with --init).",
    ),
    option("init", str | None, None, "Start from this checkpoint or model name."),
    option(
        "init_stacks",
        int,
        _TRAIN.init_stacks,
        "Grow the --init network to this many "
        "hourglass stacks, new ones copied from its last (0: keep its shape).",
        min=0,
    ),
    option(
        "init_instances",
        int,
        _TRAIN.init_instances,
        "Grow the --init refiner to this many "
        "instance selectors, new modulation blocks the identity (0: keep its N).",
        min=0,
    ),
    option(
        "init_crop",
        str,
        "",
        "Train the --init refiner on crops of this size, HxW "
        "(e.g. 256x192, multiples of 32; its weights fit any crop; empty: its own).",
    ),
    option("epochs", int, _TRAIN.epochs, "Passes over the images.", min=1),
    option(
        "max_steps", int, _TRAIN.max_steps, "Stop after this many steps (0: all epochs).", min=0
    ),
    option("batch_size", int, _TRAIN.batch_size, "Images per step.", min=1),
    option("input_size", int, _TRAIN.input_size, "Square training crop, multiple of 64.", min=64),
    option("lr", float, _TRAIN.lr, "Learning rate.", min=0.0),
    option("optimizer", str, _TRAIN.optimizer, "sgd or adamw."),
    option(
        "loss", str, _TRAIN.loss.kind, "focal (focal L2) or l2; the paper trains l2, then focal."
    ),
    option("warmup_steps", int, _TRAIN.warmup_steps, "Linear learning-rate warm-up steps.", min=0),
    option(
        "checkpoint_every_steps",
        int,
        _TRAIN.checkpoint_every_steps,
        "Also checkpoint every N steps (0: each epoch only).",
        "--checkpoint-every",
        min=0,
    ),
    option("workers", int, _TRAIN.workers, "Data-loading processes.", min=0),
    option("device", str, _TRAIN.device, "auto, cpu, cuda or cuda:N."),
    option("seed", int, _TRAIN.seed, "Data order, augmentation, initial weights."),
    option("out", Path, Path(_TRAIN.out), "Run folder.", "--out", "-o"),
    option("resume", bool, False, "Continue the run in --out where it stopped.", "--resume"),
    option(
        "scale_min",
        float,
        _AUGMENT.scale_min,
        "Smallest random zoom (1: the long side fills the crop).",
        min=0.05,
    ),
    option("scale_max", float, _AUGMENT.scale_max, "Largest random zoom.", min=0.05),
    option(
        "mosaic",
        float,
        _AUGMENT.mosaic_probability,
        "Probability of a 2×2 mosaic of four images (people at half size).",
    ),
    option(
        "teacher",
        Path | None,
        None,
        "Refiners: distil this top-down teacher's ONNX file "
        "(PP-TinyPose 256x192), run on each augmented crop, instead of the fixed labels.",
    ),
    option(
        "occlusion",
        float,
        _AUGMENT.occlusion_probability,
        "Refiners: probability of a patch painted over the crop (with --teacher).",
        min=0.0,
        max=1.0,
    ),
    option(
        "blur",
        float,
        _AUGMENT.blur_probability,
        "Refiners: probability of a Gaussian blur of the crop.",
        min=0.0,
        max=1.0,
    ),
    option(
        "min_keypoint_score",
        float,
        _TRAIN.min_keypoint_score,
        "Pseudo-labels: keypoints "
        "scored below are masked out (neither taught present nor absent); at most the "
        "--keep-keypoint the labels were made with, or those kept keypoints are lost.",
        min=0.0,
        max=1.0,
    ),
    option(
        "amp",
        bool,
        _TRAIN.amp,
        "Mixed precision: fp16 on CUDA; bf16 on CPUs with native bf16, except refiners "
        "(faster in fp32 there).",
    ),
    option(
        "pretrained",
        bool,
        _TRAIN.pretrained,
        "Start a fresh network's EfficientNet-Lite0 encoder from ImageNet.",
    ),
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
    teacher: Path | None = None,
    occlusion: float = _AUGMENT.occlusion_probability,
    blur: float = _AUGMENT.blur_probability,
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
    augment = replace(
        _AUGMENT,
        scale_min=scale_min,
        scale_max=scale_max,
        mosaic_probability=mosaic,
        occlusion_probability=occlusion,
        blur_probability=blur,
    )
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
        teacher=str(teacher) if teacher else None,
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
    option(
        "teacher",
        str,
        _LABEL.teacher,
        "tinypose (PP-TinyPose, top-down on person boxes: "
        "hand-drawn ones from a person_boxes.json beside the images and PicoDet's), thunder "
        "(MoveNet Thunder on the hand-drawn boxes, else MoveNet MultiPose's), or movenet, "
        "openpose or both (bottom-up passes fused).",
    ),
    option(
        "keep_keypoint",
        float,
        _LABEL.keep_keypoint,
        "Keypoint confidence (0–1) needed to keep a keypoint.",
    ),
    option(
        "confident_person",
        float,
        _LABEL.confident_person,
        "Person score (0–1) needed to label a person.",
    ),
    option(
        "min_keypoints", int, _LABEL.min_keypoints, "Kept keypoints (1–17) a labelled person needs."
    ),
    option(
        "threads",
        int,
        _LABEL.threads,
        "onnxruntime threads per teacher (labels do not depend on it).",
        min=1,
    ),
)
