"""The report: a summary, a contact sheet and per-person figures, as one self-contained HTML page.

:func:`build_report` measures and draws everything (figures as PNG bytes); :func:`render_html`
(in :mod:`posecli.report.write`) lays the page out, every figure embedded as a
``data:image/png;base64`` URI, and :func:`~posecli.report.write.write_report_html` and
:func:`~posecli.report.write.write_figures` write it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from posecli.io.draw import DEFAULT_DRAW_THRESHOLD
from posecli.pose import Frame
from posecli.report.figures import (
    angles_figure,
    contact_sheet_figure,
    figure_png,
    keypoint_share_figure,
    require_matplotlib,
    trajectory_figure,
)
from posecli.report.motion import PersonMotion, person_motion
from posecli.report.sheet import check_video, sheet_caption, sheet_frames, sheet_image
from posecli.report.tracks import TrackFile, person_tracks


@dataclass
class Report:
    """Everything the page shows.

    Attributes:
        title: the page's title.
        summary: ``(label, value)`` rows of the summary table.
        people: one :class:`PersonMotion` per tracked person, by id.
        figures: file name (``contact_sheet.png``, ``person_3_angles.png``…) → PNG bytes, in
            page order.
        notes: one-line remarks shown under the summary (skipped lines, smoothing…).
    """

    title: str
    summary: list[tuple[str, str]]
    people: list[PersonMotion]
    figures: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _interval(tracks: TrackFile) -> float:
    """Seconds per frame record: the median step of the times, else 1 / fps, else 0."""
    fps = tracks.fps
    return tracks.frame_interval or (1.0 / fps if fps else 0.0)


def _options_text(options: object) -> str:
    """The header's ``options`` as ``key=value, …`` (JSON values)."""
    if isinstance(options, dict):
        return ", ".join(f"{key}={json.dumps(value)}" for key, value in options.items()) or "none"
    return "not recorded" if options is None else json.dumps(options)


def summary_rows(tracks: TrackFile, people: list[PersonMotion]) -> list[tuple[str, str]]:
    """The summary table of ``tracks``: people, frames, fps, model, options, size, span."""
    header = tracks.header or {}
    fps = tracks.fps
    declared = isinstance(header.get("fps"), (int, float))
    untracked = sum(p.track_id is None for frame in tracks.frames for p in frame.poses)
    width, height = tracks.size
    first, last = tracks.frames[0], tracks.frames[-1]
    model = header.get("model")
    model_text = "not recorded (no header)" if model is None else str(model)
    if header.get("model_name") not in (None, model):
        model_text += f" ({header['model_name']})"
    if header.get("refiner_name"):
        model_text += f", refined by {header['refiner_name']}"
    return [
        ("tracks file", str(tracks.path)),
        ("source", str(header.get("source", "not recorded"))),
        ("people tracked", str(len(people))),
        ("untracked detections", str(untracked)),
        ("frames", f"{len(tracks.frames)} records (frames {first.index}–{last.index})"),
        ("time", f"{first.time:.2f}–{last.time:.2f} s"),
        ("fps", "unknown" if fps is None else f"{fps:.3g}" + ("" if declared else " (estimated)")),
        ("frame size", f"{width}×{height} px"),
        ("model", model_text),
        ("options", _options_text(header.get("options"))),
        ("made by", str(header.get("posecli", "not recorded"))),
    ]


def _contact_sheet(
    chosen: list[Frame],
    video: str | Path | None,
    columns: int,
    threshold: float,
    tick: Callable[[], None],
) -> bytes:
    """The contact sheet of the records ``chosen`` as PNG bytes; ``tick()`` after each picture
    and after the sheet."""
    images = []
    for frame in chosen:
        images.append(sheet_image(frame, video, threshold=threshold))
        tick()
    captions = [sheet_caption(frame) for frame in chosen]
    sheet = figure_png(contact_sheet_figure(images, captions, columns), dpi=120)
    tick()
    return sheet


def _ticker(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None]:
    """``tick()``: one more of ``total`` steps done, told to ``progress(done, total)``."""
    steps = iter(range(1, total + 1))
    return lambda: progress(next(steps), total) if progress is not None else None


def keypoint_threshold(tracks: TrackFile, explicit: float | None = None) -> float:
    """The score a keypoint must pass to count as found: ``explicit``, else the
    ``draw_threshold`` the tracks were made with (their header's options), else
    ``posecli.io.draw.DEFAULT_DRAW_THRESHOLD``."""
    if explicit is not None:
        return explicit
    options = (tracks.header or {}).get("options")
    recorded = options.get("draw_threshold") if isinstance(options, dict) else None
    number = isinstance(recorded, (int, float)) and not isinstance(recorded, bool)
    if number and 0 <= recorded <= 1:  # type: ignore[operator]
        return float(recorded)  # type: ignore[arg-type]
    return DEFAULT_DRAW_THRESHOLD


def already_smoothed(tracks: TrackFile) -> bool:
    """Whether the header says the keypoints were One-Euro smoothed when the tracks were made."""
    options = (tracks.header or {}).get("options")
    return isinstance(options, dict) and options.get("smooth") is True


def build_report(
    tracks: TrackFile,
    *,
    video: str | Path | None = None,
    smooth: bool = True,
    sheet_count: int = 12,
    sheet_columns: int = 4,
    threshold: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Measure every tracked person of ``tracks`` and draw the figures.

    Args:
        video: the video the tracks were made from, for the contact sheet (else skeletons on
            a blank canvas of the frame size).
        smooth: One-Euro smooth the keypoints before measuring angles, as ``--smooth`` does
            (not again when the header says the tracks were made with ``--smooth``).
        sheet_count: frames on the contact sheet (0: none); ``sheet_columns`` per row.
        threshold: keypoints scored at or below it are not found: not drawn, not counted in
            the keypoints found, no angle (``None``: :func:`keypoint_threshold`).
        progress: ``progress(done, total)`` after each picture and figure.

    Raises:
        InputError: ``video`` cannot be read or is not the tracks' video.
        ReportDependencyError: matplotlib is missing.
    """
    require_matplotlib()  # before any work
    if video is not None and sheet_count > 0:
        check_video(video, *tracks.size)
    interval, threshold = _interval(tracks), keypoint_threshold(tracks, threshold)
    smooth_here = smooth and not already_smoothed(tracks)
    people = [
        person_motion(track, interval, smooth=smooth_here, threshold=threshold)
        for track in person_tracks(tracks.frames)
    ]
    report = Report(f"posecli report: {tracks.path.name}", summary_rows(tracks, people), people)
    report.summary.append(("keypoints found", f"scored above {threshold:g}"))
    report.notes = _notes(tracks, smooth, smooth_here)
    chosen = sheet_frames(tracks.frames, sheet_count)
    tick = _ticker(progress, len(chosen) + bool(chosen) + 3 * len(people))
    if chosen:
        sheet = _contact_sheet(chosen, video, sheet_columns, threshold, tick)
        report.figures["contact_sheet.png"] = sheet
    width, height = tracks.size
    for motion in people:
        figures = (
            ("trajectory", trajectory_figure, (width, height, interval)),
            ("angles", angles_figure, (interval,)),
            ("keypoints", keypoint_share_figure, ()),
        )
        for kind, draw, args in figures:
            png = figure_png(draw(motion, *args))
            report.figures[f"person_{motion.track.track_id}_{kind}.png"] = png
            tick()
    return report


def _notes(tracks: TrackFile, smooth: bool, smooth_here: bool) -> list[str]:
    """One-line remarks: skipped lines, a missing header, how the angles were smoothed."""
    notes = []
    if tracks.skipped:
        notes.append(f"{tracks.skipped} incomplete or invalid line(s) skipped (e.g. cut short).")
    if tracks.header is None:
        notes.append("The tracks file has no header: fps is estimated; model, options unknown.")
    if smooth and not smooth_here:
        notes.append("Keypoints were smoothed when the tracks were made: not smoothed again.")
    elif smooth_here:
        notes.append("Joint angles are measured on One-Euro smoothed keypoints (as --smooth).")
    return notes
