"""Building blocks of the IMHN (Identity Mapping Hourglass Network).

Attribute names (``convBlock``, ``skipConv``, ``conv``, ``bn``, ``fc``) reproduce the layout of
the published Simple Pose checkpoint, so that its state dict loads into these modules strictly.
Every block takes and returns float tensors laid out ``(N, C, H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Negative slope of every LeakyReLU of the network (published: 0.01).
LEAKY_SLOPE = 0.01


def init_conv_bn(network: nn.Module) -> None:
    """The initialisation every posecli network starts from: convolutions Kaiming-normal for
    LeakyReLU(0.01) with zero bias, BatchNorms weight 1 and bias 0."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, a=0.01, nonlinearity="leaky_relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def leaky_relu() -> nn.LeakyReLU:
    """The activation used throughout the network."""
    return nn.LeakyReLU(negative_slope=LEAKY_SLOPE, inplace=True)


class Residual(nn.Module):
    """Bottleneck residual block: 1×1 → 3×3 → 1×1 at half the output width, plus a skip.

    The skip is the identity when ``ins == outs`` and a 1×1 convolution with BatchNorm
    otherwise. The sum goes through a LeakyReLU. Spatial size is preserved.
    """

    def __init__(self, ins: int, outs: int) -> None:
        super().__init__()
        mid = outs // 2
        self.convBlock = nn.Sequential(
            nn.Conv2d(ins, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            leaky_relu(),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            leaky_relu(),
            nn.Conv2d(mid, outs, 1, bias=False),
            nn.BatchNorm2d(outs),
        )
        self.skipConv = (
            nn.Sequential(nn.Conv2d(ins, outs, 1, bias=False), nn.BatchNorm2d(outs))
            if ins != outs
            else None
        )

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BatchNorm closing the residual branch (zero-initialised for training)."""
        return self.convBlock[7]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.skipConv is None else self.skipConv(x)  # (N, outs, H, W)
        out = self.convBlock(x) + skip  # (N, outs, H, W)
        return F.leaky_relu(out, LEAKY_SLOPE)


class Conv(nn.Module):
    """Convolution with "same" padding, optionally followed by BatchNorm and a LeakyReLU.

    The convolution has a bias only when there is no BatchNorm after it.
    """

    def __init__(
        self,
        inp: int,
        out: int,
        kernel_size: int = 3,
        stride: int = 1,
        bn: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2
        self.conv = nn.Conv2d(inp, out, kernel_size, stride, padding=padding, bias=not bn)
        self.bn = nn.BatchNorm2d(out) if bn else None
        self.relu = leaky_relu() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (N, out, H / stride, W / stride)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class DilatedConv(nn.Module):
    """3×3 dilated convolution (stride 1, size preserved) + BatchNorm + LeakyReLU."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(channels)
        self.relu = leaky_relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))  # (N, C, H, W)


class SELayer(nn.Module):
    """Squeeze-and-excitation channel attention: ``x * sigmoid(fc(mean over H, W of x))``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        squeezed = max(channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(channels, squeezed),
            leaky_relu(),
            nn.Linear(squeezed, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))  # (N, C)
        return x * weights[:, :, None, None]  # (N, C, H, W)


class Merge(nn.Module):
    """1×1 convolution + BatchNorm that maps a stack's output into the next stack's width."""

    def __init__(self, x_dim: int, y_dim: int) -> None:
        super().__init__()
        self.conv = Conv(x_dim, y_dim, 1, bn=True, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (N, y_dim, H, W)
