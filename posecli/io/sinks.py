"""Where results go: annotated H.264 video, JSON-lines tracks, CSV, COCO results, OpenPose, images.

Every sink writes to a temporary name beside its output and renames it when complete, never
overwrites an existing output unless ``force=True``, and is a context manager:

* :meth:`close` finishes normally and returns the output path (``OutputError`` on failure);
* :meth:`abort` is for interrupts and errors: it keeps what was completed — a playable MP4 of
  the frames written so far, the complete JSON lines — renames it into place, never raises,
  and returns the path (``None`` when nothing was written).

Leaving a ``with`` block calls :meth:`close`, or :meth:`abort` when an exception (including
``KeyboardInterrupt``) is propagating. A COCO results file is one JSON document, which a part of
the images would fake: it is kept only after an interrupt (or a closed standard output), and
discarded after an error.
These calls are idempotent and thread-safe with respect to ``write`` (a call waits for a write
in progress to finish); failures while saving are logged as one line each, without traceback.

Temporary files, output checks: :mod:`posecli.io.files`; the video sink's ffmpeg commands:
:mod:`posecli.io.mp4`, its frame stream: :mod:`posecli.io.matroska`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posecli.errors import OutputClosedError, OutputError
from posecli.io.ffmpeg import FfmpegProcess, probe_video, rational_rate
from posecli.io.files import (
    check_output,
    error_reason,
    open_through,
    remove_quietly,
    temporary_path,
    write_atomically,
    written_through,
)
from posecli.io.matroska import MatroskaFrames
from posecli.io.mp4 import add_audio, encoder_args, track_timescale
from posecli.pose import (
    Frame,
    frame_to_openpose,
    frame_to_track_line,
    frames_to_csv,
    to_coco_result,
)

logger = logging.getLogger(__name__)


def _write_all(file, data: bytes) -> None:
    """Write every byte of ``data`` to an unbuffered file (raw writes may be partial)."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def _json_line(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()


class Sink:
    """What every sink shares: one ``write(frame, image)`` (also as ``sink(frame, image)``, the
    pipeline's ``FrameSink`` call) and context-manager behaviour (see the module docstring).

    ``frame`` is a :class:`~posecli.pose.Frame` (its people in image pixels); ``image`` its
    ``(H, W, 3)`` uint8 RGB image, annotated when the run draws; sinks of data ignore it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished = False
        self._result: Path | None = None

    def write(self, frame: Frame, image: np.ndarray | None = None) -> object:
        raise NotImplementedError

    def __call__(self, frame: Frame, image: np.ndarray | None = None) -> None:
        self.write(frame, image)

    def _finish_once(self, finish: Callable[[], Path | None]) -> Path | None:
        """Run ``finish`` on the first close, abort or discard; later calls return its result.

        Call with ``self._lock`` free: it is taken here, so no write runs alongside.
        """
        with self._lock:
            if not self._finished:
                self._finished = True
                self._result = finish()
            return self._result

    def _check_open(self) -> None:
        """ValueError after close (hold ``self._lock``)."""
        if self._finished:
            raise ValueError(f"{getattr(self, 'path', self)}: write after close")

    def close(self) -> Path | None:
        raise NotImplementedError

    def abort(self) -> Path | None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------
# Lines per frame: JSON-lines tracks, CSV


class _LinesSink(Sink):
    """A text file written frame by frame (``encode(frame)``: its lines), after a first line:
    each :meth:`write` hands a frame's lines to the operating system at once (the file is
    unbuffered), so an interrupted or failed run keeps every complete line; :meth:`abort` cuts
    a line left half-written, if any — a truncation, which works on a full disk too.
    ``-`` (standard output), ``/dev/null``, a FIFO… (``files.written_through``) are written in
    place, never truncated or replaced; a pipe's reader leaving raises ``OutputClosedError``.
    """

    def __init__(self, path: str | Path, *, force: bool, first: bytes | None) -> None:
        self.path, self.lines = Path(path), 0  # lines: frames written
        self._temporary: Path | None = None
        check_output(self.path, force=force)
        if written_through(self.path):  # stdout: a duplicate of fd 1, sys.stdout left alone
            self._file = open_through(self.path)
        else:
            self._temporary = temporary_path(self.path)
            self._file = open(self._temporary, "wb", buffering=0)  # noqa: SIM115 — kept open
        super().__init__()
        try:  # the first line; if it does not fit, nothing is left behind
            _write_all(self._file, first or b"")
        except OSError as error:
            self._file.close()
            if self._temporary is not None:
                remove_quietly(self._temporary)
            raise self._error(error) from error
        self._complete_bytes = len(first or b"")

    def _error(self, error: OSError, kept: str = "") -> OutputError:
        """The OutputError of a failed write (``OutputClosedError``: a pipe's reader left)."""
        if self._temporary is None and isinstance(error, BrokenPipeError):
            return OutputClosedError(f"{self.path}: closed by its reader")
        return OutputError(f"cannot write {self.path}: {error_reason(error)}{kept}")

    def write(self, frame: Frame, image: np.ndarray | None = None) -> None:
        """Append the lines of ``frame`` (its poses in image pixels, COCO-17 order).

        Raises:
            OutputError: the lines could not be written (disk full…); the lines before stay.
        """
        data = self.encode(frame)
        with self._lock:
            self._check_open()
            try:
                _write_all(self._file, data)
            except OSError as error:
                kept = f" (the complete lines of {self.lines} frames before are kept)"
                raise self._error(error, kept) from error
            self._complete_bytes += len(data)
            self.lines += 1

    def close(self) -> Path | None:
        return self._finish_once(self._rename)

    def abort(self) -> Path | None:
        return self._finish_once(self._keep_complete_lines)

    def _rename(self) -> Path:
        """Close the file and rename it into place."""
        try:
            self._file.close()
            if self._temporary is not None:
                os.replace(self._temporary, self.path)
        except OSError as error:
            if self._temporary is not None:
                remove_quietly(self._temporary)
            raise self._error(error) from error
        return self.path

    def _keep_complete_lines(self) -> Path | None:
        """Cut a partial last line, close, rename into place; never deletes a complete line."""
        if self._temporary is None:  # standard output: what was written is there
            self._file.close()
            return self.path
        try:
            self._file.truncate(self._complete_bytes)
        except OSError as error:
            logger.warning("%s may end in a partial line: %s", self.path, error_reason(error))
        try:
            self._file.close()
        except OSError as error:
            logger.warning("closing %s: %s", self._temporary, error_reason(error))
        if self.lines == 0:
            remove_quietly(self._temporary)
            return None
        try:
            os.replace(self._temporary, self.path)
        except OSError as error:
            logger.warning(
                "could not rename the lines of %d frames written to %s (%s); they are in %s",
                self.lines, self.path, error_reason(error), self._temporary,
            )  # fmt: skip
            return None
        return self.path


class JsonLinesSink(_LinesSink):
    """Per-frame track lines (``.jsonl``, :func:`posecli.pose.frame_to_track_line`), after a
    first line ``{"header": {...}}`` when a ``header`` is given (source, fps, model, options)."""

    def __init__(
        self, path: str | Path, *, force: bool = False, header: Mapping[str, Any] | None = None
    ) -> None:
        first = None if header is None else _json_line({"header": dict(header)})
        super().__init__(path, force=force, first=first)

    def encode(self, frame: Frame) -> bytes:
        return _json_line(frame_to_track_line(frame))


class CsvSink(_LinesSink):
    """A CSV table, one row per person per frame (:func:`posecli.pose.frame_to_csv_rows`),
    after a first line naming :data:`posecli.pose.CSV_COLUMNS`."""

    def __init__(self, path: str | Path, *, force: bool = False) -> None:
        super().__init__(path, force=force, first=frames_to_csv([], columns=True))

    def encode(self, frame: Frame) -> bytes:
        return frames_to_csv([frame])


# ---------------------------------------------------------------------------------------------
# COCO results


def coco_document(results: Iterable[Mapping[str, Any]]) -> bytes:
    """A COCO keypoint results file's bytes: a JSON list, one result entry per line."""
    body = ",\n".join(json.dumps(entry, allow_nan=False) for entry in results)
    return (f"[\n{body}\n]\n" if body else "[]\n").encode()


class CocoResultsSink(Sink):
    """A COCO keypoint results file: a JSON list of :func:`posecli.pose.to_coco_result` entries.

    Results are small and kept in memory (:attr:`results`; without a ``path`` only there);
    the file is written by :meth:`close` (or by :meth:`abort`, with the images done so far).
    Leaving a ``with`` block on an error other than an interrupt discards them
    (:meth:`discard`): a results file for part of the images would look complete. Entries
    carry ``file_name`` beside ``image_id`` so that ids that are positions can be traced back
    to files.
    """

    def __init__(self, path: str | Path | None, *, force: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            check_output(self.path, force=force)
        self._temporary = None  # none for a written-through path: write_atomically writes it
        if self.path is not None and not written_through(self.path):
            self._temporary = temporary_path(self.path)
        self.results: list[dict] = []
        self.images = 0
        super().__init__()

    def write(self, frame: Frame, image: np.ndarray | None = None) -> None:
        """Add the poses of one image, under ``frame.image_id`` (``frame.name`` is recorded as
        ``file_name``)."""
        if frame.image_id is None:
            raise ValueError(f"frame {frame.index} has no image_id for COCO results")
        entries = [to_coco_result(p, frame.image_id, frame.name or None) for p in frame.poses]
        with self._lock:
            self._check_open()
            self.results.extend(entries)
            self.images += 1

    def _save(self) -> Path | None:
        """Write the results file (none in memory-only mode, without a path)."""
        if self.path is None:
            return None
        return write_atomically(self.path, coco_document(self.results), temporary=self._temporary)

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, (KeyboardInterrupt, OutputClosedError)):
            self.abort()
        else:
            self.discard()

    def discard(self) -> None:
        """Write nothing: remove the temporary file (after an error)."""
        self._finish_once(self._drop_temporary)

    def _drop_temporary(self) -> None:
        if self._temporary is not None:
            remove_quietly(self._temporary)

    def close(self) -> Path | None:
        return self._finish_once(self._save)

    def abort(self) -> Path | None:
        return self._finish_once(self._save_done)

    def _save_done(self) -> Path | None:
        """Save the images done so far (none: no file); a failure is logged, not raised."""
        if self.images == 0:
            self._drop_temporary()
            return None
        try:
            return self._save()
        except OutputError as error:
            logger.warning("could not save the results done so far: %s", error)
            return None


# ---------------------------------------------------------------------------------------------
# Files written one by one into a directory (OpenPose JSON, annotated images)


class _DirectorySink(Sink):
    """Files written whole, one by one, into a directory: nothing is pending at close."""

    def __init__(self, directory: str | Path, *, force: bool) -> None:
        self.directory = Path(directory)
        self.force = force
        check_output(self.directory, force=force, directory=True)
        self.files = 0
        super().__init__()

    def _target(self, name: str) -> Path:
        path = self.directory / name
        if path.exists() and not self.force:
            raise OutputError(f"{path} exists (use --force to overwrite)")
        return path

    def close(self) -> Path | None:
        return self.directory

    def abort(self) -> Path | None:
        return self.directory if self.files else None


def check_directory_files(directory: Path, names: Iterable[str], *, force: bool) -> None:
    """Fail early on files a directory sink would overwrite.

    Raises:
        OutputError: the first of ``names`` that exists in ``directory``, unless ``force``.
    """
    if force or not directory.is_dir():
        return
    for name in names:
        if (directory / name).exists():
            raise OutputError(f"{directory / name} exists (use --force to overwrite)")


class OpenPoseSink(_DirectorySink):
    """OpenPose-compatible ``*_keypoints.json`` files, one per frame, in a directory.

    Video frames are named ``{prefix}_{index:012d}_keypoints.json`` (OpenPose's naming), still
    images ``{stem}_keypoints.json``. Existing keypoint files in the directory make the
    constructor (and :meth:`check`, for a check before any work) fail unless ``force``.
    """

    def __init__(self, directory: str | Path, *, prefix: str = "", force: bool = False) -> None:
        super().__init__(directory, force=force)
        self.prefix = prefix
        self.check(self.directory, force=force)

    @staticmethod
    def check(directory: Path, *, force: bool) -> None:
        """OutputError when ``directory`` holds keypoint files already, unless ``force``."""
        existing = next(directory.glob("*_keypoints.json"), None) if directory.is_dir() else None
        if existing is not None and not force:
            raise OutputError(f"{existing} exists (use --force to overwrite)")

    def file_name(self, frame: Frame) -> str:
        if frame.name:
            return f"{Path(frame.name).stem}_keypoints.json"
        stem = f"{self.prefix}_{frame.index:012d}" if self.prefix else f"{frame.index:012d}"
        return f"{stem}_keypoints.json"

    def write(self, frame: Frame, image: np.ndarray | None = None) -> Path:
        """Write the OpenPose JSON of ``frame``; return its path."""
        path = self._target(self.file_name(frame))
        write_atomically(path, json.dumps(frame_to_openpose(frame), allow_nan=False).encode())
        self.files += 1
        return path


class ImageDirectorySink(_DirectorySink):
    """Annotated still images, written under their own file names into a directory."""

    def write(self, frame: Frame, image: np.ndarray | None = None) -> Path:
        """Encode ``image`` (``(H, W, 3)`` uint8 RGB) under ``frame.name``, in the format of its
        suffix; return its path."""
        if image is None:
            raise ValueError(f"no image to write for {frame.name}")
        path = self._target(Path(frame.name).name)
        ok, encoded = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(image[:, :, ::-1]))
        if not ok:
            raise OutputError(f"cannot encode {path}: unsupported image format")
        write_atomically(path, encoded.tobytes())
        self.files += 1
        return path


# ---------------------------------------------------------------------------------------------
# Annotated video


class VideoSink(Sink):
    """Annotated frames → H.264 (yuv420p, BT.709) MP4, keeping each frame's presentation time.

    Frames go to ffmpeg with their timestamps, so the output has the same frame count and
    timing as the frames written: a constant rate stays constant, a variable one keeps its
    timestamps (shifted so that the first frame is at 0). Odd widths or heights are padded by
    one black pixel (yuv420p needs even sizes).
    With ``audio_source``, its first audio stream — cut to the span of the frames written — is
    added in a final step: copied when MP4 plays it widely (AAC, MP3, AC-3, E-AC-3, ALAC),
    re-encoded to AAC otherwise.

    Args:
        path: the ``.mp4`` to write.
        frame_rate: nominal rate (frames/s); used for frames written without a time and to
            choose the MP4 timescale.
        audio_source: file or URL whose audio to add (the video the frames came from).
        timescale: MP4 ticks per second; pass the source's (``1 / VideoInfo.time_base``) to
            keep variable timestamps exact.
        crf, preset: libx264 quality and speed.
        force: overwrite an existing output.
    """

    def __init__(
        self,
        path: str | Path,
        frame_rate: float | Fraction,
        *,
        audio_source: str | Path | None = None,
        timescale: int | None = None,
        crf: int = 23,
        preset: str = "veryfast",
        force: bool = False,
    ) -> None:
        self.path = Path(path)
        check_output(self.path, force=force, regular=True)
        rate = frame_rate if isinstance(frame_rate, Fraction) else rational_rate(frame_rate)
        self.frame_rate = rate if rate > 0 else Fraction(25)
        self.timescale = track_timescale(self.frame_rate, timescale)
        self.crf, self.preset = crf, preset
        self.audio_source = str(audio_source) if audio_source is not None else None
        self.audio_codec = probe_video(audio_source).audio_codec if audio_source else None
        self._video = temporary_path(self.path, ".mp4")
        self._encoder: FfmpegProcess | None = None
        self._size: tuple[int, int] | None = None  # (height, width)
        self.frames = 0
        self._first_time: float | None = None
        self._last_us = -1
        self._shift_us = 0  # added after a timestamp jumped backwards
        super().__init__()

    @property
    def duration(self) -> float:
        """Seconds covered by the frames written (the last frame lasts one nominal period)."""
        if not self.frames:
            return 0.0
        return self._last_us / 1e6 + float(1 / self.frame_rate)

    def write(self, frame: Frame, image: np.ndarray | None = None) -> None:
        """Add ``image`` (``(H, W, 3)`` uint8 RGB), shown at ``frame.time`` seconds (source time).

        Raises:
            OutputError: the encoder failed (disk full, killed…).
            ValueError: the frame's size differs from the first frame's, or after close.
        """
        if image is None:
            raise ValueError(f"no image to write for frame {frame.index}")
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) RGB, got shape {image.shape}")
        with self._lock:
            self._check_open()
            if self._encoder is None:
                self._start(image.shape[0], image.shape[1])
            elif image.shape[:2] != self._size:
                raise ValueError(f"frame of shape {image.shape}, expected {self._size + (3,)}")
            time_us = self._timestamp(frame.time)
            stdin = self._encoder.process.stdin
            try:
                stdin.write(MatroskaFrames.frame_header(time_us, image.nbytes))
                stdin.write(memoryview(image).cast("B"))
            except (BrokenPipeError, ValueError) as error:
                raise self._encoder_failure("video encoder failed") from error
            self.frames += 1

    def _encoder_failure(self, what: str) -> OutputError:
        """Stop the encoder (it exited or broke its pipe) and describe what it said."""
        assert self._encoder is not None
        self._encoder.kill()
        return OutputError(f"{what} for {self.path}: {self._encoder.error_message()}")

    def _timestamp(self, time: float) -> int:
        """Microseconds since the first frame, strictly increasing."""
        period_us = round(1e6 / self.frame_rate)
        if self._first_time is None:
            self._first_time = time
        time_us = round((time - self._first_time) * 1e6) + self._shift_us
        if time_us <= self._last_us:
            logger.warning("video timestamp went back at %.3f s; continuing after the last", time)
            self._shift_us += self._last_us + period_us - time_us
            time_us = self._last_us + period_us
        self._last_us = time_us
        return time_us

    def _start(self, height: int, width: int) -> None:
        self._size = (height, width)
        args = encoder_args(self._video, self.timescale, crf=self.crf, preset=self.preset)
        self._encoder = FfmpegProcess(args, stdin=subprocess.PIPE)
        try:
            self._encoder.process.stdin.write(MatroskaFrames.header(width, height))
        except BrokenPipeError as error:
            raise self._encoder_failure("cannot start the video encoder") from error

    def close(self) -> Path | None:
        """Finish the MP4 (add audio), rename it into place; ``None`` if no frame was written."""
        return self._finish_once(self._finish)

    def abort(self) -> Path | None:
        """Finish a playable MP4 of the frames written so far; log failures instead of raising."""
        return self._finish_once(self._finish_done)

    def _finish_done(self) -> Path | None:
        try:
            return self._finish()
        except (OutputError, OSError) as error:
            logger.warning("could not save the video written so far: %s", error_reason(error))
            return None

    def _finish(self) -> Path | None:
        """End the encoder, mux audio, rename; temporary files are removed whatever happens."""
        muxed = None
        try:
            if self._encoder is None or self.frames == 0:
                return None
            self._end_encoder()
            final = self._video
            if self.audio_codec is not None:
                muxed = temporary_path(self.path, ".mp4")
                added = add_audio(
                    self._video, self.audio_source, self.audio_codec, muxed,
                    start=self._first_time or 0.0, duration=self.duration, target=self.path,
                )  # fmt: skip
                final = muxed if added else self._video
            try:
                os.replace(final, self.path)
            except OSError as error:
                raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from error
            return self.path
        finally:
            if self._encoder is not None and self._encoder.running:
                self._encoder.kill()
            remove_quietly(self._video)
            if muxed is not None:
                remove_quietly(muxed)

    def _end_encoder(self) -> None:
        assert self._encoder is not None
        try:
            self._encoder.process.stdin.close()  # end of stream: ffmpeg writes the MP4 index
        except BrokenPipeError:
            logger.debug("encoder stdin already broken", exc_info=True)
        if self._encoder.wait() != 0:
            message = self._encoder.error_message()
            raise OutputError(f"video encoding failed for {self.path}: {message}")
