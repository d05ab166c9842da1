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

What sets the kinds apart is one table, ``posecli.model.kinds.KINDS``.
"""

from posecli.model.imhn import (
    IMHN,
    IMHN_KIND,
    DecoderOutput,
    IMHNLayout,
    build_network,
    grow_stacks,
    scale_channels,
)
from posecli.model.kinds import (
    BOTTOM_UP,
    KINDS,
    PRN,
    REFINER,
    NetworkConfig,
    NetworkKind,
    describe_config,
    kind_of,
    output_layout,
)
from posecli.model.prn import (
    PRN_KIND,
    PoseResidualNetwork,
    PRNLayout,
    build_prn,
    cell_probabilities,
)
from posecli.model.refiner import (
    REFINER_KIND,
    Refiner,
    RefinerLayout,
    build_refiner,
    grow_instances,
    heatmap_keypoints,
    resize_crop,
)

__all__ = [
    "BOTTOM_UP",
    "IMHN",
    "IMHN_KIND",
    "KINDS",
    "PRN",
    "PRN_KIND",
    "REFINER",
    "REFINER_KIND",
    "DecoderOutput",
    "IMHNLayout",
    "NetworkConfig",
    "NetworkKind",
    "PRNLayout",
    "PoseResidualNetwork",
    "Refiner",
    "RefinerLayout",
    "build_network",
    "build_prn",
    "build_refiner",
    "cell_probabilities",
    "describe_config",
    "grow_instances",
    "grow_stacks",
    "heatmap_keypoints",
    "kind_of",
    "output_layout",
    "resize_crop",
    "scale_channels",
]
