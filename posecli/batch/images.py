"""The images of a batch job: run through the ``images`` command's path (in this process, or
in batches on Ray pose actors), their results written as ``posecli images`` writes them and
added to those of an earlier run."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posecli import inference
from posecli.batch.plan import ImageJob
from posecli.batch.summary import InputResult
from posecli.batch.videos import move_output
from posecli.errors import InputError
from posecli.images import ImageOutputs, detect_images, image_listing
from posecli.inference import InferenceOptions
from posecli.io.files import move_into_place, write_atomically
from posecli.outputs import write_json_atomically
from posecli.pose import Frame, Pose, frames_to_csv

if TYPE_CHECKING:
    import numpy as np

    from posecli.estimator import Estimator
    from posecli.pipeline import ProgressCallback


def image_rows(job: ImageJob) -> dict[str, list[Any]]:
    """The images to run as columns: ``index`` (position in the job), ``path``, ``image_id``,
    ``name``."""
    return {
        "index": list(job.todo),
        "path": [str(job.paths[index]) for index in job.todo],
        "image_id": [job.ids[index][0] for index in job.todo],
        "name": [job.ids[index][1] for index in job.todo],
    }


def detect_rows(
    estimator: Estimator,
    rows: dict[str, Sequence[Any]],
    openpose: Path | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, list[Any]]:
    """Run the images of ``rows`` (:func:`image_rows` columns, or a batch of them) through
    :func:`posecli.images.detect_images` (``progress`` after each), unreadable ones skipped; with
    ``openpose``, their OpenPose files go into that (staging) folder.

    Returns:
        Columns ``index``, ``results`` (each image's COCO results as a JSON list) and
        ``error`` (``""`` for an image read).
    """
    from posecli.io.sources import ImageSource

    frames = ImageSource(list(rows["path"]), skip_unreadable=True)
    frames.ids = list(zip((int(i) for i in rows["image_id"]), rows["name"], strict=True))
    try:
        outputs = ImageOutputs(list_images=False, openpose=openpose)
        results, _ = detect_images(frames, estimator, outputs, force=True, progress=progress)
    except InputError as error:  # none could be read: each is in frames.skipped, or the one
        results, frames.skipped = [], frames.skipped or [(0, str(error))]
    errors = dict(frames.skipped)
    found: dict[int, list[dict[str, Any]]] = {}
    for entry in results:
        found.setdefault(entry["image_id"], []).append(entry)
    return {
        "index": [int(index) for index in rows["index"]],
        "results": [json.dumps(found.get(image_id, [])) for image_id, _ in frames.ids],
        "error": [errors.get(position, "") for position in range(len(frames.ids))],
    }


class ImagePoses:
    """A pose actor on Ray: the model loaded once per actor, each batch of rows through
    :func:`detect_rows`."""

    def __init__(self, options: InferenceOptions, openpose: Path | None) -> None:
        self.estimator = inference.load_estimator(options)
        self.openpose = openpose

    def detect(self, batch: dict[str, np.ndarray | list[Any]]) -> dict[str, list[Any]]:
        """:func:`detect_rows` of a batch of :func:`image_rows` columns."""
        rows = {key: list(value) for key, value in batch.items()}
        return detect_rows(self.estimator, rows, self.openpose)


def staged_openpose(job: ImageJob, staging: Path) -> Path | None:
    """The folder the images' OpenPose files are written into before they are moved."""
    return staging / job.openpose.name if job.openpose is not None else None


def write_images(
    job: ImageJob, columns: dict[str, Sequence[Any]], staging: Path
) -> list[InputResult]:
    """Write the outputs of ``job`` from :func:`detect_rows` columns (in any order), as
    ``posecli images`` writes them for all the job's images: the results of images done by an
    earlier run kept, the new ones added in image order; the OpenPose files staged in
    ``staging`` moved into place. One result per image run."""
    from posecli.io.sinks import coco_document
    from posecli.io.sources import ImageSource

    order = sorted(range(len(columns["index"])), key=lambda row: int(columns["index"][row]))
    errors = [(int(columns["index"][row]), columns["error"][row]) for row in order]
    done = [index for index, error in errors if not error]
    earlier = sorted(set(range(len(job.paths))) - set(job.todo))
    new = [entry for row in order for entry in json.loads(columns["results"][row])]
    results = _in_image_order(job, [*_earlier_results(job, earlier), *new])
    frames = ImageSource(list(job.paths))
    frames.ids, frames.skipped = list(job.ids), [(i, error) for i, error in errors if error]
    staged = staged_openpose(job, staging)
    if staged is not None and job.openpose is not None:
        _move_openpose(staged, job.openpose)
    if job.table is not None:  # the rows `posecli images --csv` writes
        write_atomically(job.table, frames_to_csv(result_frames(job, results), columns=True))
    write_atomically(job.results, coco_document(results))
    write_json_atomically(job.listing, image_listing(frames, [*earlier, *done]), force=True)
    written = tuple(str(path) for path in job.outputs())
    return [
        InputResult(str(job.paths[index]), () if error else written, error or None)
        for index, error in errors
    ]


def result_frames(job: ImageJob, results: Sequence[dict[str, Any]]) -> list[Frame]:
    """The images of ``job`` as :class:`~posecli.pose.Frame` records of their COCO results
    (position, ``image_id``, file name, people; no size), in job order."""
    import numpy as np

    found: dict[int, list[Pose]] = {}
    for entry in results:
        keypoints = np.reshape(entry["keypoints"], (-1, 3))  # (17, 3)
        found.setdefault(entry["image_id"], []).append(Pose(keypoints, entry["score"]))
    return [
        Frame(index, 0.0, 0, 0, found.get(image_id, []), name, image_id)
        for index, (image_id, name) in enumerate(job.ids)
    ]


def _earlier_results(job: ImageJob, earlier: Sequence[int]) -> list[dict[str, Any]]:
    """The results of ``job.results`` of the images at positions ``earlier``."""
    if not earlier:
        return []
    kept = {job.ids[index][0] for index in earlier}
    return [entry for entry in json.loads(job.results.read_text()) if entry["image_id"] in kept]


def _in_image_order(job: ImageJob, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``results`` sorted by their image's position (stable: each image's people keep theirs)."""
    position = {image_id: index for index, (image_id, _) in enumerate(job.ids)}
    return sorted(results, key=lambda entry: position[entry["image_id"]])


def _move_openpose(staged: Path, final: Path) -> None:
    """The staged OpenPose folder into place; into the earlier one file by file, if any."""
    staged.mkdir(exist_ok=True)  # no image read: an empty folder, as ``posecli images`` leaves
    if not final.is_dir():
        move_output(staged, final)
        return
    for name in sorted(os.listdir(staged)):
        move_into_place(staged / name, final / name)
