"""Skeletons on images: the COCO skeleton with left / right / centre colours, track ids, FPS.

Images are RGB uint8 ``(H, W, 3)`` and are drawn on in place (the same array is returned).
Keypoints are image pixels (x right, y down, integer values at pixel centres) in COCO-17 order.
Lines are antialiased and drawn with sub-pixel precision; their width grows with the image.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

from posecli.pose import Pose
from posecli.spec import (
    CENTRE_COLOUR_RGB,
    COCO_SKELETON,
    LEFT_COLOUR_RGB,
    RIGHT_COLOUR_RGB,
    coco_side,
)

#: Fractional bits of the fixed-point coordinates passed to OpenCV (1/16 pixel).
_SHIFT = 4
_SIDE_COLOURS = {"left": LEFT_COLOUR_RGB, "right": RIGHT_COLOUR_RGB, "centre": CENTRE_COLOUR_RGB}
_FONT = cv2.FONT_HERSHEY_SIMPLEX

#: Keypoints scored above this are drawn (``--draw-threshold``), and counted as found by
#: ``posecli report``.
DEFAULT_DRAW_THRESHOLD = 0.1


def line_thickness(height: int, width: int) -> int:
    """Limb width in pixels for an image of this size (1 px up to 360 px, 3 px at 720p…)."""
    return max(1, round(min(height, width) / 240))


def limb_colour(a: int, b: int) -> tuple[int, int, int]:
    """RGB colour of the limb between COCO keypoints ``a`` and ``b``: its side, else centre."""
    sides = {coco_side(a), coco_side(b)} - {"centre"}
    return _SIDE_COLOURS[sides.pop()] if len(sides) == 1 else CENTRE_COLOUR_RGB


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per track id (hues spaced by the golden ratio)."""
    hue = (track_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return (round(red * 255), round(green * 255), round(blue * 255))


def _fixed(x: float, y: float) -> tuple[int, int]:
    return (round(x * (1 << _SHIFT)), round(y * (1 << _SHIFT)))


def draw_poses(
    image: np.ndarray,
    poses: Sequence[Pose],
    *,
    min_confidence: float = DEFAULT_DRAW_THRESHOLD,
    show_ids: bool = True,
) -> np.ndarray:
    """Draw each pose's skeleton, keypoints and (when tracked and ``show_ids``) its id.

    Only keypoints with confidence above ``min_confidence`` are drawn, and limbs only
    between two of those.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, drawn on in place.
        poses: people in image pixels, COCO-17 order.

    Returns:
        ``image``.
    """
    height, width = image.shape[:2]
    thickness = line_thickness(height, width)
    for pose in poses:
        shown = pose.keypoints[:, 2] > min_confidence
        for a, b in COCO_SKELETON:
            if shown[a] and shown[b]:
                start = _fixed(*pose.keypoints[a, :2])
                end = _fixed(*pose.keypoints[b, :2])
                colour = limb_colour(a, b)
                cv2.line(image, start, end, colour, thickness, cv2.LINE_AA, _SHIFT)
        for k in np.flatnonzero(shown):
            centre = _fixed(*pose.keypoints[k, :2])
            radius = (thickness + 1) << _SHIFT
            colour = _SIDE_COLOURS[coco_side(int(k))]
            cv2.circle(image, centre, radius, colour, -1, cv2.LINE_AA, _SHIFT)
        if show_ids and pose.track_id is not None and shown.any():
            x0, y0 = pose.keypoints[shown, :2].min(axis=0)
            _label(image, f"{pose.track_id}", (x0, y0 - 3 * thickness), track_colour(pose.track_id))
    return image


def draw_fps(image: np.ndarray, fps: float) -> np.ndarray:
    """Write ``"12.3 fps"`` in the top-left corner of an RGB uint8 image, in place."""
    thickness = line_thickness(*image.shape[:2])
    _label(image, f"{fps:.1f} fps", (4 * thickness, 4 * thickness), (255, 255, 255), anchor="top")
    return image


def _label(
    image: np.ndarray,
    text: str,
    at: tuple[float, float],
    colour: tuple[int, int, int],
    anchor: str = "bottom",
) -> None:
    """Text in ``colour`` on a black box whose bottom-left (or top-left) corner is ``at``."""
    thickness = line_thickness(*image.shape[:2])
    scale = 0.4 * thickness
    (text_width, text_height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = thickness + 1
    box_height = text_height + baseline + 2 * pad
    x = int(np.clip(at[0], 0, max(0, image.shape[1] - text_width - 2 * pad)))
    top = int(at[1]) - (box_height if anchor == "bottom" else 0)
    top = int(np.clip(top, 0, max(0, image.shape[0] - box_height)))
    cv2.rectangle(image, (x, top), (x + text_width + 2 * pad, top + box_height), (0, 0, 0), -1)
    origin = (x + pad, top + pad + text_height)
    cv2.putText(image, text, origin, _FONT, scale, colour, thickness, cv2.LINE_AA)
