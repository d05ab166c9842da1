"""Progress of long commands on stderr: a rich bar on a terminal, plain lines elsewhere.

Part of the command line (``posecli.cli``, the only package importing rich). On a terminal
a live bar shows the count, speed, elapsed time and ETA. When stderr is not a terminal (nohup,
cron, a batch scheduler, a pipe into a log file) a bar would show nothing until the end, so one
plain line is written every :data:`PLAIN_INTERVAL_SECONDS` instead::

    video: 120/900 frames (13%), 12.3 fps, elapsed 0:00:10, ETA 0:01:03

A display whose work ends normally is completed: its count is the number of items done, and
its total that count too when the total was an estimate (a video's frame count) or items were
skipped (counted as done: an unreadable image). After Ctrl-C the bar stays as it was, showing
how far the run got; a failed command's bar is erased, its error being one line.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from posecli.pipeline import PipelineProgress

#: Seconds between two plain progress lines (stderr not a terminal); the first comes after one.
PLAIN_INTERVAL_SECONDS = 10.0

#: ``update(completed=, total=, **fields)``: what a progress display yields.
Update = Callable[..., None]


class _FpsColumn(ProgressColumn):
    """Frames per second of the run so far (``PipelineProgress.fps``: the summary's figure)."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("fps")
        return Text(f"{speed:5.1f} fps" if speed else "  ... fps", style="progress.data.speed")


class _FieldsColumn(ProgressColumn):
    """The task's extra fields but ``fps``, as ``name value`` (a training loss…)."""

    def render(self, task: Task) -> Text:
        shown = {name: value for name, value in task.fields.items() if name != "fps"}
        return Text(" ".join(f"{name} {value}" for name, value in shown.items()))


#: The columns of a progress bar: what it counts, extra fields, then how fast and how long.
_COUNT = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
_TIMES = (TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


def _clock(seconds: float) -> str:
    """``H:MM:SS`` of a duration in seconds."""
    return str(timedelta(seconds=max(0, round(seconds))))


class PlainProgress:
    """Progress as one plain line every ``interval`` seconds (see the module docstring).

    ``unit`` names what is counted (``frames``, ``images``, ``inputs``…); a ``fps`` field is
    the speed shown for frames, else the speed is counted here (items done per second).
    """

    def __init__(
        self,
        console: Console,
        description: str,
        unit: str,
        *,
        interval: float = PLAIN_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console, self.description, self.unit = console, description, unit
        self.interval, self.clock = interval, clock
        self.started = self.last_line = clock()
        self.completed, self.total = 0, None
        self.fields: dict[str, Any] = {}

    def update(self, *, completed: int | None = None, total: int | None = None, **fields) -> None:
        """Record the state; write a line when ``interval`` seconds passed since the last."""
        self.completed = self.completed if completed is None else completed
        self.total = self.total if total is None else total
        self.fields.update(fields)
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self.console.print(self.line(now - self.started), markup=False, highlight=False)

    def line(self, elapsed: float) -> str:
        """``video: 120/900 frames (13%), 12.3 fps, elapsed 0:00:10, ETA 0:01:03``."""
        done, total = self.completed, self.total
        count = f"{done}/{total} {self.unit}" if total else f"{done} {self.unit}"
        if total:
            count += f" ({100 * done / total:.0f}%)"
        rate = self.fields.get("fps") or (done / elapsed if elapsed > 0 else 0.0)
        speed = f"{rate:.1f} fps" if self.unit == "frames" else f"{rate:.2f} {self.unit}/s"
        extra = [f"{name} {value}" for name, value in self.fields.items() if name != "fps"]
        parts = [f"{self.description}: {count}", *extra, speed, f"elapsed {_clock(elapsed)}"]
        if total and rate > 0:
            parts.append(f"ETA {_clock((total - done) / rate)}")
        return ", ".join(parts)


@contextmanager
def progress_display(
    console: Console,
    description: str,
    quiet: bool,
    *,
    unit: str = "items",
    columns: Sequence[ProgressColumn] = (),
    **fields: Any,
) -> Iterator[Update]:
    """A progress display on ``console``; yields ``update(completed=, total=, **fields)``.

    A rich bar (:data:`_COUNT`, ``columns``, :data:`_TIMES`) on a terminal, else
    :class:`PlainProgress` lines. Quiet: ``update`` does nothing.
    """
    if quiet:
        yield lambda **changes: None
        return
    if not console.is_terminal:
        plain = PlainProgress(console, description, unit, interval=PLAIN_INTERVAL_SECONDS)
        plain.fields.update(fields)
        yield plain.update
        return
    with Progress(*_COUNT, *columns, *_TIMES, console=console) as progress:
        task = progress.add_task(description, total=None, **fields)
        try:
            yield functools.partial(progress.update, task)
        except Exception:
            progress.live.transient = True
            raise


@contextmanager
def counted_progress(
    console: Console, description: str, quiet: bool, unit: str, **fields: Any
) -> Iterator[Update]:
    """A display over ``unit`` (inputs, steps, figures…): ``update(completed=, total=, **fields)``
    whose extra fields show beside the bar (``loss``); completed when the work ends normally."""
    columns = (_FieldsColumn(),) if fields else ()
    display = progress_display(console, description, quiet, unit=unit, columns=columns, **fields)
    with display as update:
        state: dict[str, int | None] = {"completed": 0, "total": None}

        def record(**changes: Any) -> None:
            state.update({k: v for k, v in changes.items() if k in state and v is not None})
            update(**changes)

        yield record
        done = state["completed"] or 0
        if state["total"] is not None and done < state["total"]:
            update(completed=done, total=done)


@contextmanager
def frame_progress(
    console: Console,
    description: str,
    quiet: bool,
    *,
    unit: str = "frames",
    skipped: Callable[[], int] = lambda: 0,
) -> Iterator[Callable[[PipelineProgress], None]]:
    """A display over a pipeline's frames (count, fps, ETA); yields its progress callback.

    ``skipped()`` counts the inputs passed over (unreadable images): they count as done, so a
    run that skipped some ends at its total. At the normal end the count is that of the
    frames done, and so is the total (a video's frame count is an estimate).
    """
    columns = (_FpsColumn(),)
    with progress_display(console, description, quiet, unit=unit, columns=columns) as update:
        written = [0]

        def on_frame(state: PipelineProgress) -> None:
            written[0] = state.frames
            update(completed=state.frames + skipped(), total=state.total, fps=state.fps)

        yield on_frame
        done = written[0] + skipped()
        update(completed=done, total=done)


#: ``progress(done, total)``: the library's progress callback (batch, label, report, export).
Steps = Callable[[int, int], None]


@contextmanager
def step_progress(console: Console, description: str, quiet: bool, unit: str) -> Iterator[Steps]:
    """:func:`counted_progress` driven by a library callback ``progress(done, total)``."""
    with counted_progress(console, description, quiet, unit) as update:
        yield lambda done, total: update(completed=done, total=total)


@contextmanager
def training_progress(
    console: Console, quiet: bool, say: Callable[[str], None]
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Progress over optimiser steps with the loss, from the trainer's records
    (``start``, ``batch``); each validation's AP goes to ``say``."""
    with counted_progress(console, "train", quiet, "steps", loss="...") as update:

        def on_record(record: dict[str, Any]) -> None:
            event = record.get("event")
            if event == "start":
                update(total=record["total_steps"], completed=record["step"])
            elif event == "batch":
                update(completed=record["step"], loss=f"{record['loss']:.4g}")
            elif event == "val":
                scores = " ".join(f"{key} {record[key]:.3f}" for key in ("AP", "AP50", "AR"))
                say(f"epoch {record.get('epoch')}: {scores}")

        yield on_record
