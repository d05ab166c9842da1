"""The top-down refiner (issue 16): MIPNet's multi-instance idea on an EfficientNet-Lite0.

Khirodkar et al., *Multi-Instance Pose Networks: Rethinking Top-Down Pose Estimation* (ICCV
2021): one person crop and an instance selector λ ∈ {0 … N−1} in, the keypoint heatmaps of the
λ-th person of the crop out (λ = 0: the person the box is for; λ = i: the i-th nearest other
one). Written here, sized for CPUs:

* **Backbone**: EfficientNet-Lite0 (``posecli.model.encoder``, ImageNet weights when trained
  from scratch), features at strides 4, 8, 16 and 32.
* **Multi-Instance Modulation Blocks** (``InstanceModulation``): λ is embedded once
  (``nn.Embedding(N, embedding)``); after each encoder block of ``config.modulated_blocks`` a
  Linear map of that code gives per-channel scale and shift, ``x · (1 + γ(λ)) + β(λ)``
  (FiLM-like), applied before the next block, so all later blocks see the selected person.
  They start as the identity (γ = β = 0). With ``instances == 1`` there are none: the network is
  a plain top-down network and λ must be 0.
* **Head** (``UpsamplingHead``): from stride 32 up to stride 4, each level bilinearly upsampled
  ×2 and added to the 1×1-projected encoder features of the next finer stride, then a 3×3
  convolution; a 1×1 convolution gives the 17 COCO keypoint heatmaps.

Input: ``(B, 3, H, W)`` float crops, ``H = crop_height``, ``W = crop_width`` (multiples of 32),
normalised as the checkpoint's ``Preprocessing`` says (the default: BGR in [0, 1]; the encoder
converts to its ImageNet scaling), and ``instances``: ``(B,)`` int64 λ per crop.
Output: ``(B, 17, H/4, W/4)`` float heatmaps in COCO-17 order; cell ``(i, j)`` is centred on
crop pixel ``(4j + 1.5, 4i + 1.5)`` (x right, y down, integer values at pixel centres).
``heatmap_keypoints`` decodes them to ``(B, 17, 3)`` ``[x, y, score]`` in crop pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from posecli.config import RefinerConfig
from posecli.model.encoder import (
    FEATURE_CHANNELS,
    LITE0_STAGES,
    EfficientNetLite0,
)
from posecli.model.layers import Conv, init_conv_bn
from posecli.spec import NUM_COCO_KEYPOINTS

#: What a refiner checkpoint says it is (``"kind"``), and its output layout.
REFINER_KIND = "refiner"
REFINER_STRIDE = 4

#: The encoder's coarsest stride: crop sides must be multiples of it.
CROP_MULTIPLE = 32

#: Std of the normal init of the output convolution, so that heatmaps start near 0.
OUTPUT_INIT_STD = 0.001

#: Heatmap values are clamped to at least this before the logarithm of sub-pixel decoding.
LOG_FLOOR = 1e-6


def block_channels() -> tuple[int, ...]:
    """Output channels of each of the 16 EfficientNet-Lite0 blocks, in order."""
    return tuple(outs for _, _, _, outs, repeats in LITE0_STAGES for _ in range(repeats))


def check_refiner_config(config: RefinerConfig) -> None:
    """Raise ValueError when ``config`` cannot describe a refiner."""
    for name in ("crop_height", "crop_width"):
        value = getattr(config, name)
        if value < CROP_MULTIPLE or value % CROP_MULTIPLE:
            raise ValueError(
                f"RefinerConfig.{name} must be a multiple of {CROP_MULTIPLE}, got {value}"
            )
    for name in ("instances", "head_width", "embedding"):
        if getattr(config, name) < 1:
            raise ValueError(
                f"RefinerConfig.{name} must be at least 1, got {getattr(config, name)}"
            )
    blocks = len(block_channels())
    if config.instances > 1 and not config.modulated_blocks:
        raise ValueError("a refiner with several instances needs modulated_blocks")
    if any(not 0 <= block < blocks for block in config.modulated_blocks):
        raise ValueError(f"RefinerConfig.modulated_blocks must be in 0–{blocks - 1}")
    if config.encoder != "efficientnet-lite0":
        raise ValueError(
            f"RefinerConfig.encoder must be 'efficientnet-lite0', got {config.encoder!r}"
        )


class InstanceModulation(nn.Module):
    """Multi-Instance Modulation Block: ``x · (1 + γ) + β`` with per-channel ``γ, β`` from the
    λ code through one Linear layer (zero at init: the block starts as the identity)."""

    def __init__(self, embedding: int, channels: int) -> None:
        super().__init__()
        self.film = nn.Linear(embedding, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, h, w) features, ``code`` (B, embedding) → (B, C, h, w)."""
        scale, shift = self.film(code).chunk(2, dim=1)  # (B, C) each
        return x * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]  # (B, C, h, w)


class UpsamplingHead(nn.Module):
    """Strides 32 → 4 with lateral 1×1 projections, then 17 heatmaps at stride 4.

    ``[(B, 24, H/4, W/4), (B, 40, H/8, W/8), (B, 112, H/16, W/16), (B, 320, H/32, W/32)]`` →
    ``(B, 17, H/4, W/4)``.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(
            Conv(channels, width, 1, bn=True, relu=False) for channels in FEATURE_CHANNELS
        )
        self.smooth = nn.ModuleList(
            Conv(width, width, 3, bn=True, relu=True) for _ in FEATURE_CHANNELS
        )
        self.out = nn.Conv2d(width, NUM_COCO_KEYPOINTS, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.smooth[-1](self.laterals[-1](features[-1]))  # (B, width, H/32, W/32)
        for level in range(len(features) - 2, -1, -1):
            finer = features[level]  # (B, c_level, H/s, W/s)
            x = F.interpolate(x, size=finer.shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[level](x + self.laterals[level](finer))  # (B, width, H/s, W/s)
        return self.out(x)  # (B, 17, H/4, W/4)


class Refiner(nn.Module):
    """The refiner network; see the module docstring for its input and output."""

    def __init__(self, config: RefinerConfig | None = None) -> None:
        super().__init__()
        config = RefinerConfig() if config is None else config
        check_refiner_config(config)
        self.config = config
        self.encoder = EfficientNetLite0()
        if config.instances > 1:
            channels = block_channels()
            self.instance_embedding = nn.Embedding(config.instances, config.embedding)
            self.modulations = nn.ModuleDict(
                {
                    str(block): InstanceModulation(config.embedding, channels[block])
                    for block in config.modulated_blocks
                }
            )
        self.head = UpsamplingHead(config.head_width)
        self.reset_parameters()

    @property
    def output_layout(self) -> RefinerLayout:
        """What the network outputs: kind, crop size, stride, instances, keypoint order."""
        return refiner_output_layout(self.config)

    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions, unit BatchNorms, N(0, 1) λ embedding, identity
        modulation, output convolution N(0, 0.001) so heatmaps start near 0."""
        init_conv_bn(self)
        nn.init.normal_(self.head.out.weight, 0.0, OUTPUT_INIT_STD)

    def forward(self, x: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """Heatmaps ``(B, 17, H/4, W/4)`` of crops ``x`` (B, 3, H, W) for λ ``instances`` (B,)
        (default: all 0)."""
        self._check_input(x)
        if instances is None:
            instances = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if instances.shape != (x.shape[0],):
            raise ValueError(f"instances must be ({x.shape[0]},), got {tuple(instances.shape)}")
        if self.config.instances == 1:
            if bool((instances != 0).any()):
                raise ValueError("a refiner of one instance takes λ = 0 only")
            return self.head(self.encoder(x))
        code = self.instance_embedding(instances)  # (B, embedding)

        def modulate(index: int, features: torch.Tensor) -> torch.Tensor:
            if str(index) not in self.modulations:
                return features
            return self.modulations[str(index)](features, code.to(features.dtype))

        return self.head(self.encoder(x, modulate))  # (B, 17, H/4, W/4)

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (3, self.config.crop_height, self.config.crop_width)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"refiner expects (B, {', '.join(map(str, expected))}) crops, got {tuple(x.shape)}"
            )


@dataclass(frozen=True)
class RefinerLayout:
    """The output contract of a refiner (stored in its checkpoints as ``to_dict()``): crop size,
    stride, instances, keypoint order; ``(B, 17, crop_height/stride, crop_width/stride)``."""

    kind: ClassVar[str] = REFINER_KIND
    crop_height: int
    crop_width: int
    stride: int
    instances: int
    keypoints: str = "coco-17"

    @property
    def channels(self) -> int:
        """Heatmap channels: one per COCO keypoint."""
        return NUM_COCO_KEYPOINTS

    def to_dict(self) -> dict[str, Any]:
        """The layout as a checkpoint states it (``"kind"`` first)."""
        return {"kind": self.kind, **asdict(self)}


def refiner_output_layout(config: RefinerConfig) -> RefinerLayout:
    """The output contract of a refiner of shape ``config``."""
    return RefinerLayout(config.crop_height, config.crop_width, REFINER_STRIDE, config.instances)


def build_refiner(config: RefinerConfig) -> Refiner:
    """A freshly initialised refiner of shape ``config`` (training mode, on the CPU)."""
    return Refiner(config)


def heatmap_keypoints(maps: torch.Tensor, stride: int = REFINER_STRIDE) -> torch.Tensor:
    """Sub-pixel keypoints of heatmaps: the maximum of each map, refined per axis by the vertex
    of the parabola through the logarithms of it and its two neighbours (exact for Gaussian
    peaks; the offset is kept within half a cell, and is 0 at the border or where the
    log-heatmap is not concave).

    Args:
        maps: ``(B, K, h, w)`` float heatmaps, cell ``(i, j)`` centred on pixel
            ``(stride·j + (stride−1)/2, stride·i + (stride−1)/2)``.

    Returns:
        ``(B, K, 3)`` float32 ``[x, y, score]``: pixels of the map's input (the crop), and
        the maximum clamped to [0, 1].
    """
    batch, channels, rows, columns = maps.shape
    maps = maps.float()
    score, index = maps.reshape(batch, channels, -1).max(dim=2)  # (B, K)
    row, column = index // columns, index % columns  # (B, K)
    logs = maps.clamp(min=LOG_FLOOR).log()  # (B, K, h, w)

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        flat = (r.clamp(0, rows - 1) * columns + c.clamp(0, columns - 1))[..., None]
        return logs.reshape(batch, channels, -1).gather(2, flat)[..., 0]  # (B, K)

    centre = at(row, column)
    dx = _vertex(at(row, column - 1), centre, at(row, column + 1))  # (B, K)
    dy = _vertex(at(row - 1, column), centre, at(row + 1, column))
    dx = torch.where((column > 0) & (column < columns - 1), dx, torch.zeros_like(dx))
    dy = torch.where((row > 0) & (row < rows - 1), dy, torch.zeros_like(dy))
    x = stride * (column.float() + dx) + (stride - 1) / 2  # (B, K) crop pixels
    y = stride * (row.float() + dy) + (stride - 1) / 2
    return torch.stack([x, y, score.clamp(0.0, 1.0)], dim=-1)  # (B, K, 3)


def _vertex(before: torch.Tensor, centre: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Offset in [−0.5, 0.5] of the vertex of the parabola through (−1, before), (0, centre),
    (1, after); 0 where it is not concave."""
    curvature = before - 2.0 * centre + after  # (B, K), < 0 at a concave maximum
    offset = (before - after) / (2.0 * curvature.clamp(max=-1e-9))
    return torch.where(curvature < 0, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))


def resize_crop(network: Refiner, crop_height: int, crop_width: int) -> Refiner:
    """``network`` taking ``crop_height × crop_width`` crops, for training on.

    The refiner is fully convolutional, so every weight fits any crop size; only the config,
    and with it the accepted input and the output layout, changes. The result is on the CPU in
    training mode.

    Raises:
        ValueError: a crop size that is not a positive multiple of 32.
    """
    resized = Refiner(replace(network.config, crop_height=crop_height, crop_width=crop_width))
    resized.load_state_dict(network.state_dict())
    return resized.cpu().train()


def grow_instances(network: Refiner, instances: int) -> Refiner:
    """``network`` with ``instances`` instance selectors (more than its own), for training on.

    Every weight ``network`` has is kept; the λ embeddings it has keep their rows. A network of
    one instance gains the embedding and the modulation blocks of ``config.modulated_blocks``,
    which start as the identity (γ = β = 0), so λ = 0 (and at first every λ) predicts as
    ``network`` does. The result is on the CPU in training mode.

    Raises:
        ValueError: ``instances`` is not more than ``network``'s.
    """
    old = network.config.instances
    if instances <= old:
        raise ValueError(f"the refiner has {old} instance selector(s), cannot grow to {instances}")
    grown = Refiner(replace(network.config, instances=instances))
    state = dict(network.state_dict())
    embedding = state.pop("instance_embedding.weight", None)  # (old, embedding) when old > 1
    missing, unexpected = grown.load_state_dict(state, strict=False)
    new = ("instance_embedding.", "modulations.")
    if unexpected or any(not name.startswith(new) for name in missing):
        raise ValueError(f"cannot grow the refiner: {unexpected or missing}")
    if embedding is not None:
        with torch.no_grad():
            grown.instance_embedding.weight[:old] = embedding
    return grown.cpu().train()
