"""The account of a batch job: each input's end, progress as inputs finish, and the summary
(``DIR/batch_summary.json`` and the lines ``posecli batch`` prints)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from posecli.errors import BatchFailedError


@dataclass(frozen=True)
class InputResult:
    """One input's end: its outputs (strings, so that Ray carries it as it is), or an error."""

    input: str
    outputs: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class BatchProgress:
    """Inputs finished so far (``done`` includes ``failed``) of ``total``."""

    done: int
    failed: int
    total: int


BatchProgressCallback = Callable[[BatchProgress], None]


@dataclass
class BatchSummary:
    """A job's end: inputs done and failed (with errors), skipped as done before, seconds;
    whether Ctrl-C or SIGTERM ``interrupted`` it; the inputs it did not finish when it stopped
    early (``pending``)."""

    done: list[InputResult] = field(default_factory=list)
    failed: list[InputResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    pending: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``batch_summary.json`` record."""
        return {
            "done": [asdict(result) for result in self.done],
            "failed": [{"input": r.input, "error": r.error} for r in self.failed],
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "pending": self.pending,
        }

    def lines(self) -> list[str]:
        """The summary as ``posecli batch`` prints it: one line per failed input, then totals."""
        lines = [f"failed: {result.input}: {result.error}" for result in self.failed]
        counts = f"{len(self.done)} inputs done, {len(self.failed)} failed"
        resumed = f", {len(self.skipped)} skipped (done before)" if self.skipped else ""
        return [*lines, f"{counts}{resumed} in {self.seconds:.1f} s"]

    def check(self, summary_path: Path) -> None:
        """BatchFailedError (exit 1) when an input failed."""
        if self.failed:
            total = len(self.failed) + len(self.done)
            raise BatchFailedError(f"{len(self.failed)} of {total} inputs failed: {summary_path}")


class Tally:
    """The inputs finished so far, reported to the progress callback as they come."""

    def __init__(self, total: int, progress: BatchProgressCallback | None) -> None:
        self.total, self.progress = total, progress
        self.done: list[InputResult] = []
        self.failed: list[InputResult] = []
        self.report()

    def add(self, results: Sequence[InputResult]) -> None:
        for result in results:
            (self.failed if result.error is not None else self.done).append(result)
        self.report()

    def report(self, passing: int = 0) -> None:
        """Call the progress callback; ``passing``: inputs done but not yet added."""
        if self.progress is not None:
            finished = len(self.done) + len(self.failed) + passing
            self.progress(BatchProgress(finished, len(self.failed), self.total))

    def summary(self, inputs: Sequence[str], skipped: Sequence[str], seconds: float,
                stop: BaseException | None = None) -> BatchSummary:  # fmt: skip
        """The summary of a job that was to run ``inputs``; ``stop``: what ended it early."""
        finished = {result.input for result in (*self.done, *self.failed)}
        pending = [name for name in inputs if name not in finished] if stop else []
        interrupted = isinstance(stop, KeyboardInterrupt)
        return BatchSummary(list(self.done), list(self.failed), list(skipped), seconds,
                            interrupted, pending)  # fmt: skip
