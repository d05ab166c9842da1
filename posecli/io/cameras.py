"""Live frames from cameras: an OpenCV capture device (index) or a stream URL, newest first."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from posecli.errors import InputError
from posecli.io.ffmpeg import is_url
from posecli.io.sources import Source, SourceFrame

logger = logging.getLogger(__name__)


@contextmanager
def _opencv_silenced() -> Iterator[None]:
    """OpenCV's own logging off, and the FFmpeg inside it (``[tcp @ 0x…] Connection refused``)
    kept off the terminal: both write straight to file descriptor 2, which goes to a temporary
    file meanwhile, its lines logged at debug level. Restored afterwards."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            cv2.utils.logging.setLogLevel(level)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                logger.debug("camera backend: %s", line)


def _open_failure(camera: int | str) -> str:
    """What went wrong opening ``camera``, in one line."""
    if isinstance(camera, int):
        return f"camera {camera} could not be opened: no camera with that index, or it is busy"
    if is_url(camera):
        return f"camera stream {camera!r} could not be opened: it cannot be reached or read"
    if not Path(camera).exists():
        return f"camera {camera!r} could not be opened: no such device or file"
    return f"camera {camera!r} could not be opened: not a camera or a video OpenCV reads"


class CameraSource(Source):
    """Live frames from an OpenCV capture device (index) or stream URL, newest first.

    A thread grabs frames continuously and keeps only the newest one; iteration returns it and
    waits for the next, so a slow consumer skips stale frames instead of queueing them (latency
    first). ``frame.index`` counts captured frames (gaps show skipped ones) and ``frame.time``
    is seconds since the first capture. :attr:`dropped` counts the frames captured but never
    yielded (replaced by a newer one, or still waiting when the source closed), so that once
    closed every frame captured was either yielded or dropped.

    Raises:
        InputError: no camera opens, or it opens but delivers no frame.
    """

    def __init__(
        self, camera: int | str = 0, *, width: int | None = None, height: int | None = None
    ) -> None:
        self.camera = int(camera) if str(camera).isdigit() else camera
        with _opencv_silenced():  # its backends log each failed attempt on stderr
            self._capture = cv2.VideoCapture(self.camera)
        if not self._capture.isOpened():
            self._capture.release()
            raise InputError(_open_failure(self.camera))
        if width:
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self.dropped = 0
        self._newest: tuple[int, float, np.ndarray] | None = None  # index, monotonic time, BGR
        self._ended = False
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._grabber = threading.Thread(target=self._grab, name="camera-grab", daemon=True)
        self._grabber.start()

    def _grab(self) -> None:
        index = 0
        while not self._stopping.is_set():
            ok, bgr = self._capture.read()
            if not ok:
                break
            with self._changed:
                self.dropped += self._newest is not None
                self._newest = (index, time.monotonic(), bgr)
                self._changed.notify_all()
            index += 1
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def __iter__(self) -> Iterator[SourceFrame]:
        start = None
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._newest is not None or self._ended)
                if self._newest is None:
                    break
                index, captured, bgr = self._newest
                self._newest = None
            start = captured if start is None else start
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield SourceFrame(image=rgb, index=index, time=captured - start)
        if start is None and not self._stopping.is_set():
            raise InputError(f"camera {self.camera!r} opened but delivered no frame")

    def close(self) -> None:
        """Stop the grabbing thread and release the device (safe to call twice)."""
        self._stopping.set()
        self._grabber.join(timeout=5.0)
        with self._changed:  # wake a consumer even if the grabber is stuck in a read
            self._ended = True
            if self._newest is not None and not self._grabber.is_alive():
                self.dropped += 1  # captured, never yielded
                self._newest = None
            self._changed.notify_all()
        if self._grabber.is_alive():
            logger.warning("camera %r did not stop within 5 s; leaving it open", self.camera)
            return
        self._capture.release()
