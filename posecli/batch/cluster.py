"""A batch job on Ray: every video a Ray task (retried when its worker dies), the images in
batches over pose actors that load the model once each. Ray is imported only when a job runs
on it (``pip install posecli[cluster]``)."""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from posecli.batch.images import ImagePoses, image_rows, staged_openpose, write_images
from posecli.batch.plan import BatchPlan, ImageJob, VideoJob
from posecli.batch.summary import InputResult, Tally
from posecli.batch.videos import video_task
from posecli.errors import InputError, MissingDependencyError, UsageError
from posecli.inference import InferenceOptions
from posecli.io.files import error_reason

#: Images per batch of a pose actor (one ``detect_images`` run).
IMAGE_BATCH = 8

#: Ray retries a video or a batch of images whose worker died this many times.
RETRIES = 3

#: Seconds ``--ray`` waits for Ray to connect (or start, for ``local``) by default.
CONNECT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Cluster:
    """Where a job runs: ``address`` ``None`` here in one process; ``"local"`` a new Ray
    instance on this machine; ``"auto"`` the running cluster this machine belongs to; else a
    Ray address (``HOST:PORT`` of a head). ``workers``: parallel videos / pose actors at most
    (``None`` or 0: as many as the cluster's CPUs allow); ``gpus_per_worker``: GPUs each one
    reserves; ``timeout``: seconds to wait for Ray to connect."""

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        """UsageError for Ray settings without ``--ray``, or out of range (the one check)."""
        given = [self.workers, self.gpus_per_worker, self.timeout]
        if self.address is None and any(value is not None for value in given):
            raise UsageError("--workers, --gpus-per-worker and --ray-timeout need --ray")
        if self.address == "":
            raise UsageError("--ray needs auto, local or a cluster address")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"--workers must be at least 0, got {self.workers}")
        if self.gpus_per_worker is not None and not 0 <= self.gpus_per_worker < math.inf:
            raise UsageError(f"--gpus-per-worker must be at least 0, got {self.gpus_per_worker}")
        if self.timeout is not None and not 0 < self.timeout < math.inf:
            raise UsageError(f"--ray-timeout must be a positive time, got {self.timeout}")

    @property
    def resources(self) -> dict[str, float]:
        """What each video task and pose actor reserves."""
        return {"num_cpus": 1, "num_gpus": self.gpus_per_worker or 0.0}


def import_ray() -> Any:
    """The ``ray`` module; MissingDependencyError when it is not installed."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs Ray: pip install posecli[cluster]") from None
    return ray


@contextmanager
def ray_session(address: str, timeout: float = CONNECT_TIMEOUT) -> Iterator[Any]:
    """Ray connected to ``address`` (``"local"``: a new instance here), shut down afterwards.

    Raises:
        InputError: the cluster cannot be reached, or Ray has not connected in ``timeout``
            seconds (Ray itself keeps retrying for minutes).
    """
    ray = import_ray()
    deadline = time.monotonic() + timeout
    check_reachable(address, timeout)
    connection = _Connection(ray, address)
    connection.start()
    if not connection.ready.wait(max(0.0, deadline - time.monotonic())):
        connection.release.set()  # its thread ends if Ray ever answers; the process need not wait
        raise InputError(f"cannot reach the Ray cluster {address}: no answer in {timeout:g} s")
    if connection.error is not None:
        reason = _first_line(connection.error)
        raise InputError(f"cannot reach the Ray cluster {address}: {reason}")
    try:
        yield ray
    finally:
        ray.shutdown()
        connection.release.set()


class _Connection(threading.Thread):
    """``ray.init`` in a thread of its own, so that the caller can stop waiting for it. The
    thread lives until ``release``: the processes Ray starts here (``local``) are bound to the
    thread that started them (their parent-death signal) and end with it."""

    def __init__(self, ray: Any, address: str) -> None:
        super().__init__(name="ray-connect", daemon=True)
        self.ray, self.address = ray, address
        self.ready, self.release = threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        local = self.address == "local"
        try:
            self.ray.init(
                address=None if local else self.address,
                log_to_driver=False,
                logging_level=logging.ERROR,
                include_dashboard=False if local else None,
            )
        except BaseException as error:  # handed to the caller's thread
            self.error = error
        self.ready.set()
        self.release.wait()


def check_reachable(address: str, timeout: float) -> None:
    """InputError at once when nothing answers at a ``HOST:PORT`` address (before Ray, which
    would retry for minutes, printing its own lines); other addresses are left to Ray."""
    host, _, port = address.rpartition("://")[2].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise InputError(f"cannot reach the Ray cluster {address}: {error_reason(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_on_ray(plan: BatchPlan, options: InferenceOptions, cluster: Cluster, tally: Tally) -> None:
    """The images over pose actors, then the videos as Ray tasks."""
    with ray_session(cluster.address or "local", cluster.timeout or CONNECT_TIMEOUT) as ray:
        workers = cluster.workers or _cluster_slots(ray, cluster)
        if plan.images is not None:
            tally.add(_images_on_ray(ray, plan, options, workers, cluster, tally))
        remote = ray.remote(video_task).options(max_retries=RETRIES, **cluster.resources)
        pending = list(plan.videos)
        running: dict[Any, VideoJob] = {}
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                running[remote.remote(job, options, plan.settings, plan.staging)] = job
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
        return InputResult(str(job.source), error=f"worker failed: {_first_line(error)}")


def _images_on_ray(
    ray: Any, plan: BatchPlan, options: InferenceOptions, workers: int, cluster: Cluster,
    tally: Tally,
) -> list[InputResult]:  # fmt: skip
    """The images in batches of :data:`IMAGE_BATCH` over :class:`ImagePoses` actors, each
    batch given to the next idle actor; their outputs written as ``posecli images`` does."""
    job: ImageJob = plan.images  # type: ignore[assignment]
    rows = image_rows(job)
    batches = [{key: column[start:start + IMAGE_BATCH] for key, column in rows.items()}
               for start in range(0, len(job.todo), IMAGE_BATCH)]  # fmt: skip
    actor = ray.remote(ImagePoses).options(max_restarts=RETRIES, max_task_retries=RETRIES,
                                           **cluster.resources)  # fmt: skip
    openpose = staged_openpose(job, plan.staging)
    actors = [actor.remote(options, openpose) for _ in range(min(workers, len(batches)))]
    idle = list(actors)
    columns: dict[str, list[Any]] = {"index": [], "results": [], "error": []}
    running: dict[Any, tuple[Any, dict[str, list[Any]]]] = {}
    try:
        while batches or running:
            while batches and idle:
                batch = batches.pop(0)
                pose_actor = idle.pop()
                running[pose_actor.detect.remote(batch)] = (pose_actor, batch)
            finished, _ = ray.wait(list(running), num_returns=1)
            pose_actor, batch = running.pop(finished[0])
            idle.append(pose_actor)
            for key, values in _batch_columns(ray, finished[0], batch).items():
                columns[key].extend(values)
            tally.report(len(columns["index"]))
    finally:
        for pose_actor in actors:  # their CPUs and GPUs to the videos
            ray.kill(pose_actor)
    return write_images(job, columns, plan.staging)


def _batch_columns(ray: Any, reference: Any, batch: dict[str, list[Any]]) -> dict[str, list]:
    """A batch's :func:`detect_rows` columns, or each of its images failed with the actor."""
    try:
        return ray.get(reference)
    except ray.exceptions.RayError as error:
        failure = f"worker failed: {_first_line(error)}"
        count = len(batch["index"])
        return {"index": batch["index"], "results": ["[]"] * count, "error": [failure] * count}
