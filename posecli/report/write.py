"""Laying a :class:`~posecli.report.page.Report` out as one HTML page, and writing it.

The page is self-contained: CSS inline, every figure a ``data:image/png;base64`` URI, no script,
no link to fetch, so it opens offline and can be mailed as one file. Outputs are written under
a temporary name beside them and renamed when complete (:func:`posecli.io.files.write_atomically`),
and never replace an existing file without ``force`` (:func:`posecli.io.files.check_output`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path

import numpy as np

from posecli import __version__
from posecli.errors import UsageError
from posecli.io.files import check_output, write_atomically
from posecli.io.sinks import check_directory_files
from posecli.report.motion import PersonMotion
from posecli.report.page import Report, build_report
from posecli.report.tracks import read_tracks

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; } .row { display: flex; flex-wrap: wrap; gap: 1em; }
.note { color: #555; font-size: 0.9em; } footer { color: #888; font-size: 0.8em; margin: 3em 0; }
"""


def _image(name: str, png: bytes) -> str:
    """An ``<img>`` of ``png`` embedded as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'


def _summary(report: Report) -> str:
    """The summary table and the notes."""
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in report.summary
    )
    notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in report.notes)
    return f"<h2>Summary</h2><table>{rows}</table>{notes}"


def _people_table(people: list[PersonMotion]) -> str:
    """One row per tracked person, its id linking to its section."""
    if not people:
        return "<h2>People</h2><p>No tracked person in these tracks.</p>"
    head = (
        "<tr><th>id</th><th>frames</th><th>time on screen (s)</th><th>first seen (s)</th>"
        "<th>last seen (s)</th><th>mean score</th><th>keypoints found (mean %)</th></tr>"
    )
    rows = "".join(
        f'<tr><td><a href="#person-{m.track.track_id}">{m.track.track_id}</a></td>'
        f'<td class="num">{len(m.track.frames)}</td><td class="num">{m.seconds:.2f}</td>'
        f'<td class="num">{m.track.times[0]:.2f}</td><td class="num">{m.track.times[-1]:.2f}</td>'
        f'<td class="num">{np.mean(m.track.scores):.2f}</td>'
        f'<td class="num">{100 * np.mean(m.share):.0f}</td></tr>'
        for m in people
    )
    return f"<h2>People</h2><table>{head}{rows}</table>"


def _person(report: Report, motion: PersonMotion) -> str:
    """A person's section: time on screen, trajectory, keypoints found, joint angles."""
    track = motion.track
    stem = f"person_{track.track_id}"
    figures = {
        kind: report.figures.get(f"{stem}_{kind}.png") for kind in ("trajectory", "keypoints")
    }
    row = "".join(_image(f"{stem}_{kind}", png) for kind, png in figures.items() if png)
    angles = report.figures.get(f"{stem}_angles.png")
    return (
        f'<h2 id="person-{track.track_id}">Person {track.track_id}</h2>'
        f"<p>On screen {motion.seconds:.2f} s: {len(track.frames)} frames between "
        f"{track.times[0]:.2f} s and {track.times[-1]:.2f} s (frames {track.frames[0]}–"
        f"{track.frames[-1]}); mean score {np.mean(track.scores):.2f}.</p>"
        f'<div class="row">{row}</div>' + (_image(f"{stem}_angles", angles) if angles else "")
    )


def render_html(report: Report) -> str:
    """The whole page as one HTML5 document (UTF-8 text)."""
    sheet = report.figures.get("contact_sheet.png")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
        _summary(report),
    ]
    if sheet:
        parts.append("<h2>Contact sheet</h2>" + _image("contact_sheet", sheet))
    parts.append(_people_table(report.people))
    parts.extend(_person(report, motion) for motion in report.people)
    parts.append(f"<footer>Made by posecli {html.escape(__version__)}.</footer></body></html>")
    return "\n".join(parts) + "\n"


def check_report_outputs(
    tracks: Path,
    out: Path | None,
    png_dir: Path | None,
    *,
    force: bool,
    video: str | Path | None = None,
) -> None:
    """Fail before any work on outputs that cannot be written.

    Raises:
        UsageError: nothing to write, or ``out`` is the tracks file or the video.
        OutputError: ``out`` exists without ``force``, or is a folder; ``png_dir`` is a file.
    """
    if out is None and png_dir is None:
        raise UsageError("nothing to write: give --out REPORT.html and/or --png DIR")
    for what, path in {"tracks file": tracks, "video": video}.items():
        local = path is not None and "://" not in str(path)
        if out is not None and local and out.resolve() == Path(path).resolve():
            raise UsageError(f"--out {out} is the {what} itself")
    if out is not None:
        check_output(out, force=force)
    if png_dir is not None:
        check_output(png_dir, force=force, directory=True)


def write_report_html(report: Report, path: str | Path, *, force: bool = False) -> Path:
    """Write the page of ``report`` to ``path`` atomically; returns ``path``.

    Raises:
        OutputError: ``path`` exists without ``force``, or cannot be written.
    """
    path = Path(path)
    check_output(path, force=force)
    return write_atomically(path, render_html(report).encode("utf-8"))


def write_figures(report: Report, directory: str | Path, *, force: bool = False) -> list[Path]:
    """Write every figure of ``report`` as a PNG file into ``directory`` (created if needed).

    Raises:
        OutputError: one of the files exists without ``force`` (checked before any is
            written), or cannot be written.
    """
    directory = Path(directory)
    check_output(directory, force=force, directory=True)
    check_directory_files(directory, report.figures, force=force)
    return [write_atomically(directory / name, png) for name, png in report.figures.items()]


def make_report(
    tracks: str | Path,
    *,
    out: str | Path | None = None,
    png_dir: str | Path | None = None,
    video: str | Path | None = None,
    smooth: bool = True,
    sheet_count: int = 12,
    force: bool = False,
    threshold: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Report, list[Path]]:
    """``posecli report``: read ``tracks``, build the report, write the page and/or the PNGs.

    Outputs are checked before any work; returns the report and the paths written (the page
    first). ``threshold`` and ``progress``: see :func:`~posecli.report.page.build_report`.

    Raises:
        UsageError: nothing to write, an output is the tracks file, ``sheet_count`` < 0.
        TracksFileError: ``tracks`` is unreadable, empty or not a posecli track file.
        InputError: ``video`` cannot be read or is not the tracks' video.
        OutputError: an output exists without ``force`` or cannot be written.
        ReportDependencyError: matplotlib is missing.
    """
    tracks = Path(tracks)
    out = None if out is None else Path(out)
    png_dir = None if png_dir is None else Path(png_dir)
    if sheet_count < 0:
        raise UsageError(f"--frames must be at least 0, got {sheet_count}")
    check_report_outputs(tracks, out, png_dir, force=force, video=video)
    report = build_report(
        read_tracks(tracks), video=video, smooth=smooth, sheet_count=sheet_count,
        threshold=threshold, progress=progress,
    )  # fmt: skip
    written = [] if out is None else [write_report_html(report, out, force=force)]
    if png_dir is not None:
        written.extend(write_figures(report, png_dir, force=force))
    return report, written
