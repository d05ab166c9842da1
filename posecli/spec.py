"""The skeleton: keypoints, body parts, output channels, flip orders and the COCO-17 mapping.

This module is the single source of truth that the network, the training targets, the decoder,
drawing and every JSON encoder read. It imports only the standard library and NumPy.

Two keypoint orders exist:

* the *network order* (18 keypoints, with a synthesised neck), used by heatmaps and the decoder;
* the *COCO-17 order*, used by every output a user sees (JSON, drawing, evaluation).
"""

from __future__ import annotations

import numpy as np

#: The 18 keypoints in network order (the published Simple Pose order).
KEYPOINTS: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
NUM_KEYPOINTS = len(KEYPOINTS)  # 18
NOSE, NECK = 0, 1
RIGHT_SHOULDER, LEFT_SHOULDER = 2, 5

#: Body parts as (from, to) keypoint indices in network order. The first 21 form the tree
#: of the skeleton; the last 9 are the redundant parts that make grouping robust to a
#: missing keypoint.
BODY_PARTS: tuple[tuple[int, int], ...] = (
    (1, 0), (1, 14), (1, 15), (1, 16), (1, 17), (0, 14), (0, 15), (14, 16), (15, 17),
    (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13),
    # redundant body parts
    (0, 2), (0, 5), (2, 8), (8, 12), (5, 11), (11, 9), (16, 2), (17, 5), (8, 11),
)  # fmt: skip
NUM_BODY_PARTS = len(BODY_PARTS)  # 30
NUM_TREE_PARTS = 21
REDUNDANT_PARTS: tuple[int, ...] = tuple(range(NUM_TREE_PARTS, NUM_BODY_PARTS))

#: Output channels of the network: 0–29 body parts, 30–47 keypoints, 48 person mask,
#: 49 the maximum over the keypoint maps.
PART_CHANNELS = slice(0, NUM_BODY_PARTS)
KEYPOINT_CHANNELS = slice(NUM_BODY_PARTS, NUM_BODY_PARTS + NUM_KEYPOINTS)
MASK_CHANNEL = NUM_BODY_PARTS + NUM_KEYPOINTS  # 48
MAX_KEYPOINT_CHANNEL = MASK_CHANNEL + 1  # 49
NUM_CHANNELS = MAX_KEYPOINT_CHANNEL + 1  # 50

#: Network stride of the finest output scale; the five scales have strides 4·2^j.
STRIDE = 4
NUM_SCALES = 5


def _keypoint_flip_order() -> tuple[int, ...]:
    """Index of each keypoint's mirror image (left ↔ right)."""
    order = []
    for name in KEYPOINTS:
        if name.startswith("left_"):
            name = "right_" + name[len("left_") :]
        elif name.startswith("right_"):
            name = "left_" + name[len("right_") :]
        order.append(KEYPOINTS.index(name))
    return tuple(order)


#: ``KEYPOINT_FLIP_ORDER[k]`` is the keypoint that ``k`` becomes in a mirrored image.
KEYPOINT_FLIP_ORDER: tuple[int, ...] = _keypoint_flip_order()


def _part_flip_order() -> tuple[int, ...]:
    """Index of each body part's mirror image. Part maps are undirected, so (a, b) ≡ (b, a)."""
    undirected = [frozenset(part) for part in BODY_PARTS]
    order = []
    for a, b in BODY_PARTS:
        mirrored = frozenset((KEYPOINT_FLIP_ORDER[a], KEYPOINT_FLIP_ORDER[b]))
        order.append(undirected.index(mirrored))
    return tuple(order)


#: ``PART_FLIP_ORDER[p]`` is the body part that ``p`` becomes in a mirrored image.
PART_FLIP_ORDER: tuple[int, ...] = _part_flip_order()

#: Channel permutation that mirrors a 50-channel heatmap stack (mask and max map stay).
CHANNEL_FLIP_ORDER: tuple[int, ...] = (
    PART_FLIP_ORDER
    + tuple(NUM_BODY_PARTS + k for k in KEYPOINT_FLIP_ORDER)
    + (MASK_CHANNEL, MAX_KEYPOINT_CHANNEL)
)

#: The 17 COCO keypoints in COCO order.
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
NUM_COCO_KEYPOINTS = len(COCO_KEYPOINTS)  # 17

#: ``COCO_TO_NETWORK[c]`` is the network-order index of COCO keypoint ``c``.
COCO_TO_NETWORK: tuple[int, ...] = tuple(KEYPOINTS.index(name) for name in COCO_KEYPOINTS)

#: ``COCO_FLIP_ORDER[c]`` is the COCO keypoint that ``c`` becomes in a mirrored image.
COCO_FLIP_ORDER: tuple[int, ...] = tuple(
    COCO_KEYPOINTS.index(KEYPOINTS[KEYPOINT_FLIP_ORDER[COCO_TO_NETWORK[c]]])
    for c in range(len(COCO_KEYPOINTS))
)

#: COCO skeleton (0-based COCO indices), used for drawing.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip

#: Per-keypoint OKS falloff constants of the COCO benchmark, in COCO order.
COCO_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
     0.107, 0.107, 0.087, 0.087, 0.089, 0.089],
    dtype=np.float64,
)  # fmt: skip

#: Drawing colours, RGB, by side: left, right and centre.
LEFT_COLOUR_RGB = (0, 200, 255)
RIGHT_COLOUR_RGB = (255, 140, 0)
CENTRE_COLOUR_RGB = (80, 255, 80)


def coco_side(coco_index: int) -> str:
    """``"left"``, ``"right"`` or ``"centre"`` for a COCO keypoint index."""
    name = COCO_KEYPOINTS[coco_index]
    if name.startswith("left_"):
        return "left"
    if name.startswith("right_"):
        return "right"
    return "centre"


def coco_to_network(keypoints: np.ndarray) -> np.ndarray:
    """Convert keypoints from COCO-17 order to the 18-keypoint network order.

    Args:
        keypoints: ``(..., 17, 3)`` array of ``[x, y, v]``; a keypoint is present when ``v > 0``.

    Returns:
        ``(..., 18, 3)`` float64 array in network order. The neck is the mean of the two
        shoulders, present only when both are, with the smaller of their two ``v``.
        Missing keypoints are all zeros.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    out = np.zeros(keypoints.shape[:-2] + (NUM_KEYPOINTS, 3), dtype=np.float64)
    out[..., COCO_TO_NETWORK, :] = keypoints
    right, left = out[..., RIGHT_SHOULDER, :], out[..., LEFT_SHOULDER, :]
    both = (right[..., 2] > 0) & (left[..., 2] > 0)
    neck = np.concatenate(
        [(right[..., :2] + left[..., :2]) / 2, np.minimum(right[..., 2:], left[..., 2:])], axis=-1
    )
    out[..., NECK, :] = np.where(both[..., None], neck, 0.0)
    return out


def network_to_coco(keypoints: np.ndarray) -> np.ndarray:
    """Select the COCO-17 keypoints, in COCO order, from a ``(..., 18, C)`` network-order array."""
    return np.asarray(keypoints)[..., COCO_TO_NETWORK, :]
