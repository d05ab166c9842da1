"""The networks: the IMHN (Simple Pose, bottom-up) and the top-down refiner (issue 16).

``build_network(config)`` returns an ``IMHN`` whose forward maps a normalised float
``(N, 3, H, W)`` batch (H, W multiples of 64) to a list over stacks of lists over 5 scales of
``(N, 50, H / (4 · 2^j), W / (4 · 2^j))`` heatmaps.

``build_refiner(config)`` returns a ``Refiner`` whose forward maps ``(B, 3, H, W)`` person crops
and ``(B,)`` instance selectors to ``(B, 17, H/4, W/4)`` COCO keypoint heatmaps
(``posecli.model.refiner``).
"""

from posecli.model.imhn import IMHN, build_network, grow_stacks, scale_channels
from posecli.model.refiner import (
    REFINER_KIND,
    Refiner,
    build_refiner,
    heatmap_keypoints,
    output_layout,
)

__all__ = [
    "IMHN",
    "REFINER_KIND",
    "Refiner",
    "build_network",
    "build_refiner",
    "grow_stacks",
    "heatmap_keypoints",
    "output_layout",
    "scale_channels",
]
