"""The report's figures, drawn with matplotlib (the ``report`` extra), rendered to PNG by Agg.

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` made without pyplot (no
global state, no window, no display needed); :func:`figure_png` renders one to PNG bytes.
Image coordinates are pixels, x right, y down (the trajectory's y axis points down); times are
seconds of video; angles degrees.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from posecli.errors import PoseCliError
from posecli.io.draw import track_colour
from posecli.report.motion import PersonMotion
from posecli.spec import COCO_KEYPOINTS, LEFT_COLOUR_RGB, RIGHT_COLOUR_RGB

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Rows of the joint-angle figure: title → its (left, right) angle names.
ANGLE_ROWS: dict[str, tuple[str, str]] = {
    "knees": ("left knee", "right knee"),
    "elbows": ("left elbow", "right elbow"),
    "hips": ("left hip", "right hip"),
    "shoulders": ("left shoulder", "right shoulder"),
}
#: A gap longer than this many frame intervals breaks a plotted line.
GAP_FRAMES = 1.5


class ReportDependencyError(PoseCliError):
    """matplotlib, which the report needs, is not installed (exit code 1)."""


def require_matplotlib() -> None:
    """Fail early when matplotlib is missing.

    Raises:
        ReportDependencyError: matplotlib cannot be imported.
    """
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as error:
        raise ReportDependencyError(
            "posecli report needs matplotlib: pip install 'posecli[report]'"
        ) from error


def _new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` × ``height`` inches (ReportDependencyError: no matplotlib)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    """An RGB uint8 colour as matplotlib's 0–1 floats."""
    return (colour[0] / 255, colour[1] / 255, colour[2] / 255)


def with_breaks(
    times: np.ndarray, values: np.ndarray, interval: float
) -> tuple[np.ndarray, np.ndarray]:
    """Insert a ``NaN`` row where consecutive ``times`` (s, ``(T,)``) are more than
    ``GAP_FRAMES`` × ``interval`` apart, so that a line is not drawn across frames the person
    was not seen in. ``values``: ``(T,)`` or ``(T, D)``; returns both lengthened alike."""
    times, values = np.asarray(times, np.float64), np.asarray(values, np.float64)
    if interval <= 0 or len(times) < 2:
        return times, values
    gaps = np.flatnonzero(np.diff(times) > GAP_FRAMES * interval) + 1
    filler = np.full((len(gaps), *values.shape[1:]), np.nan)
    return np.insert(times, gaps, np.nan), np.insert(values, gaps, filler, axis=0)


def contact_sheet_figure(
    images: Sequence[np.ndarray], captions: Sequence[str], columns: int = 4
) -> Figure:
    """A grid of ``images`` (RGB uint8 ``(H, W, 3)``, all of one aspect) with ``captions``."""
    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    aspect = images[0].shape[0] / images[0].shape[1] if images else 0.75
    cell = 12.0 / columns
    figure = _new_figure(12.0, rows * (cell * aspect + 0.35))
    for position in range(rows * columns):
        axes = figure.add_subplot(rows, columns, position + 1)
        axes.set_axis_off()
        if position < len(images):
            axes.imshow(images[position], interpolation="antialiased")
            axes.set_title(captions[position], fontsize=9)
    return figure


def trajectory_figure(motion: PersonMotion, width: int, height: int, interval: float) -> Figure:
    """The hip centre over the frame (``width`` × ``height`` px, y down); start ○, end □.

    ``interval``: seconds between frame records (longer gaps break the line).
    """
    inches = 5.0
    figure = _new_figure(inches, max(2.5, min(8.0, inches * height / width)) + 0.4)
    axes = figure.add_subplot()
    _, hips = with_breaks(motion.track.times, motion.hips, interval)
    colour = _rgb(track_colour(motion.track.track_id))
    axes.plot(hips[:, 0], hips[:, 1], ".-", color=colour, linewidth=1.5, markersize=3,
              label="hip centre")  # fmt: skip
    found = motion.hips[~np.isnan(motion.hips[:, 0])]
    if len(found):
        style = {"markerfacecolor": "none", "markeredgecolor": "black", "markersize": 8}
        axes.plot(*found[0], "o", **style, label="first seen")
        axes.plot(*found[-1], "s", **style, label="last seen")
        axes.legend(fontsize=7, loc="upper right")
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)  # image coordinates: y down
    axes.set_aspect("equal")
    axes.set_xlabel("x (px)")
    axes.set_ylabel("y (px, down)")
    axes.set_title(f"person {motion.track.track_id}: hip centre", fontsize=10)
    axes.grid(alpha=0.3)
    return figure


def angles_figure(motion: PersonMotion, interval: float) -> Figure:
    """Knee, elbow, hip and shoulder angles (degrees) over time (s), left and right.

    Lines are labelled with the angle's name (``"left knee"``); when the angles were
    smoothed, the unsmoothed ones are drawn faintly too, labelled ``"left knee (raw)"``.
    """
    figure = _new_figure(8.0, 7.0)
    times = motion.track.times
    colours = (_rgb(LEFT_COLOUR_RGB), _rgb(RIGHT_COLOUR_RGB))
    for row, (title, names) in enumerate(ANGLE_ROWS.items()):
        axes = figure.add_subplot(len(ANGLE_ROWS), 1, row + 1)
        for name, colour in zip(names, colours, strict=True):
            if motion.smoothed:
                x, y = with_breaks(times, motion.raw_angles[name], interval)
                axes.plot(x, y, "-", color=colour, alpha=0.3, linewidth=0.8, label=f"{name} (raw)")
            x, y = with_breaks(times, motion.angles[name], interval)
            axes.plot(x, y, ".-", color=colour, linewidth=1.6, markersize=3, label=name)
        axes.set_ylim(0, 185)
        axes.set_yticks([0, 45, 90, 135, 180])
        axes.set_ylabel(f"{title} (°)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        if row == len(ANGLE_ROWS) - 1:
            axes.set_xlabel("time (s)")
    smoothing = ", One-Euro smoothed" if motion.smoothed else ""
    figure.suptitle(f"person {motion.track.track_id}: joint angles{smoothing}", fontsize=10)
    return figure


def keypoint_share_figure(motion: PersonMotion) -> Figure:
    """Per COCO keypoint, the share (%) of the person's frames it was found in (scored above
    ``motion.threshold``)."""
    figure = _new_figure(5.0, 4.2)
    axes = figure.add_subplot()
    positions = np.arange(len(COCO_KEYPOINTS))
    colour = _rgb(track_colour(motion.track.track_id))
    axes.barh(positions, 100.0 * motion.share, color=colour)
    axes.set_yticks(positions, [name.replace("_", " ") for name in COCO_KEYPOINTS], fontsize=8)
    axes.invert_yaxis()  # COCO order, top to bottom
    axes.set_xlim(0, 100)
    found = f"score > {motion.threshold:g}"
    axes.set_xlabel(f"frames found ({found}; %, of {len(motion.track.frames)})")
    axes.set_title(f"person {motion.track.track_id}: keypoints found", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    return figure


def figure_png(figure: Figure, dpi: int = 90) -> bytes:
    """``figure`` rendered to PNG by Agg, at ``dpi`` pixels per inch."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
