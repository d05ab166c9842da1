"""Frozen configuration records with their defaults. Imports the standard library and spec.py.

Every tunable number of the system lives here, with a comment that says where it comes from.
Records are immutable; derive a variant with ``dataclasses.replace``. Every record converts to
and from JSON-ready dicts with the ``to_dict`` / ``from_dict`` of :class:`Record`.
"""

from __future__ import annotations

import functools
import math
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from posecli.errors import ConfigError
from posecli.spec import NUM_CHANNELS, STRIDE

_R = TypeVar("_R", bound="Record")


class Record:
    """``to_dict`` / ``from_dict`` of the frozen configuration records (dataclasses)."""

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values (nested records as dicts, tuples as lists in JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_R], values: dict[str, Any]) -> _R:
        """The record of a JSON dict: unknown keys ignored, missing ones default, lists (at any
        depth) become tuples, dicts of fields typed as records become those records."""
        kept = {}
        for item in fields(cls):
            if item.name not in values:
                continue
            value = values[item.name]
            record = _record_type(cls, item.name)
            if record is not None and isinstance(value, dict):
                kept[item.name] = record.from_dict(value)
            else:
                kept[item.name] = _tuples(value)
        return cls(**kept)


@functools.cache
def _record_type(cls: type, name: str) -> type[Record] | None:
    """The record class that field ``name`` of ``cls`` holds (``X`` or ``X | None``), if any."""
    hint = typing.get_type_hints(cls)[name]
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, Record):
            return candidate
    return None


def _tuples(value: Any) -> Any:
    """``value`` with every list, at any depth, turned into a tuple."""
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class ModelConfig(Record):
    """Shape of an IMHN network (Identity Mapping Hourglass Network)."""

    stacks: int = 4  # hourglass stacks; the published network has 4
    width: int = 256  # channels entering each hourglass (paper: 256)
    increase: int = 128  # channels added at each hourglass level (paper: 128 → 256…768)
    channels: int = NUM_CHANNELS  # per scale: 30 body parts + 18 keypoints + mask + max (50)
    depth: int = 4  # order of each hourglass; yields depth + 1 = 5 output scales
    head_width: int = 256  # channels of the per-scale regression head before its 1×1 output
    se_reduction: int = 16  # squeeze-and-excitation reduction ratio (256 → 16 → 256)
    dilations: tuple[int, ...] = (3, 3, 4, 4, 5, 5)  # the stem's dilated 3×3 convs (published)
    encoder: str = ""  # encoder feeding the hourglass: "" (published) or "efficientnet-lite0"


@dataclass(frozen=True)
class Preprocessing(Record):
    """How a checkpoint expects its input tensor: ``(x[..., order] * scale - mean) / std``."""

    colour_order: str = "BGR"  # channel order the network was trained on ("BGR" or "RGB")
    scale: float = 1.0 / 255.0  # the published network takes BGR in [0, 1]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per channel, after scaling
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per channel, after scaling
    pad_value: int = 128  # uint8 value of the padding around a resized image (published: 128)


#: Sub-pixel refinements of a peak (``DecodeConfig.refinement``, ``posecli.decode``).
REFINEMENTS = ("gaussian", "centroid")

#: Who owns which peak (``DecodeConfig.grouping``, ``posecli.group``).
GROUPINGS = ("greedy", "prn")


@dataclass(frozen=True)
class DecodeConfig(Record):
    """Thresholds of peak finding and greedy grouping (defaults: the published code).

    Lengths are in heatmap-grid cells; see ``posecli.decode`` for the algorithm.
    """

    peak_threshold: float = 0.1  # `thre1`: minimum keypoint-heatmap value of a peak (> 0)
    part_threshold: float = 0.1  # `thre2`: a sample on a body part counts when above this
    part_sample_ratio: float = 0.8  # fraction of samples that must exceed part_threshold
    max_part_samples: int = 20  # samples along a candidate part: min(round(length + 1), this)
    long_part_fraction: float = 0.5  # parts longer than this × map height are penalised
    part_length_factor: float = 16.0  # a part joins a person only if < this × its longest part
    # ours: a part joins a person (or merges two, or starts one) only if its length over its
    # type's typical length (posecli.decode.PART_LENGTHS) is < this × the largest such ratio
    # among the person's parts (starting: the median among the other parts at its ends); 0: off.
    # 3.5: the smallest that keeps the AP of decoding rendered ground truth (bench/oracle_ap.py:
    # 3 loses 0.011 on cocomini-train). People wider than 1.5× their height on the street and
    # pedestrian clips of issue 18: 2 + 21 → 0 + 7; posecli eval AP (cocomini-train, long side
    # 384) 0.1062 → 0.1057
    part_proportion_factor: float = 3.5
    merge_ratio: float = 0.7  # a merging part must reach this × both people's weakest part
    min_parts: int = 2  # people with fewer keypoints are dropped
    min_mean_part_score: float = 0.45  # people whose total score per keypoint is lower are dropped
    # ours: people whose person score (the one reported, 0–1) is lower are dropped (Estimator)
    min_person_score: float = 0.0
    max_people: int = 0  # keep at most this many people, highest score first (0: no limit)
    max_peaks: int = 100  # ours: keypoint candidates kept per type, highest first (bounds time)
    # ours: "gaussian" fits a parabola to the log of the peak and its two neighbours per axis
    # (exact for Gaussian peaks); "centroid" is the published weighted centroid of a window
    refinement: str = "gaussian"
    refine_radius: int = 2  # published `offset_radius`: centroid window (2r+1)², here in cells
    # ours: after grouping, small people and leftover keypoints that no body part links to a
    # person join the nearest one lacking their types within this × its longest part (0: off)
    completion_reach: float = 1.0
    # issue 20: "greedy" (the assembly above) or "prn": the Pose Residual Network
    # (``posecli.group``) picks each greedy person's keypoints among the peaks inside its box
    grouping: str = "greedy"
    prn_box_scale: float = 1.25  # PRN box: keypoint extent at the PRN grid's aspect, × this
    prn_min_box: float = 32.0  # PRN boxes are at least this tall, image pixels
    # a PRN pick is kept when its softmax probability is at least this × the uniform one
    # (1 / cells: what the PRN is taught where the box's person has no such keypoint); on
    # ground-truth maps (bench/oracle_ap.py, cocomini-train) AP 0.56 at 5×, 0.75 at 2.5×
    prn_min_probability: float = 2.5
    # a pick snaps to the nearest keypoint peak within this many PRN cells, else it is missing;
    # on ground-truth maps in annotated boxes (bench/oracle_ap.py) the picks a peak owns went
    # from 86 % at 1.5 to 94 % at 3 (cocomini-train): the PRN's output blobs are as wide as its
    # input peaks, σ = 9 input px, several cells for small people
    prn_snap_cells: float = 3.0
    # PRN people with OKS ≥ this to a better one are duplicates (fragments' boxes); on
    # ground-truth maps with greedy boxes (bench/oracle_ap.py) 0.9 beat 0.5 on all three sets
    # (mmpose-ochuman 0.446 → 0.704: overlapping people are near-duplicates at OKS 0.5)
    prn_nms_oks: float = 0.9

    def __post_init__(self) -> None:
        """ConfigError naming the field of a value no decoding can use."""
        if not 0 < self.peak_threshold < math.inf:
            raise ConfigError("peak_threshold", f"must be a number > 0, got {self.peak_threshold}")
        for name in ("part_threshold", "min_mean_part_score", "min_person_score"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(name, f"must be a number, got {getattr(self, name)}")
        if self.grouping not in GROUPINGS:
            raise ConfigError(
                "grouping", f"must be one of {', '.join(GROUPINGS)}, got {self.grouping!r}"
            )
        for name in ("prn_box_scale", "prn_snap_cells"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        for name in ("max_part_samples", "max_peaks"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("part_proportion_factor", "refine_radius"):
            if not getattr(self, name) >= 0:  # NaN fails too
                raise ConfigError(name, f"must be 0 or more, got {getattr(self, name)}")
        if self.refinement not in REFINEMENTS:
            raise ConfigError(
                "refinement", f"must be one of {', '.join(REFINEMENTS)}, got {self.refinement!r}"
            )


#: What may run the networks (``InferenceConfig.backend``, ``posecli.backends``).
BACKENDS = ("auto", "torch", "onnxruntime")


@dataclass(frozen=True)
class InferenceConfig(Record):
    """How the Estimator turns images into heatmaps."""

    # network input height at scale 1 (published: 512; 384, near OpenPose's 368, keeps the CPU
    # default model above 6 frames/s end to end on 768×576 video: bench/pipeline_speed.py)
    box_size: int = 384
    # ours: if > 0, the image is resized so that its longer side is this × scale, instead of
    # its height being box_size × scale (e.g. 384: a 640×480 image → 384×288 before padding)
    long_side: int = 0
    scales: tuple[float, ...] = (1.0,)  # multi-scale search, e.g. (0.5, 1.0, 1.5, 2.0)
    flip: bool = False  # also run the mirrored image and average
    batch_size: int = 1  # images per forward pass
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    half: bool = False  # fp16 on CUDA (ignored on CPU)
    pad_multiple: int = 64  # input padded to a multiple of the coarsest stride (published: 64)
    decode_stride: int = STRIDE  # grid on which heatmaps are decoded, in input pixels (4 or 2)
    # what runs the networks (issue 19, posecli.backends): "torch", "onnxruntime" (CPU; a .pt
    # model is exported to ONNX once, cached), or "auto": onnxruntime for model files on CPU,
    # torch on CUDA and for in-memory networks
    backend: str = "auto"  # one of BACKENDS
    threads: int = 0  # CPU threads of either backend (0: its default)
    # Top-down refinement of the bottom-up people (issue 16, posecli.refine): off until a
    # trained refiner ships. Boxes are each person's keypoint extent × refine_box_scale, widened
    # or heightened to the crop's aspect (issue 16: Thunder on posecli's boxes at 1.25 → 0.285 AP).
    refine: bool = False
    refiner: str = ""  # refiner checkpoint path or registered name ("": the bundled "refiner")
    instances: int = 0  # instance selectors λ run per box: 0 = all the refiner has (its N)
    refine_box_scale: float = 1.25
    refine_min_box: float = 32.0  # boxes are at least this tall, image pixels
    refine_batch_size: int = 32  # crops per refiner forward pass (bench/refine_speed.py)
    # ours: each crop also runs mirrored and the heatmaps are averaged (flip-tested top-down, as
    # HRNet/MMPose test). With the bundled refiner (bench/refiner_ap.py --refine-flip) AP
    # cocomini-train 0.198 → 0.202, mmpose-coco 0.463 → 0.458, mmpose-ochuman 0.234 → 0.240;
    # posecli video 0.80× → 0.66× of no refinement, so video and webcam default to off
    # (posecli.options.STREAM_INFERENCE_OPTIONS)
    refine_flip: bool = True
    # ours: with no refiner named and the network on onnxruntime, the bundled refiner's int8
    # file ("refiner-int8", posecli export --format onnx-int8): 1.6–2.0× the crops/s on 2 AVX2
    # cores, AP level (cocomini-train 0.197 → 0.195 without the flip test, weights/README.md);
    # on for video and webcam (posecli.options.STREAM_INFERENCE_OPTIONS), where the speed binds
    refine_int8: bool = False
    refine_nms_oks: float = 0.5  # poses with OKS ≥ this to a better one are the same person
    refine_keypoint_threshold: float = 0.05  # refined keypoints scored below are reported missing
    # person score = bottom-up score × mean of the refined keypoint scores above this (HRNet's
    # rescoring threshold, in_vis_thre 0.2)
    refine_score_keypoint: float = 0.2
    # bottom-up people whose refined pose the merge dropped stay if they score at least this;
    # with the 300-step smoke refiner on cocomini-train, keeping those ≥ 0.5 lowered AP from
    # 0.054 to 0.021 (they are mostly fragments of people the refiner merged into one)
    refine_keep_score: float = 1.0
    # Video between bottom-up frames (issue 38, posecli.follow): with a tracker and a refiner the
    # bottom-up network runs on one frame in detect_every (at once after a scene cut or when a
    # followed person is lost); on the others the refiner runs on each live track's predicted
    # box. 1: every frame bottom-up (images, eval); video, webcam and batch default to
    # posecli.options.STREAM_DETECT_EVERY (10: bench/follow_quality.py, README.md)
    detect_every: int = 1
    # followed boxes: the predicted keypoints' extent × this (refine_box_scale plus room for the
    # motion the velocity misses)
    follow_box_scale: float = 1.4
    # a followed person is lost when the mean of its 17 refined keypoint scores falls below
    # both of: this (pedestrians_vtest: people 0.5–0.9, lost boxes 0.15–0.35) and
    # follow_min_ratio × that of the pose followed (people the refiner never saw well stay)
    follow_min_score: float = 0.4
    follow_min_ratio: float = 0.7
    # a followed person the refiner no longer sees whose predicted keypoints come within this
    # fraction of the image's width (or height) of its border has left the frame: their track
    # goes unseen without a bottom-up frame (pedestrians_vtest, first 20 s: 5 of the 10 people
    # lost were leaving it at the right edge); 0: every such person forces a bottom-up frame
    follow_edge: float = 0.02
    # a scene cut: mean absolute difference of two consecutive frames' grey 64×36 thumbnails
    # (0–255) above this (the shared videos' consecutive frames: at most 2.5 on
    # pedestrians_vtest, 15 on street_mmpose_demo, 5 fps with a moving camera)
    scene_cut: float = 40.0
    # Pose Residual Network of DecodeConfig.grouping "prn" (issue 20): checkpoint path or
    # registered name ("": the bundled "prn")
    prn: str = ""

    def __post_init__(self) -> None:
        """ConfigError naming the field of a value no run can use (:func:`_check_inference`)."""
        _check_inference(self)


#: Smallest ``InferenceConfig.long_side`` (other than 0, off), pixels.
MIN_INPUT_SIZE = 16


def _check_inference(config: InferenceConfig) -> None:
    """Every rule on an ``InferenceConfig``'s values, each checked here once."""
    if not config.scales or not all(0 < scale < math.inf for scale in config.scales):
        raise ConfigError("scales", f"must be positive, got {config.scales}")
    if config.long_side < 0 or 0 < config.long_side < MIN_INPUT_SIZE:
        raise ConfigError(
            "long_side", f"must be 0 (off) or at least {MIN_INPUT_SIZE}, got {config.long_side}"
        )
    for name in ("long_side", "box_size"):
        size = getattr(config, name)
        if (size or name == "box_size") and min(config.scales) * size < STRIDE:
            raise ConfigError(name, f"too small for scales {config.scales}, got {size}")
    if config.pad_multiple < STRIDE or config.pad_multiple % STRIDE:
        raise ConfigError(
            "pad_multiple", f"must be a multiple of {STRIDE}, got {config.pad_multiple}"
        )
    if config.decode_stride < 1 or STRIDE % config.decode_stride:
        raise ConfigError("decode_stride", f"must be 1, 2 or 4, got {config.decode_stride}")
    if config.backend not in BACKENDS:
        raise ConfigError(
            "backend", f"must be one of {', '.join(BACKENDS)}, got {config.backend!r}"
        )
    if config.refiner and not config.refine:
        raise ConfigError("refiner", "is used only with refinement on (refine)")
    for name in ("batch_size", "refine_batch_size", "detect_every"):
        if getattr(config, name) < 1:
            raise ConfigError(name, f"must be at least 1, got {getattr(config, name)}")
    for name in ("refine_box_scale", "follow_box_scale"):
        if not getattr(config, name) > 0:
            raise ConfigError(name, f"must be positive, got {getattr(config, name)}")
    if config.instances < 0:
        raise ConfigError("instances", f"must be 0 (all) or positive, got {config.instances}")
    if not 0 <= config.follow_edge < 0.5:
        raise ConfigError("follow_edge", f"must be in [0, 0.5), got {config.follow_edge}")


#: Named network shapes. ``imhn-official`` is the published 4-stack network (128,998,760
#: parameters); the others are sized for CPUs.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "imhn-official": ModelConfig(),
    # 1 stack, 4.0 M parameters, 11.7 GFLOPs at 384×320: ~28 images/s on 2 otherwise idle CPU
    # cores (bench/model_speed.py), leaving room for decoding within 10 images/s.
    "imhn-cpu": ModelConfig(stacks=1, width=128, increase=32, head_width=64, dilations=(3, 4, 5)),
    # imhn-cpu fed by an ImageNet-pretrained EfficientNet-Lite0 (strides 4–32, added into the
    # stem output and the hourglass's way down): for training on small pseudo-labelled sets.
    "imhn-cpu-lite0": ModelConfig(
        stacks=1,
        width=128,
        increase=32,
        head_width=64,
        dilations=(3, 4, 5),
        encoder="efficientnet-lite0",
    ),
    # 0.5 M parameters: unit tests and overfitting checks, not for accuracy.
    "imhn-tiny": ModelConfig(stacks=1, width=32, increase=16, head_width=32, dilations=(2, 3)),
}


@dataclass(frozen=True)
class RefinerConfig(Record):
    """Shape of a top-down refiner (issue 16, MIPNet): a person crop and an instance selector λ in,
    17 COCO keypoint heatmaps at stride 4 of the crop out (``posecli.model.refiner``)."""

    crop_height: int = 256  # crop rows, a multiple of 32 (256×192: the usual COCO top-down crop)
    crop_width: int = 192  # crop columns, a multiple of 32
    instances: int = 1  # N: λ ∈ {0 … N−1}; 1 is a plain top-down network (no modulation blocks)
    head_width: int = 64  # channels of the upsampling head (strides 32 → 4)
    embedding: int = 32  # size of the λ embedding that the modulation blocks share
    # encoder blocks followed by a Multi-Instance Modulation Block: 10 ends stride 16 (112
    # channels), 15 ends stride 32 (320); MIPNet modulates HRNet after its stages 3 and 4
    modulated_blocks: tuple[int, ...] = (10, 15)
    encoder: str = "efficientnet-lite0"  # the only backbone (ImageNet weights when trained)


#: Named refiner shapes (``posecli train --preset``); parameters and GFLOPs per crop in
#: README.md (bench/refine_speed.py).
REFINER_PRESETS: dict[str, RefinerConfig] = {
    "refiner-lite0-256x192": RefinerConfig(instances=1),
    "refiner-lite0-256x192-n2": RefinerConfig(instances=2),
    "refiner-lite0-256x192-n3": RefinerConfig(instances=3),
    # a quarter of the pixels: for video, where the speed budget is tight
    "refiner-lite0-128x96": RefinerConfig(crop_height=128, crop_width=96, instances=1),
}


@dataclass(frozen=True)
class PRNConfig(Record):
    """Shape of a Pose Residual Network (issue 20, MultiPoseNet): the 17 COCO keypoint heatmaps
    cropped to a person box and resized to ``crop_height × crop_width`` cells in, per keypoint
    type the logits of which cell holds the box's own person's keypoint out
    (``posecli.model.prn``)."""

    crop_height: int = 28  # rows of the box grid (paper: 56)
    crop_width: int = 18  # columns (paper: 36)
    hidden: int = 256  # units of the hidden layer (paper: 1,024)
    dropout: float = 0.3  # dropout after the hidden layer, training only


#: Named PRN shapes (``posecli train --preset``).
PRN_PRESETS: dict[str, PRNConfig] = {
    # half the paper's grid each way, a quarter of its hidden units: 4.4 M weights (paper ~70 M)
    "prn-28x18": PRNConfig(),
    "prn-56x36": PRNConfig(crop_height=56, crop_width=36, hidden=1024),  # the published shape
}


@dataclass(frozen=True)
class LossConfig(Record):
    """Heatmap loss (issue 5). Defaults: the paper's focal L2 with the published channel weights."""

    kind: str = "focal"  # "focal" (focal L2) or "l2"; the paper trains L2 first, then focal L2
    gamma: float = 2.0  # focusing exponent on |1 - s_t| (paper: 2; published code: 1)
    alpha: float = 0.1  # easy-sample compensation on foreground, s_t = s - alpha (code: 0)
    beta: float = 0.02  # easy-sample compensation on background, s_t = 1 - s - beta (code: 0)
    foreground_threshold: float = 0.01  # a target >= this is foreground (published: 0.01)
    keypoint_weight: float = 3.0  # keypoint channels 30–47 vs body parts (published: 3)
    mask_weight: float = 0.1  # person-mask channel 48 (published `multi_task_weight`: 0.1)
    # per output scale, finest (stride 4) first; published `scale_weight` for 128 → 8
    scale_weights: tuple[float, ...] = (0.1, 0.2, 0.4, 1.6, 6.4)


@dataclass(frozen=True)
class AugmentConfig(Record):
    """Random geometry and colour applied to training images (issue 5)."""

    scale_min: float = 0.7  # zoom relative to fitting the image's long side into the crop
    scale_max: float = 1.3
    rotate_degrees: float = 40.0  # uniform in ±this (issue 5: ±40°; published: ±50°)
    shift_fraction: float = 0.15  # centre shift, uniform in ±this × crop size (published: 50 px)
    flip_probability: float = 0.5  # horizontal mirror with the spec's flip orders (published: 0.5)
    brightness: float = 0.25  # colour jitter: pixel values × U(1 ± this)
    contrast: float = 0.25  # pixels pulled to / pushed from the mean grey by U(1 ± this)
    saturation: float = 0.25  # pixels pulled to / pushed from their own grey by U(1 ± this)
    mosaic_probability: float = 0.0  # 2×2 mosaic of four images, each augmented into a quarter
    # refiner crops (issue 16): the person box jittered like a detector's errors
    box_scale_jitter: float = 0.2  # box side × U(1 ± this)
    box_shift_jitter: float = 0.1  # box centre moved by U(± this) × its width / height
    # refiner crops distilled from a teacher (issue 35): heavy augmentations that fixed labels
    # would contradict (posecli.train.distill)
    occlusion_probability: float = 0.0  # one flat-coloured patch painted over the crop
    blur_probability: float = 0.0  # Gaussian blur of σ U(0.5, 2) pixels


@dataclass(frozen=True)
class TrainConfig(Record):
    """One training run of ``posecli train`` / ``posecli.train.trainer.train``.

    Paths are strings so that the record is JSON-serialisable; ``out`` receives
    ``checkpoint-last.pt``, ``checkpoint-best.pt``, ``train-state.pt``, ``metrics.jsonl`` and
    ``config.json``.
    """

    annotations: str  # COCO person_keypoints JSON (ground truth or pseudo-labels)
    images: str  # folder holding the images named by ``file_name``
    # further (annotations, images) pairs trained on together with the first (e.g. LSPet)
    more_datasets: tuple[tuple[str, str], ...] = ()
    out: str = "runs/train"  # run directory
    val_annotations: str | None = None  # COCO validation set (AP every `val_every_epochs`)
    val_images: str | None = None  # its image folder (default: beside the annotation file)
    preset: str = "imhn-official"  # MODEL_PRESETS name used when training from scratch
    model: ModelConfig | None = None  # explicit network shape; overrides `preset`
    # explicit refiner shape (issue 16): trains a top-down refiner instead; so does a `preset`
    # of REFINER_PRESETS, or an `init` that is a refiner checkpoint
    refiner: RefinerConfig | None = None
    # explicit PRN shape (issue 20): trains a Pose Residual Network on synthetic heatmaps of the
    # annotations (no images read); so does a `preset` of PRN_PRESETS or a PRN `init`
    prn: PRNConfig | None = None
    pretrained: bool = True  # a fresh network's EfficientNet-Lite0 encoder starts from ImageNet
    init: str | None = None  # checkpoint path or model name to start from (its shape wins)
    # refiners (issue 35): this top-down teacher's ONNX file (PP-TinyPose 256×192) runs on each
    # augmented crop and its heatmaps are the target of the box's person (posecli.train.distill)
    teacher: str | None = None
    # ours: grow `init`'s network to this many hourglass stacks (0: keep its shape); new
    # stacks start as copies of its last stack (posecli.model.grow_stacks)
    init_stacks: int = 0
    # ours: grow `init`'s refiner to this many instance selectors λ (0: keep its N); the new
    # modulation blocks start as the identity, so λ = 0 predicts as before
    # (posecli.model.grow_instances)
    init_instances: int = 0
    # ours: train `init`'s refiner on crops of this size (0: its own); its weights fit any crop
    # (posecli.model.resize_crop)
    init_crop_height: int = 0
    init_crop_width: int = 0
    preprocessing: Preprocessing = Preprocessing()  # input convention stored in checkpoints
    resume: bool = False  # continue the run in `out` exactly where it stopped
    input_size: int = 384  # square training crop, multiple of 64 (paper: 384, then 512)
    epochs: int = 100  # passes over the training images
    max_steps: int = 0  # stop after this many optimiser steps in total (0: run all epochs)
    batch_size: int = 8  # images per process and step (published: 8 per GPU)
    workers: int = 2  # data-loading processes per training process (0: load in-process)
    include_empty_images: bool = False  # also train on images without keypoint-annotated people
    min_keypoint_score: float = 0.3  # pseudo-labels: keypoints below are ignored (masked out)
    weight_by_score: bool = True  # pseudo-labels: kept keypoints weighted by their score
    optimizer: str = "sgd"  # "sgd" (published: momentum 0.9) or "adamw"
    lr: float = 2.5e-5  # per process; scaled by world size (published: 2.5e-5 with summed loss)
    momentum: float = 0.9  # SGD momentum (published: 0.9)
    weight_decay: float = 5e-4  # on convolution weights only (published: 5e-4)
    schedule: str = "cosine"  # "cosine" or "step" (per optimiser step, after warm-up)
    lr_milestones: tuple[int, ...] = ()  # "step": epochs at which the rate is multiplied
    lr_gamma: float = 0.1  # "step": factor applied at each milestone
    min_lr_fraction: float = 0.0  # "cosine": final rate as a fraction of `lr`
    warmup_steps: int = 0  # linear warm-up from `warmup_start_fraction` × lr (published: 0)
    warmup_start_fraction: float = 0.01
    grad_clip: float = 10.0  # max global gradient norm, 0 disables (published max: 10)
    amp: bool = True  # mixed precision: fp16 on CUDA, bf16 on native-bf16 CPUs (refiners: fp32)
    sync_batchnorm: bool = True  # SyncBatchNorm across processes, CUDA + DDP only (published)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"; under torchrun: cuda:LOCAL_RANK
    seed: int = 0  # data order, augmentation and initial weights
    log_every_steps: int = 10  # one metrics line per this many steps
    checkpoint_every_steps: int = 0  # also save mid-epoch (0: at the end of each epoch only)
    val_every_epochs: int = 1  # COCO validation period when `val_annotations` is set
    val_box_size: int = 512  # Estimator box size for validation (published inference: 512)
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()


@dataclass(frozen=True)
class LabelConfig(Record):
    """How teachers are run and fused into pseudo-labels."""

    # "tinypose": top-down, PP-TinyPose on each person box (hand-drawn where a folder has
    # person_boxes.json, and PicoDet's); "thunder": MoveNet Thunder on the hand-drawn boxes, else
    # on MoveNet MultiPose's (labels v2); "movenet", "openpose", "both": bottom-up fusion.
    # bench/label_quality.py, cocomini-train, annotated boxes: label AP 0.497 for tinypose against
    # 0.350 for thunder, kept keypoints' recall 0.823 against 0.640 (precision 0.873 / 0.913).
    teacher: str = "tinypose"
    # Long sides of the MoveNet passes (multiples of 32); the teachers' README: 256–512 work,
    # 384 is the best single size on real COCO images.
    movenet_sizes: tuple[int, ...] = (256, 384, 512)
    flip: bool = True  # also run every teacher pass on the mirrored image
    movenet_min_score: float = 0.1  # MoveNet always returns 6 people; below this they are noise
    # PAF grouping; the defaults are those of the published OpenPose demo code.
    openpose_peak_threshold: float = 0.1  # heatmap peaks above this are keypoint candidates
    openpose_paf_threshold: float = 0.05  # a field sample supports a limb when above this
    openpose_paf_samples: int = 10  # field samples along a candidate limb
    openpose_paf_fraction: float = 0.8  # fraction of samples that must support a limb
    openpose_min_keypoints: int = 4  # OpenPose people with fewer keypoints are dropped
    openpose_min_mean_score: float = 0.4  # ... and those whose (peaks + limbs) / keypoints is lower
    # COCO person segmentations cover about half of their box; OKS scales use this estimate.
    area_per_box: float = 0.5
    match_keypoint_score: float = 0.2  # keypoints that take part in matching people by OKS
    same_person_oks: float = 0.4  # two detections are the same person when their OKS ≥ this
    # Two positions of a keypoint agree when exp(-d²/(2·area·κ²)) ≥ this (κ: COCO sigmas × 2):
    # the per-keypoint tolerance of COCO OKS, 0.5 is the midpoint of its falloff.
    agree_similarity: float = 0.5
    # The keep rule, chosen for the default teacher (tinypose) with `bench/label_quality.py` on
    # cocomini-train (annotated boxes as hand-drawn ones): keypoints ≥ 0.3, the training default
    # of --min-keypoint-score, keep label AP 0.497 (precision 0.873, recall 0.823); kept at ≥ 0.45
    # (or trained with --min-keypoint-score 0.45): precision 0.902, recall 0.759, label AP 0.420.
    # Thunder's labels v2 used 0.2 / 0.1 / 3 (its best AP 0.351 at precision ≥ 0.9: 0.913,
    # recall 0.640); the bottom-up fusion's labels of the first milestones 0.25 / 0.2 / 5.
    keep_keypoint: float = 0.3  # keypoint confidence needed to keep a keypoint (v=2)
    confident_person: float = 0.3  # person score needed to label a person
    min_keypoints: int = 3  # labelled people need at least this many kept keypoints
    ignore_person: float = 0.08  # less confident people above this become ignore regions
    duplicate_iou: float = 0.5  # uncertain people overlapping a labelled one this much: duplicates
    box_margin: float = 0.1  # keypoint boxes grow by this fraction of their size on each side
    # Hand-drawn boxes (a person_boxes.json beside the image folder) with no labelled person
    # matching them (box IoU below box_match_iou) become ignore regions.
    use_person_boxes: bool = True
    box_match_iou: float = 0.3
    # Top-down (teacher "thunder"): Thunder sees a square crop of side crop_scale × the box's
    # longer side (teachers' README: 1.1 best on annotated boxes, 1.25 on MultiPose's boxes).
    thunder_crop_scale: float = 1.1  # on hand-drawn boxes
    thunder_detected_crop_scale: float = 1.25  # on MultiPose's boxes
    thunder_box_size: int = 384  # long side of the MultiPose pass that finds the boxes
    thunder_box_score: float = 0.05  # MultiPose boxes scored below are not looked at
    # Top-down (teacher "tinypose": PP-TinyPose 256×192, posecli.train.label.tinypose) on the
    # union of hand-drawn boxes and PicoDet-S-320's, a PicoDet box with IoU ≥ tinypose_same_iou
    # to a hand-drawn one, or lying inside one by tinypose_same_inside of its area, being that
    # person (or part of it); the box grown to 3:4 and × tinypose_crop_scale (teachers' README:
    # 1.25 best; PicoDet score ≥ 0.2 and NMS IoU 0.6 measured there).
    tinypose_crop_scale: float = 1.25
    picodet_score: float = 0.2  # PicoDet boxes scored below are not looked at
    picodet_nms_iou: float = 0.6  # PicoDet boxes overlapping a better one more are dropped
    tinypose_same_iou: float = 0.5
    # Without it, 190 of crosswalk_crowds' 462 ignore regions and 273 of the first 275
    # openimages_people images' 405 lay mostly inside a labelled person (masking part of them);
    # on cocomini-train's annotated boxes 7 of the 8 such regions were no other annotated person.
    tinypose_same_inside: float = 0.7
    # Top-down people whose box score (hand-drawn 1, PicoDet its score; none for bottom-up
    # teachers) is ≥ this but who fail the keep rule are still written as people (iscrowd 0,
    # their kept keypoints, maybe none) rather than ignore regions (issue 37). On cocomini-train,
    # 94 % of PicoDet's boxes scored ≥ 0.6 are annotated people, 35–60 % of those at 0.2–0.6.
    box_person_score: float = 0.6
    nms_oks: float = 0.5  # top-down people with OKS ≥ this to a better one are duplicates
    threads: int = 1  # onnxruntime intra-op threads per teacher
    chunk_size: int = 50  # images labelled between two saves of the partial file


@dataclass(frozen=True)
class TrackerConfig(Record):
    """Tunables of ``posecli.track.Tracker`` and its One-Euro smoothing (seconds of video)."""

    min_similarity: float = 0.3  # a person matches a track only above this pose_similarity
    candidate_similarity: float = 0.5  # likewise for a low-score candidate (stricter)
    duplicate_similarity: float = 0.5  # a candidate this similar to a shown person is that person
    lost_seconds: float = 1.0  # re-identification window: how long an unseen track is kept
    memory_seconds: float = 0.5  # a keypoint missing from a detection is remembered this long
    min_hits: int = 2  # frames in a row a new person must be seen to get an id (first frame: 1)
    min_area: float = 32.0 * 32.0  # px²; floor of the similarity scale for tiny or one-point poses
    tolerance: float = 2.0  # × the OKS falloff of each keypoint (coarse keypoints jitter more)
    min_common: int = 4  # similarity is divided by at least this many shared keypoints
    spread_per_second: float = 1.0  # tolerance grows by this fraction per second unseen
    velocity_blend: float = 0.5  # weight of the newest velocity measurement (exponential mean)
    max_speed: float = 2.0  # box heights per second; faster velocity estimates are scaled down
    # decoder threshold (DecodeConfig.min_mean_part_score) of the low-score candidates that
    # posecli's pipeline decodes for the tracker: people a run's --min-part-score (0.45) or
    # --min-score drops from there up can continue tracks
    candidate_min_score: float = 0.2
    smooth: bool = False  # One-Euro filter on the keypoints of tracked people
    min_cutoff: float = 1.0  # Hz; One-Euro cutoff at rest (lower: smoother, more lag)
    beta: float = 0.05  # s/px; how fast the cutoff rises with speed (higher: less lag)
    d_cutoff: float = 1.0  # Hz; cutoff of the speed estimate
