"""The networks: the IMHN (Simple Pose, bottom-up) and the top-down refiner (issue 16).

``build_network(config)`` returns an ``IMHN`` whose forward maps a normalised float
``(N, 3, H, W)`` batch (H, W multiples of 64) to a list over stacks of lists over 5 scales of
``(N, 50, H / (4 · 2^j), W / (4 · 2^j))`` heatmaps.

``build_refiner(config)`` returns a ``Refiner`` whose forward maps ``(B, 3, H, W)`` person crops
and ``(B,)`` instance selectors to ``(B, 17, H/4, W/4)`` COCO keypoint heatmaps
(``posecli.model.refiner``).

``build_prn(config)`` returns a ``PoseResidualNetwork`` whose forward maps ``(B, 17, H, W)``
keypoint heatmaps cropped to person boxes to ``(B, 17, H, W)`` logits of the box's own person's
keypoints (``posecli.model.prn``, issue 20).
"""

from typing import Any

from posecli.config import ModelConfig, PRNConfig, RefinerConfig
from posecli.model.imhn import IMHN, IMHN_KIND, build_network, grow_stacks, scale_channels
from posecli.model.imhn import output_layout as imhn_output_layout
from posecli.model.prn import (
    PRN_KIND,
    PoseResidualNetwork,
    build_prn,
    cell_probabilities,
    prn_output_layout,
)
from posecli.model.refiner import (
    REFINER_KIND,
    Refiner,
    build_refiner,
    grow_instances,
    heatmap_keypoints,
    refiner_output_layout,
    resize_crop,
)


def output_layout(config: ModelConfig | RefinerConfig | PRNConfig) -> dict[str, Any]:
    """The output contract of the network ``config`` describes (its checkpoints store it; the
    Estimator and the refinement read it): kind, channels or keypoints, stride, and for an
    IMHN which of its outputs the decoder reads."""
    if isinstance(config, RefinerConfig):
        return refiner_output_layout(config)
    if isinstance(config, PRNConfig):
        return prn_output_layout(config)
    return imhn_output_layout(config)


__all__ = [
    "IMHN",
    "IMHN_KIND",
    "PRN_KIND",
    "REFINER_KIND",
    "PoseResidualNetwork",
    "Refiner",
    "build_network",
    "build_prn",
    "build_refiner",
    "grow_instances",
    "cell_probabilities",
    "grow_stacks",
    "heatmap_keypoints",
    "output_layout",
    "resize_crop",
    "scale_channels",
]
