"""The Pose Residual Network (issue 20): MultiPoseNet's keypoint-to-person assignment.

Kocabas et al., *MultiPoseNet: Fast Multi-Person Pose Estimation using Pose Residual Network*
(ECCV 2018): the K keypoint heatmaps inside a person box, resized to a fixed grid, go through a
residual multi-layer perceptron; per keypoint type, the most probable cell of its output is the
box's own person's keypoint, the peaks of the other people in the box being left out.

* **Input**: ``(B, 17, H, W)`` float heatmaps in [0, 1], COCO-17 order, ``H = crop_height``,
  ``W = crop_width``; cell ``(i, j)`` is crop point ``x = j, y = i`` (cell centres).
* **Network**: flatten → ``Linear(17·H·W, hidden)`` → ReLU → dropout → ``Linear(hidden, 17·H·W)``
  → plus the input (the residual) → reshaped to ``(B, 17, H, W)``.
* **Output**: those ``(B, 17, H, W)`` logits; a softmax over the ``H·W`` cells of each channel
  gives where the box's person has that keypoint (``cell_probabilities``). The published network
  applies the softmax inside; here it is left to the loss (log-softmax) and to inference.

The published shape is 56×36 with 1,024 hidden units (~70 M weights); ``PRN_PRESETS`` sizes
ours for CPUs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from posecli.config import PRNConfig
from posecli.spec import NUM_COCO_KEYPOINTS

#: What a PRN checkpoint says it is (``"kind"``).
PRN_KIND = "prn"


def check_prn_config(config: PRNConfig) -> None:
    """Raise ValueError when ``config`` cannot describe a PRN."""
    for name in ("crop_height", "crop_width", "hidden"):
        if getattr(config, name) < 1:
            raise ValueError(f"PRNConfig.{name} must be at least 1, got {getattr(config, name)}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"PRNConfig.dropout must be in [0, 1), got {config.dropout}")


class PoseResidualNetwork(nn.Module):
    """The PRN; see the module docstring for its input and output."""

    def __init__(self, config: PRNConfig | None = None) -> None:
        super().__init__()
        config = PRNConfig() if config is None else config
        check_prn_config(config)
        self.config = config
        cells = NUM_COCO_KEYPOINTS * config.crop_height * config.crop_width
        self.hidden = nn.Linear(cells, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden, cells)

    @property
    def output_layout(self) -> PRNLayout:
        """What the network outputs (:func:`prn_output_layout`)."""
        return prn_output_layout(self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 17, H, W)`` of the heatmaps ``x`` ``(B, 17, H, W)`` cropped to boxes."""
        self._check_input(x)
        flat = x.flatten(1)  # (B, 17·H·W)
        hidden = self.dropout(torch.relu(self.hidden(flat)))  # (B, hidden)
        return (self.out(hidden) + flat).reshape(x.shape)  # (B, 17, H, W)

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (NUM_COCO_KEYPOINTS, self.config.crop_height, self.config.crop_width)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"PRN expects (B, {', '.join(map(str, expected))}) heatmaps, got {tuple(x.shape)}"
            )


def cell_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Per channel, the softmax over the cells of ``(B, K, H, W)`` logits: ``(B, K, H, W)``."""
    return torch.softmax(logits.flatten(2).float(), dim=2).reshape(logits.shape)


@dataclass(frozen=True)
class PRNLayout:
    """The output contract of a PRN (stored in its checkpoints as ``to_dict()``): logits
    ``(B, 17, crop_height, crop_width)``, a softmax over each channel's cells."""

    kind: ClassVar[str] = PRN_KIND
    crop_height: int
    crop_width: int
    keypoints: str = "coco-17"
    output: str = "logits, softmax over each channel's cells"

    def to_dict(self) -> dict[str, Any]:
        """The layout as a checkpoint states it (``"kind"`` first)."""
        return {"kind": self.kind, **asdict(self)}


def prn_output_layout(config: PRNConfig) -> PRNLayout:
    """The output contract of a PRN of shape ``config``."""
    return PRNLayout(config.crop_height, config.crop_width)


def build_prn(config: PRNConfig) -> PoseResidualNetwork:
    """A freshly initialised PRN of shape ``config`` (training mode, on the CPU)."""
    return PoseResidualNetwork(config)
