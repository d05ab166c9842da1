"""Frozen configuration records with their defaults. Imports only the standard library.

Every tunable number of the system lives here, with a comment that says where it comes from.
Records are immutable; derive a variant with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an IMHN network (Identity Mapping Hourglass Network)."""

    stacks: int = 4  # hourglass stacks; the published network has 4
    width: int = 256  # channels entering each hourglass (paper: 256)
    increase: int = 128  # channels added at each hourglass level (paper: 128 → 256…768)
    channels: int = 50  # output channels per scale: 30 body parts + 18 keypoints + mask + max
    depth: int = 4  # order of each hourglass; yields depth + 1 = 5 output scales
    head_width: int = 256  # channels of the per-scale regression head before its 1×1 output
    se_reduction: int = 16  # squeeze-and-excitation reduction ratio (256 → 16 → 256)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint expects its input tensor: ``(x[..., order] * scale - mean) / std``."""

    colour_order: str = "BGR"  # channel order the network was trained on ("BGR" or "RGB")
    scale: float = 1.0 / 255.0  # the published network takes BGR in [0, 1]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per channel, after scaling
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per channel, after scaling
    pad_value: int = 128  # uint8 value of the padding around a resized image (published: 128)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kept.items()})


@dataclass(frozen=True)
class DecodeConfig:
    """Thresholds of peak finding and greedy grouping (defaults: the published code)."""

    peak_threshold: float = 0.1  # `thre1`: minimum keypoint-heatmap value of a peak
    part_threshold: float = 0.1  # `thre2`: a sample on a body part counts when above this
    part_sample_ratio: float = 0.8  # fraction of samples that must exceed part_threshold
    max_part_samples: int = 20  # samples along a candidate part: min(round(length + 1), this)
    long_part_fraction: float = 0.5  # parts longer than this × map height are penalised
    part_length_factor: float = 16.0  # an end is replaced only if the part ≤ this × longest part
    merge_ratio: float = 0.7  # a merging part must reach this × both people's weakest part
    min_parts: int = 2  # people with fewer parts are dropped
    min_mean_part_score: float = 0.45  # people whose mean score per part is lower are dropped
    max_people: int = 0  # keep at most this many people, highest score first (0: no limit)


@dataclass(frozen=True)
class InferenceConfig:
    """How the Estimator turns images into heatmaps."""

    box_size: int = 512  # network input height at scale 1 (published: 512)
    scales: tuple[float, ...] = (1.0,)  # multi-scale search, e.g. (0.5, 1.0, 1.5, 2.0)
    flip: bool = False  # also run the mirrored image and average
    batch_size: int = 1  # images per forward pass
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    half: bool = False  # fp16 on CUDA (ignored on CPU)
    pad_multiple: int = 64  # input padded to a multiple of the coarsest stride (published: 64)
    decode_stride: int = 4  # grid on which heatmaps are decoded, in input pixels (4 or 2)


#: Named network shapes. ``imhn-official`` is the published 4-stack network (128,998,760
#: parameters); the others are sized for CPUs.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "imhn-official": ModelConfig(),
}
