"""Still-image runs: their outputs (COCO results and image listing, annotated copies, OpenPose
folder, CSV) checked before the model loads, and images run through the pipeline into them.

The pipeline (and with it torch) is imported when images run, so that importing the command
line stays fast. Library code: errors are ``PoseCliError`` subclasses, progress goes through
callbacks, nothing is printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posecli.errors import OutputClosedError, UsageError
from posecli.io.draw import DEFAULT_DRAW_THRESHOLD, draw_poses
from posecli.io.files import written_through
from posecli.io.sinks import (
    CocoResultsSink,
    CsvSink,
    ImageDirectorySink,
    OpenPoseSink,
    check_directory_files,
)
from posecli.outputs import check_outputs, check_standard_output, same_file, write_json_atomically

if TYPE_CHECKING:
    from posecli.estimator import Estimator
    from posecli.io.sources import ImageSource
    from posecli.pipeline import DrawFunction, FrameSink, PipelineStats, ProgressCallback


@dataclass(frozen=True)
class ImageOutputs:
    """What an image run writes: COCO results (+ listing), annotated copies, OpenPose folder,
    CSV table."""

    results: Path | None = None
    annotated: Path | None = None
    openpose: Path | None = None
    list_images: bool = True  # write the listing beside the results
    table: Path | None = None

    @property
    def listing(self) -> Path | None:
        """``POSES.images.json`` beside ``POSES.json``: every image's id, with its file name
        (none beside standard output, ``/dev/null`` or a FIFO: ``files.written_through``)."""
        if self.results is None or not self.list_images or written_through(self.results):
            return None
        return self.results.with_name(f"{self.results.stem}.images.json")


def check_image_outputs(paths: Sequence[Path], outputs: ImageOutputs, force: bool) -> None:
    """Fail before the model loads on an output that would replace an input image, and on
    outputs, annotated copies or OpenPose files that exist already (without ``force``)."""
    folders = {path.resolve().parent for path in paths}
    out_dir = outputs.annotated
    if out_dir is not None and out_dir.resolve() in folders:
        raise UsageError(f"--out-dir {out_dir} holds the input images: copies would replace them")
    files = [outputs.results, outputs.listing, outputs.table]
    check_standard_output(outputs.results, outputs.table)
    if any(same_file(path, output) for path in paths for output in files):
        raise UsageError("an output would overwrite an input image")
    check_outputs(files, force, [out_dir, outputs.openpose])
    if out_dir is not None:
        check_directory_files(out_dir, [path.name for path in paths], force=force)
    if outputs.openpose is not None:
        OpenPoseSink.check(outputs.openpose, force=force)


def detect_images(
    frames: ImageSource,
    estimator: Estimator,
    outputs: ImageOutputs = ImageOutputs(),
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    draw_threshold: float = DEFAULT_DRAW_THRESHOLD,
) -> tuple[list[dict[str, Any]], PipelineStats]:
    """Run still images through the pipeline into COCO results, written to ``outputs`` too
    (annotated copies show the keypoints scored above ``draw_threshold``).

    ``frames.ids`` give the images' ids. With ``outputs.listing``, the listing of the images
    done is written too, also when the run is interrupted.

    Returns:
        The COCO results (COCO-17 keypoints in image pixels) and the pipeline stats.
    """
    done: list[int] = []
    draw = partial(draw_poses, min_confidence=draw_threshold)
    try:
        found = _detect(frames, estimator, outputs, done, force, progress, draw)
    except (KeyboardInterrupt, OutputClosedError):  # results of the images done saved: list them
        if done:
            _write_listing(outputs, frames, done, force)
        raise
    _write_listing(outputs, frames, done, force)
    return found


def _write_listing(
    outputs: ImageOutputs, frames: ImageSource, done: Sequence[int], force: bool
) -> None:
    """Write the listing of the images done, when the outputs have one."""
    if outputs.listing is not None:
        write_json_atomically(outputs.listing, image_listing(frames, done), force=force)


def _detect(
    frames: ImageSource,
    estimator: Estimator,
    outputs: ImageOutputs,
    done: list[int],
    force: bool,
    progress: ProgressCallback | None,
    draw: DrawFunction,
) -> tuple[list[dict[str, Any]], PipelineStats]:
    """:func:`detect_images` without the listing; ``done`` receives each image's index."""
    from posecli.pipeline import run_pipeline

    with frames, ExitStack() as stack:
        coco = stack.enter_context(CocoResultsSink(outputs.results, force=force))
        sinks: list[FrameSink] = [coco]
        if outputs.annotated is not None:
            sinks.append(stack.enter_context(ImageDirectorySink(outputs.annotated, force=force)))
        if outputs.openpose is not None:
            sinks.append(stack.enter_context(OpenPoseSink(outputs.openpose, force=force)))
        if outputs.table is not None:
            sinks.append(stack.enter_context(CsvSink(outputs.table, force=force)))
        sinks.append(lambda frame, image: done.append(frame.index))
        stats = run_pipeline(
            frames,
            estimator,
            sinks,
            draw=draw if outputs.annotated is not None else None,
            total=len(frames),
            progress=progress,
        )
    return coco.results, stats


def image_listing(frames: ImageSource, done: Sequence[int]) -> list[dict[str, Any]]:
    """``{"id", "file_name"}`` of the images done, in order; a skipped one adds ``"error"``."""
    errors = dict(frames.skipped)
    listing = []
    for index in sorted({*done, *errors}):
        image_id, name = frames.ids[index]
        entry: dict[str, Any] = {"id": image_id, "file_name": name}
        if index in errors:
            entry["error"] = errors[index]
        listing.append(entry)
    return listing
