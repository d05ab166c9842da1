"""The Identity Mapping Hourglass Network (IMHN) of Simple Pose, configurable by ModelConfig.

With the default ``ModelConfig`` (the ``imhn-official`` preset) the module tree, parameter
names and shapes equal the published checkpoint's, without its ``posenet.`` prefix.

Input: float ``(N, 3, H, W)``, H and W multiples of ``2 ** (depth + 2)`` (64 for depth 4),
already normalised as the checkpoint's Preprocessing says. Output: a list over stacks of lists
over ``depth + 1`` scales; scale ``j`` is ``(N, channels, H / (4 · 2^j), W / (4 · 2^j))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from posecli.config import ModelConfig
from posecli.model.encoder import ENCODERS, FEATURE_CHANNELS, EfficientNetLite0
from posecli.model.layers import (
    Conv,
    DilatedConv,
    Merge,
    Residual,
    SELayer,
    init_conv_bn,
    leaky_relu,
)
from posecli.spec import STRIDE

#: Channels of the stem's first 7×7/2 convolution (published: 64, whatever the width).
STEM_CHANNELS = 64

#: Stride of the stem, and so of the finest output scale.
STEM_STRIDE = 4

#: Std of the normal init of the 1×1 output convolutions, so that heatmaps start near 0.
OUTPUT_INIT_STD = 0.001

#: Std of the normal init of the squeeze-and-excitation Linear layers (published: 0.01).
LINEAR_INIT_STD = 0.01


def scale_channels(config: ModelConfig) -> list[int]:
    """Channels of the hourglass features at each scale: ``width + increase · j``."""
    return [config.width + config.increase * j for j in range(config.depth + 1)]


class Stem(nn.Module):
    """Stride-4 stem: 7×7/2 conv, two residual blocks around a 2×2 max pool, and a chain of
    dilated convolutions whose output is concatenated with its input.

    ``(N, 3, H, W)`` → ``(N, width, H/4, W/4)``; half the channels are the residual features,
    half the dilated ones.
    """

    def __init__(self, width: int, dilations: Sequence[int]) -> None:
        super().__init__()
        half = width // 2
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = leaky_relu()
        self.res1 = Residual(STEM_CHANNELS, half)
        self.res2 = Residual(half, half)
        self.dilation = nn.Sequential(*(DilatedConv(half, d) for d in dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 64, H/2, W/2)
        x = self.res1(x)  # (N, width/2, H/2, W/2)
        x = self.res2(F.max_pool2d(x, 2))  # (N, width/2, H/4, W/4)
        dilated = self.dilation(x)  # (N, width/2, H/4, W/4)
        return torch.cat([x, dilated], dim=1)  # (N, width, H/4, W/4)


class Hourglass(nn.Module):
    """Hourglass of order ``depth`` whose width grows by ``increase`` at every level down.

    ``hg[d]`` holds the blocks of level ``d`` (``c_d = width + increase · d`` channels):
    ``[0]`` the skip branch, ``[1]`` the way down, ``[2]`` the way up, ``[3]`` the 3×3 conv
    after upsampling, and at the deepest level ``[4]`` the bottom block.

    ``(N, width, h, w)`` → ``depth + 1`` maps, finest first: ``(N, c_j, h / 2^j, w / 2^j)``.
    """

    def __init__(self, depth: int, width: int, increase: int) -> None:
        super().__init__()
        channels = [width + increase * d for d in range(depth + 1)]
        levels = []
        for d in range(depth):
            here, below = channels[d], channels[d + 1]
            blocks = [
                Residual(here, here),
                Residual(here, below),
                Residual(below, here),
                Conv(here, here, 3, bn=True, relu=True),
            ]
            if d == depth - 1:
                blocks.append(Residual(below, below))
            levels.append(nn.ModuleList(blocks))
        self.hg = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor, laterals: Sequence[torch.Tensor] = ()) -> list[torch.Tensor]:
        """``laterals[j]`` (``j ≥ 1``), shaped like the way down at level ``j``
        ``(N, c_j, h / 2^j, w / 2^j)``, is added to it (an encoder's features)."""
        coarser: list[torch.Tensor] = [x] * len(self.hg)  # filled in level by level
        finest = self._level(0, x, coarser, laterals)  # (N, c_0, h, w)
        return [finest, *coarser]

    def _level(
        self,
        d: int,
        x: torch.Tensor,
        coarser: list[torch.Tensor],
        laterals: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Run level ``d`` on ``x`` (N, c_d, h', w'); store its bottom output in ``coarser[d]``."""
        blocks = self.hg[d]
        up = blocks[0](x)  # (N, c_d, h', w')
        low = blocks[1](F.max_pool2d(x, 2))  # (N, c_{d+1}, h'/2, w'/2)
        if d + 1 < len(laterals):
            low = low + laterals[d + 1]
        deepest = d == len(self.hg) - 1
        low = blocks[4](low) if deepest else self._level(d + 1, low, coarser, laterals)
        coarser[d] = low
        back = blocks[2](low)  # (N, c_d, h'/2, w'/2)
        back = F.interpolate(back, scale_factor=2.0, mode="nearest")  # (N, c_d, h', w')
        return up + blocks[3](back)  # (N, c_d, h', w')


class Features(nn.Module):
    """Per-scale regression heads: two 3×3 convs to ``head_width`` channels and an SE layer.

    Maps ``[(N, c_j, h_j, w_j)]`` → ``[(N, head_width, h_j, w_j)]``.
    """

    def __init__(self, in_channels: Sequence[int], head_width: int, se_reduction: int) -> None:
        super().__init__()
        self.before_regress = nn.ModuleList(
            nn.Sequential(
                Conv(channels, head_width, 3, bn=True),
                Conv(head_width, head_width, 3, bn=True),
                SELayer(head_width, se_reduction),
            )
            for channels in in_channels
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [head(f) for head, f in zip(self.before_regress, features, strict=True)]


def _check_config(config: ModelConfig) -> None:
    """Raise ValueError when ``config`` cannot describe a network."""
    positive = ("stacks", "width", "channels", "depth", "head_width", "se_reduction")
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"ModelConfig.{name} must be at least 1, got {getattr(config, name)}")
    if config.increase < 0:
        raise ValueError(f"ModelConfig.increase must be at least 0, got {config.increase}")
    if config.width % 4:
        raise ValueError(f"ModelConfig.width must be a multiple of 4, got {config.width}")
    if any(d < 1 for d in config.dilations):
        raise ValueError(f"ModelConfig.dilations must be positive, got {config.dilations}")
    if config.encoder not in ENCODERS:
        raise ValueError(f"ModelConfig.encoder must be one of {ENCODERS}, got {config.encoder!r}")


#: ``"kind"`` of a bottom-up IMHN (its checkpoints and its output layout).
IMHN_KIND = "imhn"


@dataclass(frozen=True)
class IMHNLayout:
    """The output contract of an IMHN (stored in its checkpoints as ``to_dict()``).

    The forward pass returns ``outputs[stack][scale]``, ``(N, channels, H / (stride · 2^scale),
    W / (stride · 2^scale))``; the decoder reads ``outputs[decode_stack][decode_scale]``, whose
    channels are in ``posecli.spec`` order (body parts, keypoints, person mask, keypoint maximum).
    """

    kind: ClassVar[str] = IMHN_KIND
    channels: int
    stride: int
    scales: int
    decode_stack: int = -1
    decode_scale: int = 0
    channel_order: str = "posecli-50"

    def to_dict(self) -> dict[str, Any]:
        """The layout as a checkpoint states it (``"kind"`` first)."""
        return {"kind": self.kind, **asdict(self)}


def output_layout(config: ModelConfig) -> IMHNLayout:
    """The output contract of an IMHN of shape ``config``."""
    return IMHNLayout(channels=config.channels, stride=STRIDE, scales=len(scale_channels(config)))


class DecoderOutput(nn.Module):
    """An IMHN reduced to the output ``layout`` names for the decoder (what both backends run):
    ``(B, 3, H, W)`` → ``(B, 50, H/4, W/4)``."""

    def __init__(self, network: IMHN, layout: IMHNLayout) -> None:
        super().__init__()
        self.network = network
        self.stack, self.scale = layout.decode_stack, layout.decode_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)[self.stack][self.scale]


class IMHN(nn.Module):
    """Identity Mapping Hourglass Network: stem, ``stacks`` hourglasses with per-scale heads,
    and merges that carry each stack's features and predictions into the next.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = ModelConfig() if config is None else config
        _check_config(config)
        self.config = config
        channels = scale_channels(config)
        stacks, head, out = config.stacks, config.head_width, config.channels
        self.pre = Stem(config.width, config.dilations)
        if config.encoder:
            # Pretrainable encoder; 1×1 laterals bring its strides 4…32 to the hourglass widths.
            self.encoder = EfficientNetLite0()
            self.laterals = nn.ModuleList(
                Conv(ins, outs, 1, bn=True, relu=False)
                for ins, outs in zip(FEATURE_CHANNELS, channels, strict=False)
            )
        self.hourglass = nn.ModuleList(
            Hourglass(config.depth, config.width, config.increase) for _ in range(stacks)
        )
        self.features = nn.ModuleList(
            Features(channels, head, config.se_reduction) for _ in range(stacks)
        )
        self.outs = nn.ModuleList(
            nn.ModuleList(Conv(head, out, 1, bn=False, relu=False) for _ in channels)
            for _ in range(stacks)
        )
        self.merge_features = nn.ModuleList(
            nn.ModuleList(Merge(head, c) for c in channels) for _ in range(stacks - 1)
        )
        self.merge_preds = nn.ModuleList(
            nn.ModuleList(Merge(out, c) for c in channels) for _ in range(stacks - 1)
        )
        self.reset_parameters()

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (the coarsest stride)."""
        return STEM_STRIDE * 2**self.config.depth

    @property
    def output_layout(self) -> IMHNLayout:
        """What the network outputs and which output the decoder reads (see
        :class:`IMHNLayout`)."""
        return output_layout(self.config)

    def reset_parameters(self) -> None:
        """Initialise for training from scratch.

        Convolutions followed by BatchNorm: Kaiming-normal for LeakyReLU(0.01). BatchNorm:
        weight 1, bias 0, except the BatchNorm closing each residual branch and the merges'
        BatchNorms, which start at weight 0 so that every residual block starts as its skip
        and every stack starts from the previous stack's input. (The published code used
        N(0, 0.001) for all convolutions, noting that Kaiming init made its gradients explode;
        starting the residual branches at zero is our remedy.) Output 1×1 convolutions:
        N(0, 0.001), bias 0, so heatmaps start near 0. SE Linear layers: N(0, 0.01), bias 0
        (as published).
        """
        init_conv_bn(self)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, LINEAR_INIT_STD)
                nn.init.zeros_(module.bias)
            elif isinstance(module, Residual):
                nn.init.zeros_(module.last_bn.weight)
            elif isinstance(module, Merge):
                nn.init.zeros_(module.conv.bn.weight)
        for lateral in getattr(self, "laterals", ()):
            nn.init.zeros_(lateral.bn.weight)  # the encoder starts as a no-op
        for stack_outs in self.outs:
            for head in stack_outs:
                nn.init.normal_(head.conv.weight, 0.0, OUTPUT_INIT_STD)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Heatmaps of every stack and scale; see the module docstring for shapes."""
        self._check_input(x)
        laterals = self._laterals(x)  # [(N, c_j, H/4·2^-j, W/4·2^-j)], j < 4, or []
        x = self.pre(x)  # (N, width, H/4, W/4)
        if laterals:
            x = x + laterals[0]
        carried: list[torch.Tensor] = []
        predictions: list[list[torch.Tensor]] = []
        for i in range(self.config.stacks):
            # the encoder feeds the first hourglass only (its laterals[0] went into x above)
            features = self.hourglass[i](x, laterals if i == 0 else ())
            if carried:
                features = [f + c for f, c in zip(features, carried, strict=True)]
            heads = self.features[i](features)  # [(N, head_width, H/4·2^-j, W/4·2^-j)]
            preds = [out(h) for out, h in zip(self.outs[i], heads, strict=True)]
            predictions.append(preds)  # [(N, channels, H/4·2^-j, W/4·2^-j)]
            if i < self.config.stacks - 1:
                carried = [
                    merge_pred(p) + merge_feature(h)  # (N, c_j, H/4·2^-j, W/4·2^-j)
                    for merge_pred, merge_feature, p, h in zip(
                        self.merge_preds[i], self.merge_features[i], preds, heads, strict=True
                    )
                ]
                x = x + carried[0]  # (N, width, H/4, W/4)
        return predictions

    def _laterals(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features brought to the hourglass widths (none without an encoder)."""
        if not self.config.encoder:
            return []
        return [lateral(f) for lateral, f in zip(self.laterals, self.encoder(x), strict=False)]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"IMHN expects an (N, 3, H, W) tensor, got {tuple(x.shape)}")
        multiple = self.input_multiple
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(
                f"IMHN input height and width must be multiples of {multiple}, "
                f"got {x.shape[2]}×{x.shape[3]}"
            )


def build_network(config: ModelConfig) -> IMHN:
    """A freshly initialised IMHN of shape ``config`` (training mode, on the CPU)."""
    return IMHN(config)


#: Per-stack module lists that a grown network copies from the last trained stack.
STACK_MODULES = ("hourglass", "features", "outs")


def grow_stacks(network: IMHN, stacks: int) -> IMHN:
    """``network`` with ``stacks`` hourglass stacks instead of its own, for further training.

    Everything ``network`` has keeps its weights. Each new stack starts as a copy of
    ``network``'s last stack; the merges into a new stack are freshly initialised, and since
    their BatchNorms start at weight 0, each new stack first sees the same input as the last
    stack did (without the encoder features that only the first stack receives). The result is
    on the CPU in training mode, in the contiguous layout.
    """
    old = network.config.stacks
    if stacks <= old:
        raise ValueError(f"a network of {old} stacks can only grow to more, not to {stacks}")
    grown = build_network(replace(network.config, stacks=stacks))
    state = grown.state_dict()
    trained = {key: tensor.detach().cpu() for key, tensor in network.state_dict().items()}
    state.update(trained)
    for name in STACK_MODULES:
        last = f"{name}.{old - 1}."
        for key, tensor in trained.items():
            if key.startswith(last):
                for stack in range(old, stacks):
                    state[f"{name}.{stack}." + key.removeprefix(last)] = tensor
    grown.load_state_dict({key: tensor.contiguous() for key, tensor in state.items()})
    return grown
