"""Reading ``posecli video --json`` track files back: frames, an optional header, people.

A track file is one JSON object per line (:func:`posecli.pose.frame_to_track_line`): ``frame``,
``time`` (seconds), ``width`` and ``height`` (pixels of the upright frame) and ``people`` (track
``id``, 17 × ``[x, y, score]`` COCO keypoints in image pixels, x right, y down, ``bbox``,
``score``). Its first line may be a header record, ``{"header": {...}}``, saying how the tracks
were made (``fps``, ``model``, ``options``…, see :data:`HEADER_KEY`); files without one are read
as well, and what the header would say is then estimated from the frames where it can be.

An interrupted run may leave a last line cut short: lines that are not complete records are
skipped and counted, never fatal, as long as the file holds at least one frame record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posecli.errors import InputError
from posecli.pose import Frame, Pose
from posecli.spec import NUM_COCO_KEYPOINTS

#: The key of the header record, the only key of a first line ``{"header": {...}}``.
HEADER_KEY = "header"


class TracksFileError(InputError):
    """A track file is missing, empty, unreadable or not a posecli track file (exit code 1)."""


@dataclass
class TrackFile:
    """The complete records of a track file.

    Attributes:
        path: the file read.
        header: the header record's object (``None`` when the file has none).
        frames: one :class:`~posecli.pose.Frame` per complete frame record, in file order;
            poses in image pixels, COCO-17 order, ``track_id`` ``None`` for untracked people.
        skipped: lines that were not complete records (a truncated last line, garbage).
    """

    path: Path
    header: dict | None
    frames: list[Frame]
    skipped: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels of the first frame."""
        return self.frames[0].width, self.frames[0].height

    @property
    def frame_interval(self) -> float:
        """Median time in seconds between consecutive frame records (0 for one frame)."""
        times = np.array([frame.time for frame in self.frames], dtype=np.float64)
        steps = np.diff(times)
        steps = steps[steps > 0]
        return float(np.median(steps)) if len(steps) else 0.0

    @property
    def fps(self) -> float | None:
        """The video's frame rate: the header's ``fps``, else estimated from the frames as the
        median of frame-index steps over time steps (``None`` when it cannot be)."""
        declared = (self.header or {}).get("fps")
        if isinstance(declared, (int, float)) and declared > 0 and math.isfinite(declared):
            return float(declared)
        return estimated_fps(self.frames)


def estimated_fps(frames: list[Frame]) -> float | None:
    """Frames per second of the source video, from ``frame`` indices and ``time`` (s):
    median of Δindex / Δtime over consecutive records (``--every N`` steps included)."""
    rates = [
        (b.index - a.index) / (b.time - a.time)
        for a, b in zip(frames, frames[1:], strict=False)
        if b.time > a.time and b.index > a.index
    ]
    return float(np.median(rates)) if rates else None


def read_tracks(path: str | Path) -> TrackFile:
    """Read a track file written by ``posecli video --json`` (or ``webcam --json``).

    Raises:
        TracksFileError: the file cannot be read, holds no complete frame record, or its first
            record is not a posecli one (header or frame line).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as error:
        raise TracksFileError(f"cannot read {path}: {error.strerror or error}") from error
    header, frames, skipped = None, [], 0
    lines = [line for line in text.splitlines() if line.strip()]
    for number, line in enumerate(lines):
        record = _parse(line)
        if number == 0 and isinstance(record, dict) and _is_header(record):
            header = record[HEADER_KEY]
        elif (frame := _frame(record)) is not None:
            frames.append(frame)
        elif number == 0 and record is not None and len(lines) > 1:
            raise TracksFileError(f"{path} is not a posecli track file (its first line is not)")
        else:
            skipped += 1
    if not frames:
        raise TracksFileError(_no_frames_message(path, lines, header is not None))
    return TrackFile(path, header, frames, skipped)


def _no_frames_message(path: Path, lines: list[str], has_header: bool) -> str:
    """Why a file with no frame record is refused, in one line."""
    if not lines:
        return f"{path} is empty: no track lines"
    if has_header:
        return f"{path} has a header but no frame record"
    if len(lines) == 1 and _parse(lines[0]) is None:
        return f"{path} holds no complete track line (its only line is cut short)"
    return f"{path} is not a posecli track file"


def _parse(line: str) -> object | None:
    """The JSON value of ``line``, or ``None`` when it is not JSON (cut short, garbage)."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def _is_header(record: dict) -> bool:
    """Whether ``record`` is the header record ``{"header": {...}}``."""
    return HEADER_KEY in record and isinstance(record[HEADER_KEY], dict) and "frame" not in record


def _integer(value: object, minimum: int) -> bool:
    """Whether ``value`` is a JSON integer ≥ ``minimum`` (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _number(value: object) -> bool:
    """Whether ``value`` is a finite JSON number (not a boolean)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pose(person: object) -> Pose | None:
    """The :class:`Pose` of one ``people`` entry, or ``None`` when it is not a valid one."""
    if not isinstance(person, dict) or not _number(person.get("score")):
        return None
    track_id = person.get("id", None)
    if track_id is not None and not _integer(track_id, 1):
        return None
    try:
        keypoints = np.array(person.get("keypoints"), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if keypoints.shape != (NUM_COCO_KEYPOINTS, 3) or not np.isfinite(keypoints).all():
        return None
    return Pose(keypoints, float(person["score"]), track_id)


def _frame(record: object) -> Frame | None:
    """The :class:`Frame` of a frame record, or ``None`` when ``record`` is not one: ``frame``
    an integer ≥ 0, ``time`` a number, ``width`` and ``height`` integers ≥ 1, ``people`` a list
    of ``{"id", "keypoints": 17 × [x, y, score], "score"}`` (other fields are ignored)."""
    if not isinstance(record, dict) or not isinstance(record.get("people"), list):
        return None
    if not _integer(record.get("frame"), 0) or not _number(record.get("time")):
        return None
    if not _integer(record.get("width"), 1) or not _integer(record.get("height"), 1):
        return None
    poses = [_pose(person) for person in record["people"]]
    if any(pose is None for pose in poses):
        return None
    return Frame(record["frame"], float(record["time"]), record["width"], record["height"], poses)


@dataclass
class PersonTrack:
    """The frames one tracked person was shown in.

    Attributes:
        track_id: the person's id (≥ 1).
        frames: ``(T,)`` int frame indices, increasing.
        times: ``(T,)`` float64 seconds.
        keypoints: ``(T, 17, 3)`` float64 ``[x, y, score]``, image pixels, COCO order; a
            keypoint not found has score 0.
        scores: ``(T,)`` person confidences in [0, 1].
    """

    track_id: int
    frames: np.ndarray
    times: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray


def person_tracks(frames: list[Frame]) -> list[PersonTrack]:
    """Group the tracked poses of ``frames`` by id (untracked people are left out), by id."""
    grouped: dict[int, list[tuple[Frame, Pose]]] = {}
    for frame in frames:
        for pose in frame.poses:
            if pose.track_id is not None:
                grouped.setdefault(pose.track_id, []).append((frame, pose))
    return [
        PersonTrack(
            track_id,
            np.array([frame.index for frame, _ in seen], dtype=np.int64),
            np.array([frame.time for frame, _ in seen], dtype=np.float64),
            np.array([pose.keypoints for _, pose in seen], dtype=np.float64),
            np.array([pose.score for _, pose in seen], dtype=np.float64),
        )
        for track_id, seen in sorted(grouped.items())
    ]
