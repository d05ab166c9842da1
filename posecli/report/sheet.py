"""The contact sheet's pictures: evenly spaced frames of a track file with their skeletons.

Pictures are RGB uint8 ``(H, W, 3)``: the video's frame at the record's time when a video is
given (upright, as ``posecli video`` saw it), else a blank canvas of the frame size; skeletons
and track ids are drawn as in ``posecli video``'s output, then the picture is scaled down.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from posecli.errors import InputError
from posecli.io.draw import DEFAULT_DRAW_THRESHOLD, draw_poses
from posecli.pose import Frame

#: Colour of the blank canvas, RGB.
CANVAS_RGB = (38, 38, 42)


def sheet_frames(frames: list[Frame], count: int) -> list[Frame]:
    """``count`` records evenly spaced over ``frames`` (first and last included; all of them
    when there are fewer)."""
    if count <= 0 or not frames:
        return []
    positions = np.unique(np.round(np.linspace(0, len(frames) - 1, min(count, len(frames)))))
    return [frames[int(p)] for p in positions]


def check_video(video: str | Path, width: int, height: int) -> None:
    """Make sure ``video`` is readable and of the tracks' frame size (``width`` × ``height``
    pixels, upright; either orientation is accepted before rotation metadata is applied).

    Raises:
        InputError: the video is missing or unreadable, or of another size (the tracks were
            made from another video).
    """
    from posecli.io.ffmpeg import probe_video

    info = probe_video(video)
    if (info.width, info.height) not in ((width, height), (height, width)):
        raise InputError(
            f"{video} is {info.width}×{info.height} but the tracks are of {width}×{height} "
            "frames: not the video they were made from"
        )


def video_frame(video: str | Path, frame: Frame) -> np.ndarray:
    """The upright RGB frame of ``video`` shown at ``frame.time`` (the first at or after it).

    Raises:
        InputError: the video cannot be read, has no frame there, or is not of the frame's
            size (the tracks were made from another video).
    """
    from posecli.io.sources import VideoSource

    check_video(video, frame.width, frame.height)
    start = max(frame.time - 1e-3, 0.0)
    with VideoSource(video, start=start if start > 0 else None) as source:
        for decoded in source:
            if decoded.image.shape[:2] != (frame.height, frame.width):
                raise InputError(f"{video}: frames of another size than the tracks' frames")
            return decoded.image
    raise InputError(f"{video} has no frame at {frame.time:.3f} s")


def sheet_image(
    frame: Frame,
    video: str | Path | None,
    max_width: int = 480,
    threshold: float = DEFAULT_DRAW_THRESHOLD,
) -> np.ndarray:
    """The picture of one record: video frame or blank canvas, skeletons and ids drawn (the
    keypoints scored above ``threshold``), scaled down to at most ``max_width`` pixels wide.
    Returns RGB uint8 ``(h, w, 3)``."""
    if video is not None:
        image = video_frame(video, frame).copy()
    else:
        image = np.empty((frame.height, frame.width, 3), dtype=np.uint8)
        image[:] = CANVAS_RGB
    draw_poses(image, frame.poses, min_confidence=threshold)
    if frame.width > max_width:
        height = max(1, round(frame.height * max_width / frame.width))
        image = cv2.resize(image, (max_width, height), interpolation=cv2.INTER_AREA)
    return image


def sheet_caption(frame: Frame) -> str:
    """``"frame 12 · 0.48 s · 3 people"``."""
    count = len(frame.poses)
    people = "person" if count == 1 else "people"
    return f"frame {frame.index} · {frame.time:.2f} s · {count} {people}"
