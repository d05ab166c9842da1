"""``posecli batch``: many videos and images in one job, in this process or on a Ray cluster.

Each video goes through the ``video`` command's path (:func:`posecli.runs.track_stream`) into
``DIR/STEM.jsonl`` (and ``DIR/STEM.mp4`` with ``mp4``); the images go through the ``images``
command's path (:func:`posecli.runs.detect_images`) into one COCO results file
``DIR/images.json`` and its listing ``DIR/images.images.json``, same ids and content. Without a
Ray address everything runs here, one model loaded once; with one, every video is a Ray task
(retried by Ray when its worker dies) and the images a Ray Data ``map_batches`` over pose
actors that load the model once each.

Outputs are written into the hidden staging folder ``DIR/.posecli-batch`` and renamed into
``DIR`` only when the input is done (annotated MP4 first, tracks last), so a killed worker or an
input that fails leaves nothing under a final name; the job's end removes the staging folder.
An input whose outputs all exist is skipped (resume). Every run writes ``DIR/batch_summary.json``
(atomically): inputs done, failed with their errors, skipped, seconds. One job per ``DIR`` at a
time; on a cluster, inputs and ``DIR`` must have the same paths on every node.

Library code: errors are ``PoseCliError`` subclasses, progress goes through a callback, Ray is
imported only when a job runs on it (``pip install posecli[cluster]``).
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posecli import runs
from posecli.errors import (
    BatchFailedError,
    InputError,
    MissingDependencyError,
    OutputError,
    PoseCliError,
    UsageError,
)
from posecli.io.files import check_output, move_into_place, temporary_path, write_atomically
from posecli.runs import InferenceOptions, StreamOutputs

if TYPE_CHECKING:
    import numpy as np

    from posecli.estimator import Estimator

logger = logging.getLogger(__name__)

#: File suffixes of a folder's entries taken as videos (lower case); any other file given by
#: name that is not an image is taken as a video too.
VIDEO_INPUT_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}
)

#: The job's report, beside the outputs.
SUMMARY_NAME = "batch_summary.json"

#: Hidden folder in ``DIR`` holding the outputs of inputs in progress.
STAGING_NAME = ".posecli-batch"

#: Images per Ray Data batch (one ``detect_images`` run on a pose actor).
IMAGE_BATCH = 8

#: Ray retries a video whose worker died this many times.
VIDEO_RETRIES = 3


@dataclass(frozen=True)
class Cluster:
    """Where a job runs: ``address`` ``None`` here in one process; ``"local"`` a new Ray
    instance on this machine; ``"auto"`` the running cluster this machine belongs to; else a
    Ray address (``HOST:PORT`` of a head). ``workers``: parallel videos / pose actors at most
    (0: as many as the cluster's CPUs allow); ``gpus_per_worker``: GPUs each one reserves."""

    address: str | None = None
    workers: int = 0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        """UsageError for Ray settings without ``--ray``."""
        if self.address is None and (self.workers or self.gpus_per_worker):
            raise UsageError("--workers and --gpus-per-worker need --ray")
        if self.address == "":
            raise UsageError("--ray needs auto, local or a cluster address")


@dataclass(frozen=True)
class VideoJob:
    """One video and its outputs in ``DIR``: tracks (JSON lines) and, on request, the MP4."""

    source: Path
    tracks: Path
    video: Path | None = None

    def outputs(self) -> tuple[Path, ...]:
        """The output paths in the order they are renamed into place (tracks last)."""
        return (self.video, self.tracks) if self.video is not None else (self.tracks,)


@dataclass(frozen=True)
class ImageJob:
    """The images of a job (natural order, ``(image_id, file name)`` as ``posecli images``
    gives them) and their COCO results file; the listing goes beside it."""

    paths: tuple[Path, ...]
    ids: tuple[tuple[int, str], ...]
    results: Path

    def outputs(self) -> tuple[Path, ...]:
        listing = runs.ImageOutputs(self.results).listing
        return (self.results, listing)  # type: ignore[return-value]


@dataclass(frozen=True)
class BatchPlan:
    """What a job does: the videos and images to run, and the inputs skipped as done."""

    out_dir: Path
    videos: tuple[VideoJob, ...] = ()
    images: ImageJob | None = None
    skipped: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """Inputs to run: videos plus images."""
        return len(self.videos) + (len(self.images.paths) if self.images is not None else 0)

    @property
    def staging(self) -> Path:
        return self.out_dir / STAGING_NAME


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
    """A finished job: inputs done and failed (with errors), skipped as done before, seconds."""

    done: list[InputResult] = field(default_factory=list)
    failed: list[InputResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``batch_summary.json`` record."""
        return {
            "done": [asdict(result) for result in self.done],
            "failed": [{"input": r.input, "error": r.error} for r in self.failed],
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
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


# ---------------------------------------------------------------------------------------------
# planning: inputs classified, outputs named and checked, complete ones skipped


def plan_batch(
    inputs: Sequence[str | Path], out_dir: Path, *, mp4: bool = False, force: bool = False
) -> BatchPlan:
    """The plan of a job (before any model loads): videos and images of ``inputs`` (files,
    folders, globs; folders give their videos and images), their outputs in ``out_dir``.

    Raises:
        InputError: an input is missing or holds no videos or images.
        OutputError / UsageError: an output exists only in part (without ``force``: its input
            was not done by this command), or an output would replace an input.
    """
    from posecli.io.sources import image_ids

    videos, images = split_inputs(inputs)
    out_dir = out_dir.resolve()
    check_output(out_dir, force=force, directory=True)
    video_jobs = [
        VideoJob(path, out_dir / f"{stem}.jsonl", out_dir / f"{stem}.mp4" if mp4 else None)
        for path, stem in zip(videos, unique_stems(videos), strict=True)
    ]
    image_job = None
    if images:
        ids = tuple(image_ids(images))
        image_job = ImageJob(tuple(images), ids, out_dir / "images.json")
    jobs = [*video_jobs, *([image_job] if image_job is not None else [])]
    check_not_inputs(jobs, [*videos, *images])
    todo = [job for job in jobs if force or not is_complete(job)]
    skipped = [job for job in jobs if job not in todo]
    return BatchPlan(
        out_dir,
        tuple(job for job in todo if isinstance(job, VideoJob)),
        image_job if image_job in todo else None,
        tuple(str(path) for job in skipped for path in _job_inputs(job)),
    )


def split_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """Absolute paths of the videos and of the images of ``inputs``, each list de-duplicated
    and in natural order. Images are told by suffix (``sources.IMAGE_SUFFIXES``); a folder
    gives its videos by :data:`VIDEO_INPUT_SUFFIXES`, a file or glob match any other file.

    Raises:
        InputError: no inputs, a missing input, a glob or folder without videos or images.
    """
    from posecli.io.sources import IMAGE_SUFFIXES, natural_key

    if not inputs:
        raise InputError("no inputs given")
    videos: set[Path] = set()
    images: set[Path] = set()
    for item in inputs:
        for path in _expand(str(item)):
            (images if path.suffix.lower() in IMAGE_SUFFIXES else videos).add(path.resolve())
    return sorted(videos, key=natural_key), sorted(images, key=natural_key)


def _expand(item: str) -> list[Path]:
    """The files of one input: itself, a folder's videos and images, a glob's files."""
    from posecli.io.sources import IMAGE_SUFFIXES

    path = Path(item)
    if path.is_file():
        return [path]
    if path.is_dir():
        known = VIDEO_INPUT_SUFFIXES | IMAGE_SUFFIXES
        found = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in known]
        if not found:
            raise InputError(f"no videos or images in directory {item}")
        return found
    if glob.has_magic(item):
        found = [Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file()]
        if not found:
            raise InputError(f"no files match {item}")
        return found
    raise InputError(f"input not found: {item}")


def unique_stems(videos: Sequence[Path]) -> list[str]:
    """Output names of ``videos`` (in their order): the stem, ``STEM-2``, ``STEM-3``… for the
    second and later videos of one stem (``a/x.mp4``, ``b/x.mov`` → ``x``, ``x-2``)."""
    taken: set[str] = set()
    stems = []
    for path in videos:
        stem, number = path.stem, 1
        while stem in taken:
            number += 1
            stem = f"{path.stem}-{number}"
        taken.add(stem)
        stems.append(stem)
    return stems


def check_not_inputs(jobs: Sequence[VideoJob | ImageJob], inputs: Sequence[Path]) -> None:
    """UsageError when an output of ``jobs`` is one of ``inputs``."""
    sources = {path.resolve() for path in inputs}
    for job in jobs:
        for output in job.outputs():
            if output.resolve() in sources:
                raise UsageError(f"output {output} would overwrite an input")


def is_complete(job: VideoJob | ImageJob) -> bool:
    """Whether every output of ``job`` exists (done by an earlier run): resume skips it.

    Raises:
        OutputError: some outputs exist and others not (use --force to redo the input).
    """
    present = [path.exists() for path in job.outputs()]
    if any(present) and not all(present):
        found = next(path for path, there in zip(job.outputs(), present, strict=True) if there)
        raise OutputError(f"{found} exists but not every output of its input (use --force)")
    return all(present)


def _job_inputs(job: VideoJob | ImageJob) -> tuple[Path, ...]:
    return job.paths if isinstance(job, ImageJob) else (job.source,)


# ---------------------------------------------------------------------------------------------
# running a plan


def run_batch(
    plan: BatchPlan,
    options: InferenceOptions,
    cluster: Cluster = Cluster(),
    *,
    smooth: bool = False,
    progress: BatchProgressCallback | None = None,
) -> BatchSummary:
    """Run ``plan`` here or on Ray (``cluster``); write ``DIR/batch_summary.json``.

    Returns:
        The summary; the CLI exits 1 when ``summary.failed`` (:meth:`BatchSummary.check`).
    """
    started = time.perf_counter()
    tally = _Tally(plan.total, progress)
    shutil.rmtree(plan.staging, ignore_errors=True)  # a killed job's leftovers
    plan.staging.mkdir()
    try:
        if cluster.address is None:
            _run_here(plan, options, smooth, tally)
        else:
            _run_on_ray(plan, options, cluster, smooth, tally)
    finally:
        shutil.rmtree(plan.staging, ignore_errors=True)
    summary = BatchSummary(tally.done, tally.failed, list(plan.skipped))
    summary.seconds = time.perf_counter() - started
    body = json.dumps(summary.to_dict(), indent=2) + "\n"
    write_atomically(plan.out_dir / SUMMARY_NAME, body.encode())
    return summary


class _Tally:
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


def _run_here(plan: BatchPlan, options: InferenceOptions, smooth: bool, tally: _Tally) -> None:
    """Every input in this process, one after the other, one model."""
    estimator = runs.load_estimator(options)
    if plan.images is not None:
        rows = image_rows(plan.images)
        columns = detect_rows(estimator, rows, lambda state: tally.report(state.frames))
        tally.add(write_images(plan.images, columns))
    for job in plan.videos:
        tally.add([track_video(job, estimator, options, smooth, plan.staging)])


# ---------------------------------------------------------------------------------------------
# one video


def track_video(
    job: VideoJob, estimator: Estimator, options: InferenceOptions, smooth: bool, staging: Path
) -> InputResult:
    """Track one video as ``posecli video`` does into files in ``staging``, then rename them
    into place; an error of this input (``PoseCliError``) is returned, its files removed."""
    from posecli.io.sources import VideoSource

    staged = StreamOutputs(
        video=temporary_path(staging / job.video.name, ".mp4") if job.video else None,
        tracks=temporary_path(staging / job.tracks.name),
    )
    source = str(job.source)
    try:
        with VideoSource(source) as frames:
            settings = {"start": None, "end": None, "every": 1, "smooth": smooth}
            header = runs.tracks_header("video", source, frames.info, estimator, options,
                                        **settings)  # fmt: skip
            runs.track_stream(frames, estimator, staged, smooth=smooth, force=True,
                              video_info=frames.info, header=header)  # fmt: skip
        for temporary, final in zip(_paths(staged), job.outputs(), strict=True):
            move_into_place(temporary, final)
    except PoseCliError as error:
        return InputResult(source, error=str(error))
    finally:
        for temporary in _paths(staged):
            temporary.unlink(missing_ok=True)
    return InputResult(source, tuple(str(path) for path in job.outputs()))


def _paths(outputs: StreamOutputs) -> list[Path]:
    """The staged files in :meth:`VideoJob.outputs` order."""
    return [path for path in (outputs.video, outputs.tracks) if path is not None]


@functools.lru_cache(maxsize=1)
def worker_estimator(options: InferenceOptions) -> Estimator:
    """The model of a Ray worker process, loaded on its first video and kept for the next."""
    return runs.load_estimator(options)


def video_task(
    job: VideoJob, options: InferenceOptions, smooth: bool, staging: Path
) -> InputResult:
    """A video on a Ray worker (the remote function of :func:`_run_on_ray`)."""
    try:
        estimator = worker_estimator(options)
    except PoseCliError as error:
        return InputResult(str(job.source), error=str(error))
    return track_video(job, estimator, options, smooth, staging)


# ---------------------------------------------------------------------------------------------
# images


def image_rows(job: ImageJob) -> dict[str, list[Any]]:
    """The images as columns: ``index`` (position in the job), ``path``, ``image_id``, ``name``."""
    return {
        "index": list(range(len(job.paths))),
        "path": [str(path) for path in job.paths],
        "image_id": [image_id for image_id, _ in job.ids],
        "name": [name for _, name in job.ids],
    }


def detect_rows(
    estimator: Estimator,
    rows: dict[str, Sequence[Any]],
    progress: runs.ProgressCallback | None = None,
) -> dict[str, list[Any]]:
    """Run the images of ``rows`` (:func:`image_rows` columns, or a batch of them) through
    :func:`posecli.runs.detect_images` (``progress`` after each), unreadable ones skipped.

    Returns:
        Columns ``index``, ``results`` (each image's COCO results as a JSON list) and
        ``error`` (``""`` for an image read).
    """
    from posecli.io.sources import ImageSource

    frames = ImageSource(list(rows["path"]), skip_unreadable=True)
    frames.ids = list(zip((int(i) for i in rows["image_id"]), rows["name"], strict=True))
    try:
        outputs = runs.ImageOutputs(list_images=False)
        results, _ = runs.detect_images(frames, estimator, outputs, progress=progress)
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
    """The pose actor of Ray Data's ``map_batches``: the model loaded once per actor, each
    batch (``dict`` of numpy columns) through :func:`detect_rows`."""

    def __init__(self, options: InferenceOptions) -> None:
        self.estimator = runs.load_estimator(options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        return detect_rows(self.estimator, {key: list(value) for key, value in batch.items()})


def write_images(job: ImageJob, columns: dict[str, Sequence[Any]]) -> list[InputResult]:
    """Write the COCO results and listing of ``job`` from :func:`detect_rows` columns (in any
    order), as ``posecli images`` writes them; one result per image."""
    from posecli.io.sinks import coco_document
    from posecli.io.sources import ImageSource

    order = sorted(range(len(columns["index"])), key=lambda row: int(columns["index"][row]))
    results = [entry for row in order for entry in json.loads(columns["results"][row])]
    errors = [(int(columns["index"][row]), columns["error"][row]) for row in order]
    frames = ImageSource(list(job.paths))
    frames.ids, frames.skipped = list(job.ids), [(i, error) for i, error in errors if error]
    write_atomically(job.results, coco_document(results))
    done = [index for index, error in errors if not error]
    runs.write_json_atomically(job.outputs()[1], runs.image_listing(frames, done), force=True)
    written = tuple(str(path) for path in job.outputs())
    return [
        InputResult(str(job.paths[index]), () if error else written, error or None)
        for index, error in errors
    ]


# ---------------------------------------------------------------------------------------------
# Ray


def import_ray() -> Any:
    """The ``ray`` module; MissingDependencyError when it is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401 — the images need Ray Data
    except ImportError:
        raise MissingDependencyError(
            "--ray needs Ray: pip install posecli[cluster]"
        ) from None
    return ray


@contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Ray connected to ``address`` (``"local"``: a new instance here), shut down afterwards,
    its progress bars off; InputError for a cluster that cannot be reached."""
    ray = import_ray()
    try:
        ray.init(
            address=None if address == "local" else address,
            log_to_driver=False,
            logging_level=logging.ERROR,
            include_dashboard=False if address == "local" else None,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot reach the Ray cluster {address}: {first}") from None
    ray.data.DataContext.get_current().enable_progress_bars = False
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)  # not a line per dataset run
    try:
        yield ray
    finally:
        data_logger.setLevel(level)
        ray.shutdown()


def _run_on_ray(
    plan: BatchPlan, options: InferenceOptions, cluster: Cluster, smooth: bool, tally: _Tally
) -> None:
    """The images through Ray Data, then the videos as Ray tasks."""
    with ray_session(cluster.address or "local") as ray:
        workers = cluster.workers or _cluster_slots(ray, cluster)
        resources = {"num_cpus": 1, "num_gpus": cluster.gpus_per_worker}
        if plan.images is not None:
            tally.add(_images_on_ray(ray, plan.images, options, workers, resources, tally))
        remote = ray.remote(video_task).options(max_retries=VIDEO_RETRIES, **resources)
        pending = list(plan.videos)
        running: dict[Any, VideoJob] = {}
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                running[remote.remote(job, options, smooth, plan.staging)] = job
            finished, _ = ray.wait(list(running), num_returns=1)
            tally.add([_task_result(ray, finished[0], running.pop(finished[0]))])


def _cluster_slots(ray: Any, cluster: Cluster) -> int:
    """Workers the cluster holds: one per CPU, or per ``gpus_per_worker`` of its GPUs."""
    resources = ray.cluster_resources()
    slots = int(resources.get("CPU", 1))
    if cluster.gpus_per_worker:
        slots = min(slots, int(resources.get("GPU", 0) / cluster.gpus_per_worker))
    return max(1, slots)


def _task_result(ray: Any, reference: Any, job: VideoJob) -> InputResult:
    """A video task's result, or its failure (a worker that died past its retries)."""
    try:
        return ray.get(reference)
    except ray.exceptions.RayError as error:
        first = str(error).strip().splitlines()[0]
        return InputResult(str(job.source), error=f"worker failed: {first}")


def _images_on_ray(
    ray: Any,
    job: ImageJob,
    options: InferenceOptions,
    workers: int,
    resources: dict[str, Any],
    tally: _Tally,
) -> list[InputResult]:
    """The images through Ray Data's ``map_batches`` over :class:`ImagePoses` actors."""
    rows = image_rows(job)
    items = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
    dataset = ray.data.from_items(items).map_batches(
        ImagePoses,
        fn_constructor_kwargs={"options": options},
        batch_size=IMAGE_BATCH,
        compute=ray.data.ActorPoolStrategy(size=min(workers, -(-len(items) // IMAGE_BATCH))),
        **resources,
    )
    columns: dict[str, list[Any]] = {"index": [], "results": [], "error": []}
    for row in dataset.iter_rows():
        for key, values in columns.items():
            values.append(row[key])
        tally.report(len(columns["index"]))
    return write_images(job, columns)
