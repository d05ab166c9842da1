"""Where frames come from: video files and URLs (ffmpeg) and still images (OpenCV).

Every source yields :class:`SourceFrame` records whose ``image`` is an upright RGB uint8
``(H, W, 3)`` array: video rotation metadata and EXIF orientation are applied, grey and 16-bit
images become 8-bit RGB, and transparent pixels are composited on white. Sources are context
managers; closing one mid-stream stops its ffmpeg process (or camera thread: cameras.py) at
once. EXIF parsing: exif.py.
"""

from __future__ import annotations

import glob
import logging
import math
import queue
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from posecli.errors import InputError, UsageError
from posecli.io.exif import apply_orientation, exif_orientation
from posecli.io.ffmpeg import (
    FfmpegProcess,
    VideoInfo,
    count_packets,
    ffmpeg_path,
    is_url,
    probe_video,
)
from posecli.io.imagesize import stated_size

logger = logging.getLogger(__name__)

#: A video whose frames end more than this many seconds before its container's duration (and
#: more than two frame steps) is reported as cut short.
SHORT_SECONDS = 0.5

#: Largest image or video frame read by default, pixels (150 MP: 450 MB decoded; a 108 MP
#: phone photo passes). ``--max-megapixels`` raises it for the images of a run.
MAX_IMAGE_PIXELS = 150_000_000


@dataclass(frozen=True)
class SourceFrame:
    """One upright frame.

    Attributes:
        image: ``(H, W, 3)`` uint8, RGB, upright.
        index: frame number in the source (0-based), or the image's position in the sorted list.
        time: presentation time in seconds from the start of the source (0 for still images;
            seconds since the first frame for cameras).
        name: file name for still images, empty otherwise.
        image_id: the image's id in COCO results (still images), ``None`` otherwise.
    """

    image: np.ndarray
    index: int
    time: float
    name: str = ""
    image_id: int | None = None


class Source:
    """Context-manager plumbing shared by the sources (here and in ``posecli.io.cameras``)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Video files and URLs


@dataclass(frozen=True)
class _FrameRecord:
    """What ffmpeg's ``showinfo`` filter logged about one output frame."""

    number: int  # position among the frames that reach the output (after --every)
    pts: int | None  # in units of time_base; None when the stream has no timestamps
    time_base: Fraction
    width: int
    height: int


_SHOWINFO_CONFIG = re.compile(r"\[Parsed_showinfo_\d+ @ [^\]]*\] config in time_base: (\d+)/(\d+)")
_SHOWINFO_FRAME = re.compile(
    r"\[Parsed_showinfo_\d+ @ [^\]]*\] n:\s*(\d+) pts:\s*(\S+) .*? s:(\d+)x(\d+) "
)


class _ShowinfoParser:
    """Turns ffmpeg log lines into :class:`_FrameRecord` items on a queue (``None`` at the end)."""

    def __init__(self) -> None:
        self.records: queue.Queue[_FrameRecord | None] = queue.Queue()
        self._time_base = Fraction(1, 1)

    def __call__(self, line: str) -> None:
        config = _SHOWINFO_CONFIG.search(line)
        if config:
            self._time_base = Fraction(int(config.group(1)), int(config.group(2)))
            return
        frame = _SHOWINFO_FRAME.search(line)
        if frame:
            number, pts, width, height = frame.groups()
            self.records.put(
                _FrameRecord(
                    number=int(number),
                    pts=int(pts) if pts.lstrip("-").isdigit() else None,
                    time_base=self._time_base,
                    width=int(width),
                    height=int(height),
                )
            )

    def finish(self) -> None:
        self.records.put(None)


def check_frame_range(start: float | None, end: float | None, every: int) -> None:
    """UsageError unless ``start``/``end`` (seconds, ``None``: unbounded) and ``every`` are a
    range of frames some video can have (:class:`VideoSource`'s, checked before any work)."""
    if every < 1:
        raise UsageError(f"--every must be at least 1, got {every}")
    if start is not None and not 0 <= start < math.inf:
        raise UsageError(f"--start must be a time of at least 0 s, got {start}")
    if end is not None and not math.isfinite(end):  # never into a header's JSON
        raise UsageError(f"--end must be a time in seconds, got {end}")
    if end is not None and end <= (start or 0.0):
        raise UsageError(f"--end ({end}) must be after --start ({start or 0.0})")


class VideoSource(Source):
    """Frames of a video file or URL, decoded by ffmpeg as a stream (flat memory).

    ``start`` seeks (fast, frame-accurate) to that time in seconds; frames at ``end`` or later are
    not read; ``every`` keeps one frame in ``every`` (dropped inside ffmpeg, never piped).
    ``frame.time`` is the presentation time in the source, so variable frame rates keep their
    timestamps. ``frame.index`` counts decoded frames from the start of the source; after a seek it
    is derived from the time (exact for a constant frame rate).

    Iterating starts ffmpeg; :meth:`close` (or leaving the ``with`` block) stops it, also from
    another thread while a frame is being read.

    Raises:
        InputError: missing, empty, unreadable or corrupt input, or no video stream.
        UsageError: ``start``, ``end`` or ``every`` out of range.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        start: float | None = None,
        end: float | None = None,
        every: int = 1,
    ) -> None:
        check_frame_range(start, end, every)
        self.source = str(source)
        self.start, self.end, self.every = start, end, every
        self.info: VideoInfo = probe_video(self.source)
        check_pixels(self.source, self.info.width, self.info.height, MAX_IMAGE_PIXELS, "")
        self._process: FfmpegProcess | None = None
        self._closed = False

    def expected_frames(self) -> int | None:
        """How many frames iteration should yield, for progress bars (``None`` if unknown).

        Counts the packets of a local file without decoding; estimates from the duration
        for URLs and for --start/--end ranges.
        """
        rate = float(self.info.frame_rate)
        if self.start is None and self.end is None and not is_url(self.source):
            total = count_packets(self.source)
        elif self.info.duration and rate:
            end = min(self.end or self.info.duration, self.info.duration)
            total = max(0, round((end - (self.start or 0.0)) * rate))
        else:
            return None
        return -(-total // self.every)

    def _ffmpeg_args(self) -> list[str]:
        filters = ["showinfo=checksum=0"]
        if self.every > 1:
            filters.insert(0, rf"select=not(mod(n\,{self.every}))")
        seek = ["-ss", f"{self.start:.6f}"] if self.start else []
        return [
            "-nostdin", "-nostats", "-loglevel", "info", *seek, "-i", ffmpeg_path(self.source),
            "-map", "0:v:0", "-vf", ",".join(filters), "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-flush_packets", "1", "pipe:1",
        ]  # fmt: skip

    def __iter__(self) -> Iterator[SourceFrame]:
        if self._closed:
            return
        parser = _ShowinfoParser()
        process = FfmpegProcess(
            self._ffmpeg_args(), stdout=subprocess.PIPE, on_line=parser, on_close=parser.finish
        )
        self._process = process
        try:
            yield from self._read(process, parser)
        finally:
            process.kill()

    def _read(self, process: FfmpegProcess, parser: _ShowinfoParser) -> Iterator[SourceFrame]:
        yielded, last_time = 0, 0.0
        for record, image in _decoded(process, parser):
            last_time = self._time(record)
            if self.end is not None and last_time >= self.end:
                break
            yield SourceFrame(image=image, index=self._index(record, last_time), time=last_time)
            yielded += 1
        else:
            if self._closed:
                return
            self._check_ending(process, yielded, last_time)
        if not yielded:
            raise InputError(f"no video frames in {self.source}{self._span()}")

    def _check_ending(self, process: FfmpegProcess, yielded: int, last_time: float) -> None:
        """After the last frame: InputError when ffmpeg failed before any frame, a warning
        when it failed later or the frames stop well before the container's duration."""
        if process.wait() != 0:
            message = process.error_message()
            if not yielded:
                raise self._undecodable(message)
            logger.warning("video %s ended after %d frames: %s", self.source, yielded, message)
        elif yielded:
            self._warn_if_cut_short(yielded, last_time)

    def _undecodable(self, message: str) -> InputError:
        """Why ffmpeg gave no frame: a file with no video packets says so, else ffmpeg's line."""
        if self.start is None and self.end is None and not is_url(self.source):
            try:
                if count_packets(self.source) == 0:
                    return InputError(f"{self.source} holds no video frames")
            except InputError:
                logger.debug("cannot count the packets of %s", self.source, exc_info=True)
        return InputError(f"cannot decode video {self.source}: {message}")

    def _warn_if_cut_short(self, yielded: int, last_time: float) -> None:
        """Warn when the frames end more than :data:`SHORT_SECONDS` (and two frame steps)
        before the end the container states (``--end`` or its duration): a cut file."""
        duration, rate = self.info.duration, float(self.info.frame_rate)
        if not duration or not rate:
            return
        stated = min(self.end, duration) if self.end is not None else duration
        step = self.every / rate
        ended = last_time + step
        if stated - ended <= max(SHORT_SECONDS, 2 * step):
            return
        about = round((stated - (self.start or 0.0)) / step)
        logger.warning(
            "video %s ended at %.1f s after %d frames, but its container says %.1f s (about %d "
            "frames): the file may be cut short", self.source, ended, yielded, stated, about,
        )  # fmt: skip

    def _span(self) -> str:
        """`` from 2 s to 5 s`` for a --start/--end range, else empty."""
        start = f" from {self.start:g} s" if self.start else ""
        return start + (f" to {self.end:g} s" if self.end is not None else "")

    def _time(self, record: _FrameRecord) -> float:
        offset = self.start or 0.0
        if record.pts is None:
            rate = self.info.frame_rate or Fraction(25)
            return offset + float(record.number * self.every / rate)
        return offset + float(record.pts * record.time_base)

    def _index(self, record: _FrameRecord, time_s: float) -> int:
        if self.start and self.info.frame_rate:
            return round(time_s * self.info.frame_rate)
        return record.number * self.every

    def close(self) -> None:
        """Stop ffmpeg; a running iteration ends (safe to call from another thread, twice)."""
        self._closed = True
        if self._process is not None:
            self._process.kill()


def _decoded(
    process: FfmpegProcess, parser: _ShowinfoParser
) -> Iterator[tuple[_FrameRecord, np.ndarray]]:
    """Pair each ``showinfo`` record with its frame from ffmpeg's stdout, in order.

    ffmpeg logs a frame's record before writing its pixels, so the record is always there
    first; every frame is read at the size of the first (ffmpeg scales later ones to it).
    """
    assert process.process.stdout is not None
    first: _FrameRecord | None = None
    while (record := parser.records.get()) is not None:
        first = first or record
        image = _read_rgb(process.process.stdout, first.width, first.height)
        if image is None:
            return
        yield record, image


def _read_rgb(stream: BinaryIO, width: int, height: int) -> np.ndarray | None:
    """Read one rgb24 frame ``(height, width, 3)`` uint8 from a pipe; ``None`` at its end."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    view = memoryview(image).cast("B")
    filled = 0
    while filled < len(view):
        try:
            count = stream.readinto(view[filled:])
        except (OSError, ValueError):  # the pipe was closed by close() on another thread
            return None
        if not count:
            if filled:
                logger.warning("video ended inside a frame; the partial frame is dropped")
            return None
        filled += count
    return image


# ---------------------------------------------------------------------------------------------
# Still images

#: File name suffixes taken from a directory (lower case).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".gif",
     ".pbm", ".pgm", ".ppm", ".pnm", ".avif"}
)  # fmt: skip


def natural_key(path: Path) -> list[str | int]:
    """Sort key that orders ``img2.png`` before ``img10.png``."""
    parts = re.split(r"(\d+)", str(path))
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)]


def expand_image_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Turn directories, glob patterns and file names into one sorted list of image files.

    Directories contribute their image files (by suffix, not recursive); globs their matching
    files (``**`` recurses); files are taken as they are. The result is de-duplicated and in
    natural order.

    Raises:
        InputError: a name that does not exist, a glob without matches, a directory without images.
    """
    found: dict[Path, Path] = {}
    for item in inputs:
        for path in _expand_one(item):
            found.setdefault(path.resolve(), path)
    if not found:
        raise InputError("no input images given")
    return sorted(found.values(), key=natural_key)


def _expand_one(item: str | Path) -> list[Path]:
    path = Path(item)
    if path.is_dir():
        images = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise InputError(f"no images in directory {path}")
        return images
    if path.is_file():
        return [path]
    if glob.has_magic(str(item)):
        matches = [Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file()]
        if not matches:
            raise InputError(f"no files match {item}")
        return matches
    raise InputError(f"input not found: {item}")


_COCO_NAME = re.compile(r"(?:COCO_[A-Za-z]+\d*_)?(\d+)")


def image_ids(paths: Sequence[Path]) -> list[tuple[int, str]]:
    """``(image_id, file name)`` for each path, in order.

    When every file name is COCO-style (its stem is a number such as ``000000123456`` or
    ``COCO_val2014_000000123456``) and the numbers are distinct, the id is that number. Otherwise
    every id is the position in ``paths`` (0-based), so ids never mix the two schemes.
    """
    numbers = [_COCO_NAME.fullmatch(path.stem) for path in paths]
    if all(numbers) and len({int(m.group(1)) for m in numbers}) == len(paths):
        ids = [int(m.group(1)) for m in numbers]
    else:
        ids = list(range(len(paths)))
    return [(image_id, path.name) for image_id, path in zip(ids, paths, strict=True)]


def check_pixels(
    source: str | Path, width: int, height: int, limit: int, option: str = "--max-megapixels"
) -> None:
    """InputError when a ``width × height`` image or frame passes ``limit`` pixels (0: none);
    the message names the ``option`` that raises the limit, if any."""
    if limit and width * height > limit:
        advice = f": {option} {math.ceil(width * height / 1e6)} reads it" if option else ""
        raise InputError(
            f"{source} is {width}×{height} pixels ({width * height / 1e6:.0f} MP), over the "
            f"limit of {limit / 1e6:g} MP{advice}"
        )


def load_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as upright RGB uint8 ``(H, W, 3)``.

    EXIF orientation (JPEG, PNG, WebP) is applied; grey becomes RGB; 16-bit and float images
    are scaled to 8 bits; an alpha channel is composited on a white background. An image of
    more than ``max_pixels`` (0: no limit) is refused, by the size its header states before
    decoding where the format is one ``posecli.io.imagesize`` reads.

    Raises:
        InputError: the file is missing, unreadable, empty, too large or not a decodable image.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read image {path}: {error.strerror or error}") from error
    if not data:
        raise InputError(f"image is empty: {path}")
    stated = stated_size(data)
    if stated is not None:
        check_pixels(path, *stated, max_pixels)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        reason = "cannot decode image data (not an image, or corrupt)"
        raise InputError(f"cannot read image {path}: {reason}")
    check_pixels(path, decoded.shape[1], decoded.shape[0], max_pixels)  # formats not read
    image = _to_rgb(_to_uint8(decoded, path))
    return np.ascontiguousarray(apply_orientation(image, exif_orientation(data)))


def _to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    """Scale any bit depth to uint8 (16-bit: ×255/65535 rounded; float: [0, 1] clipped)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if image.dtype.kind == "f":
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise InputError(f"cannot read image {path}: unsupported pixel type {image.dtype}")


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV channel layouts (grey, grey+alpha, BGR, BGRA; uint8) to RGB ``(H, W, 3)``."""
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels in (2, 4):
        colour = image[:, :, :-1].astype(np.float32)
        alpha = image[:, :, -1:].astype(np.float32) / 255.0
        image = (colour * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
        channels -= 1
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, ::-1]


class ImageSource(Source):
    """Still images from directories, globs and files, in natural order.

    ``frame.index`` is the position in :attr:`paths`, ``frame.time`` is 0, ``frame.name`` the
    file name and ``frame.image_id`` the first of ``ids[index]``: the ``(image_id, name)``
    pairs of :func:`image_ids` (replace them to use another file's ids, e.g. annotations').

    With ``skip_unreadable`` an image that cannot be read is logged (a warning), recorded in
    :attr:`skipped` as ``(index, message)`` and passed over; the iteration fails only when no
    image at all could be read. Without it the first unreadable image raises. An image of more
    than ``max_pixels`` (0: no limit) is unreadable (:func:`load_image`).

    Raises:
        InputError: a missing input (at construction), an unreadable image (iterating).
    """

    def __init__(
        self,
        inputs: Sequence[str | Path],
        *,
        skip_unreadable: bool = False,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        self.paths: list[Path] = expand_image_inputs(inputs)
        self.ids: list[tuple[int, str]] = image_ids(self.paths)
        self.skip_unreadable = skip_unreadable
        self.max_pixels = max_pixels
        self.skipped: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[SourceFrame]:
        self.skipped = []
        for index, path in enumerate(self.paths):
            try:
                image = load_image(path, self.max_pixels)
            except InputError as error:
                if not self.skip_unreadable or len(self.paths) == 1:
                    raise
                logger.warning("skipped: %s", error)
                self.skipped.append((index, str(error)))
                continue
            image_id = self.ids[index][0]
            yield SourceFrame(image, index, 0.0, name=path.name, image_id=image_id)
        if self.paths and len(self.skipped) == len(self.paths):
            raise InputError(f"none of the {len(self.paths)} images could be read")

    def close(self) -> None:
        """Nothing to release: each file is read and closed as it is loaded."""
