"""The IMHN network (Simple Pose), in the layout of the published checkpoint.

``build_network(config)`` returns an ``IMHN`` whose forward maps a normalised float
``(N, 3, H, W)`` batch (H, W multiples of 64) to a list over stacks of lists over 5 scales of
``(N, 50, H / (4 · 2^j), W / (4 · 2^j))`` heatmaps.
"""

from posecli.model.imhn import IMHN, build_network, grow_stacks, scale_channels

__all__ = ["IMHN", "build_network", "grow_stacks", "scale_channels"]
