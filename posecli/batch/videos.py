"""The videos of a batch job: each through the ``video`` command's path into a staging folder,
renamed into ``DIR`` when done (here, or in a Ray worker process)."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from posecli import inference, streams
from posecli.batch.plan import VideoJob, VideoSettings
from posecli.batch.summary import InputResult
from posecli.errors import OutputError, PoseCliError
from posecli.inference import InferenceOptions
from posecli.io.files import error_reason, move_into_place

if TYPE_CHECKING:
    from posecli.estimator import Estimator


def track_video(
    job: VideoJob,
    estimator: Estimator,
    options: InferenceOptions,
    settings: VideoSettings,
    staging: Path,
) -> InputResult:
    """Track one video as ``posecli video`` does (the same source, header and sinks) into a
    folder of its own in ``staging``, then rename the outputs into place (tracks last); an error
    of this input (``PoseCliError``) is returned, its files removed."""
    from posecli.io.sources import VideoSource

    source = str(job.source)
    attempt = Path(tempfile.mkdtemp(prefix=f"{job.tracks.stem}.{os.getpid()}-", dir=staging))
    staged = job.staged(attempt)
    try:
        range_ = {"start": settings.start, "end": settings.end, "every": settings.every}
        with VideoSource(source, **range_) as frames:
            header = streams.tracks_header("video", source, frames.info, estimator, options,
                                        **settings.header())  # fmt: skip
            streams.track_stream(frames, estimator, staged, smooth=settings.smooth, force=True,
                              video_info=frames.info, header=header,
                              draw_threshold=settings.draw_threshold)  # fmt: skip
        for output in job.outputs():
            move_output(attempt / output.name, output)
    except PoseCliError as error:
        return InputResult(source, error=str(error))
    finally:
        shutil.rmtree(attempt, ignore_errors=True)
    return InputResult(source, tuple(str(path) for path in job.outputs()))


def move_output(staged: Path, final: Path) -> None:
    """Rename a complete staged file or folder into place; a folder already there (``--force``)
    is replaced.

    Raises:
        OutputError: the rename failed.
    """
    if staged.is_dir() and final.is_dir():
        try:
            shutil.rmtree(final)
        except OSError as error:
            raise OutputError(f"cannot replace {final}: {error_reason(error)}") from error
    move_into_place(staged, final)


@functools.lru_cache(maxsize=1)
def worker_estimator(options: InferenceOptions) -> Estimator:
    """The model of a Ray worker process, loaded on its first video and kept for the next."""
    return inference.load_estimator(options)


def video_task(
    job: VideoJob, options: InferenceOptions, settings: VideoSettings, staging: Path
) -> InputResult:
    """A video on a Ray worker (the remote function of ``posecli.batch.cluster``)."""
    try:
        estimator = worker_estimator(options)
    except PoseCliError as error:
        return InputResult(str(job.source), error=str(error))
    return track_video(job, estimator, options, settings, staging)
