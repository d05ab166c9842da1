"""The live window of ``posecli webcam``: annotated frames with their FPS, quit with q or Esc."""

from __future__ import annotations

import os
import re
import sys
import threading
import time

import numpy as np

from posecli.errors import OutputError
from posecli.pose import Frame


class Window:
    """A display sink: the annotated frames with their FPS; ``q`` or Esc (or closing) stops.

    Every OpenCV window call happens here, on the pipeline's writer thread: OpenCV's GUI (Qt)
    must be driven from one thread. The window goes away with the process.
    """

    TITLE = "posecli webcam (q or Esc quits)"

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._last: float | None = None
        self._fps = 0.0

    def __call__(self, frame: Frame, image: np.ndarray) -> None:
        """Show ``image`` (``(H, W, 3)`` uint8 RGB, annotated) with the measured FPS."""
        import cv2

        from posecli.io.draw import draw_fps

        now = time.perf_counter()
        if self._last is not None and now > self._last:
            instant = 1.0 / (now - self._last)
            self._fps = 0.9 * self._fps + 0.1 * instant if self._fps else instant
        self._last = now
        shown = cv2.cvtColor(draw_fps(image.copy(), self._fps), cv2.COLOR_RGB2BGR)
        try:
            cv2.imshow(self.TITLE, shown)
            key = cv2.waitKey(1) & 0xFF
            closed = cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error as error:
            first_line = str(error).strip().splitlines()[-1]
            raise OutputError(f"cannot show a window ({first_line}); use --no-display") from None
        if key in (ord("q"), ord("Q"), 27) or closed:
            self.stop.set()


def available() -> bool:
    """Whether a window can be shown: a display server (on Linux) and an OpenCV GUI backend.

    Only checks: the window itself is created by :class:`Window` on the writer thread.
    """
    import cv2

    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    backend = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return backend is not None and backend.group(1).upper() != "NONE"
