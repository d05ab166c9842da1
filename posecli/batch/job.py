"""Running a batch job: one job per ``DIR`` (a lock), the staging folder, the inputs here or on
Ray, and the summary written however the job ends (failures, Ctrl-C, SIGTERM)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from posecli import inference
from posecli.batch.cluster import Cluster, run_on_ray
from posecli.batch.images import detect_rows, image_rows, staged_openpose, write_images
from posecli.batch.plan import BatchPlan
from posecli.batch.summary import BatchProgressCallback, BatchSummary, InputResult, Tally
from posecli.batch.videos import track_video
from posecli.errors import OutputError, PoseCliError
from posecli.inference import InferenceOptions
from posecli.io.files import check_output, error_reason, remove_quietly, write_atomically

#: The job's report, beside the outputs.
SUMMARY_NAME = "batch_summary.json"

#: Hidden file in ``DIR`` whose lock the job holds; removed at its end.
LOCK_NAME = ".posecli-batch.lock"


logger = logging.getLogger(__name__)


@contextmanager
def batch_lock(out_dir: Path) -> Iterator[None]:
    """One job per ``out_dir``: hold the lock of ``DIR/.posecli-batch.lock`` in the block
    (``DIR`` created if missing, and removed again if the block left it empty). The operating
    system releases the lock of a job killed in any way, so a stopped job never leaves ``DIR``
    locked; the file is removed at the end.

    Raises:
        OutputError: another job holds the lock, or the lock file cannot be made.
    """
    created = not out_dir.exists()
    check_output(out_dir, force=True, directory=True)
    path = out_dir / LOCK_NAME
    descriptor = _lock_file(path)
    try:
        yield
    finally:
        remove_quietly(path)  # before unlocking: a job that opened it meanwhile tries again
        os.close(descriptor)
        if created:
            with contextlib.suppress(OSError):  # not empty: the job's outputs
                out_dir.rmdir()


def _lock_file(path: Path) -> int:
    """The open, exclusively locked ``path`` (the file that is there, not one removed)."""
    import fcntl

    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise OutputError(f"cannot lock {path}: {error_reason(error)}") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if isinstance(error, BlockingIOError):
                raise OutputError(
                    f"another posecli batch job is writing into {path.parent} (one job per "
                    "folder at a time)"
                ) from None
            raise OutputError(f"cannot lock {path}: {error_reason(error)}") from error
        try:
            if os.path.samestat(os.fstat(descriptor), os.stat(path)):
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)  # the job that held it removed it: lock the new one


def run_batch(
    plan: BatchPlan,
    options: InferenceOptions,
    cluster: Cluster | None = None,
    *,
    progress: BatchProgressCallback | None = None,
) -> BatchSummary:
    """Run ``plan`` here (``cluster`` ``None``) or on Ray; call it inside :func:`batch_lock` of its
    folder. ``DIR/batch_summary.json`` is written however the job ends: when it stops early
    (Ctrl-C or SIGTERM: ``interrupted``; an error) with the inputs not finished (``pending``),
    before the interrupt or error goes on.

    Returns:
        The summary; the CLI exits 1 when ``summary.failed`` (:meth:`BatchSummary.check`).
    """
    started, since = time.perf_counter(), time.time()
    tally = Tally(plan.total, progress)
    stop: BaseException | None = None
    try:
        shutil.rmtree(plan.staging, ignore_errors=True)  # a killed job's leftovers
        plan.staging.mkdir()
        if cluster is None or cluster.address is None:
            _run_here(plan, options, tally)
        else:
            run_on_ray(plan, options, cluster, tally)
    except BaseException as error:  # Ctrl-C and SIGTERM (KeyboardInterrupt) included
        stop = error
        raise
    finally:
        shutil.rmtree(plan.staging, ignore_errors=True)
        seconds = time.perf_counter() - started
        if stop is not None:
            tally.add(_placed(plan, tally, since))
        summary = tally.summary(plan.inputs(), plan.skipped, seconds, stop)
        _write_summary(plan.out_dir / SUMMARY_NAME, summary, stopped=stop is not None)
    return summary


def _placed(plan: BatchPlan, tally: Tally, since: float) -> list[InputResult]:
    """The videos not in ``tally`` whose outputs were all renamed into place since ``since``
    (wall clock, the job's start): done, though the job stopped between their last rename and
    their tally (a SIGTERM then). Outputs of an earlier run are older."""
    recorded = {result.input for result in (*tally.done, *tally.failed)}
    return [
        InputResult(str(job.source), tuple(str(path) for path in job.outputs()))
        for job in plan.videos
        if str(job.source) not in recorded and all(_written_since(p, since) for p in job.outputs())
    ]


def _written_since(path: Path, since: float) -> bool:
    """Whether ``path`` exists and was last modified at or after ``since`` (``time.time()``)."""
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False


def _write_summary(path: Path, summary: BatchSummary, *, stopped: bool) -> None:
    """Write ``batch_summary.json``; for a job that stopped early a failure is logged, so that
    the reason it stopped is what the user sees."""
    body = json.dumps(summary.to_dict(), indent=2) + "\n"
    try:
        write_atomically(path, body.encode())
    except PoseCliError as error:
        if not stopped:
            raise
        logger.warning("%s", error)


def _run_here(plan: BatchPlan, options: InferenceOptions, tally: Tally) -> None:
    """Every input in this process, one after the other, one model."""
    estimator = inference.load_estimator(options)
    if plan.images is not None:
        openpose = staged_openpose(plan.images, plan.staging)
        columns = detect_rows(estimator, image_rows(plan.images), openpose,
                              lambda state: tally.report(state.frames))  # fmt: skip
        tally.add(write_images(plan.images, columns, plan.staging))
    for job in plan.videos:
        tally.add([track_video(job, estimator, options, plan.settings, plan.staging)])
