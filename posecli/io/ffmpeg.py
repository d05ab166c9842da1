"""Talking to the ffmpeg binary bundled with imageio-ffmpeg: running it, draining its log, probing.

imageio-ffmpeg ships ``ffmpeg`` only (no ``ffprobe``), so :func:`probe_video` parses the stream
description that ``ffmpeg -i INPUT`` prints. Every process is started in its own session so that a
Ctrl-C in the terminal reaches Python only: Python then finishes or stops ffmpeg deliberately.
"""

from __future__ import annotations

import collections
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg

from posecli.errors import InputError, MissingDependencyError

logger = logging.getLogger(__name__)

#: Lines of an ffmpeg log kept for error messages.
LOG_TAIL_LINES = 40


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (or named by IMAGEIO_FFMPEG_EXE)."""
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as error:
        raise MissingDependencyError(f"ffmpeg is not available: {error}") from error


def is_url(source: str | Path) -> bool:
    """Whether ``source`` names a stream (``scheme://…``) rather than a local file."""
    return "://" in str(source)


def ffmpeg_path(source: str | Path) -> str:
    """``source`` as ffmpeg should see it: URLs as they are, files as ``file:`` + resolved path.

    The prefix keeps names such as ``-clip.mp4`` or ``a:b.mp4`` from being read as an option
    or a protocol; resolving links here makes ``/proc/self/fd/3`` name this process's file, not
    one of ffmpeg's.
    """
    return str(source) if is_url(source) else f"file:{Path(source).resolve()}"


class FfmpegProcess:
    """A running ffmpeg whose stderr is read line by line on a thread.

    The log is never left to fill its pipe (which would stall ffmpeg); the last
    :data:`LOG_TAIL_LINES` lines are kept for error messages and each line is handed to
    ``on_line`` (called on the reading thread); ``on_close`` is called there once the log ends.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = subprocess.DEVNULL,
        on_line: Callable[[str], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.args = [ffmpeg_exe(), "-hide_banner", *args]
        self._on_line = on_line
        self._on_close = on_close
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.process = subprocess.Popen(
            self.args, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, **_detached()
        )
        self._reader = threading.Thread(target=self._drain, name="ffmpeg-log", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for raw in self.process.stderr:
                for part in raw.split(b"\r"):
                    line = part.decode("utf-8", errors="replace").rstrip()
                    self._tail.append(line)
                    if self._on_line is not None:
                        self._on_line(line)
        if self._on_close is not None:
            self._on_close()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for ffmpeg to exit and for its log to be read; return its exit code."""
        code = self.process.wait(timeout)
        self._reader.join()
        return code

    def kill(self) -> None:
        """Stop ffmpeg at once and release its pipes (safe to call more than once)."""
        if self.running:
            self.process.kill()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    logger.debug("ffmpeg pipe was already broken while closing", exc_info=True)
        self.wait()

    def log_tail(self) -> list[str]:
        """The last lines ffmpeg logged (complete once :meth:`wait` has returned)."""
        return list(self._tail)

    def error_message(self) -> str:
        """The most telling line of the log: the last one that reads as an error."""
        lines = [line.strip() for line in self._tail if line.strip() not in _GENERIC]
        for line in reversed(lines):
            if re.search(r"error|invalid|no such|denied|not found|failed|unable", line, re.I):
                return _strip_context(line)
        return _strip_context(lines[-1]) if lines else "ffmpeg failed without a message"


#: ffmpeg's closing lines that say only that something before them failed (and blank ones).
_GENERIC = frozenset({"", "Conversion failed!"})


def _strip_context(line: str) -> str:
    """Drop ffmpeg's ``[component @ 0x…]`` prefix from a log line."""
    return re.sub(r"^\[[^\]]*\]\s*", "", line)


def _detached() -> dict:
    """Popen arguments that keep the terminal's Ctrl-C away from ffmpeg."""
    if sys.platform.startswith("win"):
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


@dataclass(frozen=True)
class VideoInfo:
    """What ffmpeg reports about the first video stream of a file or URL.

    Attributes:
        source: the file path or URL as given.
        width, height: size of the *upright* frames in pixels (rotation applied).
        frame_rate: average frame rate in frames per second (0 when unknown).
        time_base: time unit of the stream's timestamps, in seconds.
        duration: length in seconds, or ``None`` when unknown (live streams).
        rotation: display rotation in degrees counter-clockwise (0, 90, 180 or 270) that
            the decoder applies to give upright frames.
        codec: video codec name, e.g. ``"h264"``.
        audio_codec: codec of the first audio stream, or ``None`` without audio.
    """

    source: str
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    duration: float | None
    rotation: int
    codec: str
    audio_codec: str | None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def probe_video(source: str | Path) -> VideoInfo:
    """Describe the first video stream of ``source`` (a file path or URL).

    Raises:
        InputError: the file is missing, empty, unreadable, corrupt or has no video stream.
    """
    source = str(source)
    _check_local_file(source)
    lines: list[str] = []  # the whole log: the stream description can outgrow the kept tail
    process = FfmpegProcess(["-nostdin", "-i", ffmpeg_path(source)], on_line=lines.append)
    process.wait()
    text = "\n".join(lines)
    if "Input #0" not in text:
        raise InputError(f"cannot read video {source}: {process.error_message()}")
    return parse_probe(source, text)


def _check_local_file(source: str) -> None:
    if is_url(source):
        return
    path = Path(source)
    if not path.exists():
        raise InputError(f"input not found: {source}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a video: {source}")
    not_regular = f"{source} is not a regular file: it cannot be read as a video"
    if not path.is_file():  # a pipe, device or socket
        raise InputError(not_regular)
    if path.stat().st_size == 0:  # /proc and /sys files say 0 bytes but hold text
        raise InputError(not_regular if _holds_data(path) else f"input is empty: {source}")


def _holds_data(path: Path) -> bool:
    """Whether a byte can be read from ``path``; InputError when it cannot be read."""
    try:
        with path.open("rb") as stream:
            return bool(stream.read(1))
    except OSError as error:
        raise InputError(f"cannot read video {path}: {error.strerror or error}") from error


_STREAM = re.compile(r"^\s*Stream #0:\d+\S*: (Video|Audio): (\w+)")


def parse_probe(source: str, text: str) -> VideoInfo:
    """Build a :class:`VideoInfo` from the log of ``ffmpeg -i SOURCE`` (see :func:`probe_video`)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Input #0"))
    lines = lines[start:]
    video_line, video_block, audio_codec = None, [], None
    for i, line in enumerate(lines):
        match = _STREAM.match(line)
        if match is None:
            continue
        if match.group(1) == "Audio" and audio_codec is None:
            audio_codec = match.group(2)
        elif match.group(1) == "Video" and video_line is None:
            video_line = line
            video_block = _stream_block(lines, i + 1)
    if video_line is None:
        raise InputError(f"no video stream in {source}")
    size = re.search(r", (\d+)x(\d+)[ ,\[]", video_line + " ")
    if size is None:
        raise InputError(f"cannot read the frame size of {source}")
    width, height = int(size.group(1)), int(size.group(2))
    rotation = _rotation(video_block)
    if rotation % 180 == 90:
        width, height = height, width
    return VideoInfo(
        source=source,
        width=width,
        height=height,
        frame_rate=_frame_rate(video_line),
        time_base=_time_base(video_line),
        duration=_duration(lines),
        rotation=rotation,
        codec=_STREAM.match(video_line).group(2),
        audio_codec=audio_codec,
    )


def _stream_block(lines: list[str], first: int) -> list[str]:
    """The metadata and side-data lines that follow a ``Stream #`` line."""
    block = []
    for line in lines[first:]:
        if not line.startswith("    "):  # stream lines are indented by two spaces
            break
        block.append(line)
    return block


def _rotation(block: list[str]) -> int:
    """Counter-clockwise display rotation from a display matrix (or legacy ``rotate`` tag)."""
    for line in block:
        matrix = re.search(r"rotation of (-?[\d.]+) degrees", line)
        if matrix:
            return round(float(matrix.group(1))) % 360
        legacy = re.search(r"^\s*rotate\s*:\s*(-?\d+)", line)
        if legacy:  # the tag is clockwise
            return -int(legacy.group(1)) % 360
    return 0


def _frame_rate(line: str) -> Fraction:
    """Average frame rate (``fps``), else ``tbr``; NTSC-style rates as exact n·1000/1001."""
    for unit in ("fps", "tbr"):
        match = re.search(rf"([\d.]+)(k?) {unit}\b", line)
        if match:
            return rational_rate(float(match.group(1)) * (1000 if match.group(2) else 1))
    return Fraction(0)


def rational_rate(rate: float) -> Fraction:
    """A frame rate printed with two decimals as an exact fraction (29.97 → 30000/1001)."""
    ntsc = round(rate * 1.001)
    if abs(rate - round(rate)) > 0.005 and abs(rate - ntsc / 1.001) < 0.006:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(rate).limit_denominator(1000)


def _time_base(line: str) -> Fraction:
    match = re.search(r"([\d.]+)(k?) tbn\b", line)
    if match is None:
        return Fraction(1, 90000)
    ticks = float(match.group(1)) * (1000 if match.group(2) else 1)
    return Fraction(1, round(ticks))


def _duration(lines: list[str]) -> float | None:
    for line in lines:
        match = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", line)
        if match:
            hours, minutes, seconds = match.groups()
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def count_packets(source: str | Path) -> int:
    """Number of video packets in ``source``: its frame count for nearly every codec.

    Reads the container without decoding (fast); meant for progress bars and estimates.
    """
    process = FfmpegProcess(
        ["-nostdin", "-i", ffmpeg_path(source), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    )
    code = process.wait()
    counts = [re.search(r"frame=\s*(\d+)", line) for line in process.log_tail()]
    frames = next((int(match.group(1)) for match in reversed(counts) if match), None)
    if code != 0 or frames is None:
        raise InputError(f"cannot read video {source}: {process.error_message()}")
    return frames
