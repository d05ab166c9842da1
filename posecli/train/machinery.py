"""What a training loop needs besides its network: the run folder's files, the torchrun process
group, the epoch sampler that resumes mid-epoch, the metrics log, RNG states, data workers and
a Ctrl-C that waits for the step under way (``posecli.train.trainer`` uses them).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

logger = logging.getLogger(__name__)


#: Processes wait this long for each other (rank 0 validates while the others wait).
COLLECTIVE_TIMEOUT = timedelta(hours=2)


#: The files of a run directory, by role.
RUN_FILES = {
    "last": "checkpoint-last.pt",
    "best": "checkpoint-best.pt",
    "state": "train-state.pt",
    "metrics": "metrics.jsonl",
    "config": "config.json",
}


@dataclass(frozen=True)
class RunPaths:
    """Files of a run directory: ``root`` and one path per role of :data:`RUN_FILES`."""

    root: Path
    last: Path
    best: Path
    state: Path
    metrics: Path
    config: Path

    @classmethod
    def of(cls, root: Path) -> RunPaths:
        return cls(root, **{role: root / name for role, name in RUN_FILES.items()})


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join_process_group(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (environment read, never set).

    Returns this process's place and device: ``device``, or ``cuda:LOCAL_RANK`` under torchrun
    on CUDA (NCCL backend; gloo on CPU). Collectives time out after ``COLLECTIVE_TIMEOUT``, long
    enough for rank 0 to validate while the others wait.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    initialised_here = not dist.is_initialized()
    if initialised_here:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    distributed = Distributed(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        initialised_here=initialised_here,
    )
    return distributed, device


def worker_init(worker_id: int) -> None:
    """Data-loading workers: one OpenCV and one torch thread each (the trainer owns the cores).

    Workers ignore Ctrl-C: the trainer decides when to stop, and shuts them down itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class EpochSampler(Sampler):
    """Keys ``(epoch, index)`` of one process's share of an epoch, from a given batch on.

    Wraps a ``DistributedSampler`` (which shuffles by seed and epoch and splits across
    processes); the epoch travels with each key, so persistent workers need no notice.
    """

    def __init__(self, sampler: DistributedSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.epoch = 0
        self.first_batch = 0

    def start(self, epoch: int, first_batch: int = 0) -> None:
        """Serve ``epoch`` from batch ``first_batch`` (resume) on."""
        self.epoch, self.first_batch = epoch, first_batch

    def _indices(self) -> list[int]:
        self.sampler.set_epoch(self.epoch)
        return list(self.sampler)[self.first_batch * self.batch_size :]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, index) for index in self._indices()])

    def __len__(self) -> int:
        return max(0, self.sampler.num_samples - self.first_batch * self.batch_size)


class MetricsLog:
    """Rank 0 appends JSON lines and forwards every record to the progress callback."""

    def __init__(self, path: Path, enabled: bool, progress: ProgressCallback | None) -> None:
        self.path = path
        self.enabled = enabled
        self.progress = progress

    def notify(self, record: dict[str, Any]) -> None:
        """Forward a record to the progress callback only."""
        if self.enabled and self.progress is not None:
            self.progress(record)

    def write(self, record: dict[str, Any]) -> None:
        """Append a record to ``metrics.jsonl`` and forward it."""
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        self.notify(record)


#: A progress callback receives every record written to ``metrics.jsonl`` plus one
#: ``{"event": "start", ...}`` record and one ``{"event": "batch", ...}`` record per step.
ProgressCallback = Callable[[dict[str, Any]], None]


def mean_across_processes(value: float, count: int, device: torch.device, world_size: int) -> float:
    """Mean of a per-process average weighted by its count, over all processes."""
    if world_size == 1:
        return value
    totals = torch.tensor([value * count, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return float(totals[0] / totals[1].clamp(min=1.0))


def rng_states(device: torch.device) -> dict[str, Any]:
    """torch's (and CUDA's) random generator states, to resume a run exactly."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Restore what ``rng_states`` saved."""
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


@contextmanager
def deferred_interrupt() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C instead of raising; the second one raises as usual.

    Only the main thread can handle signals: elsewhere the event is never set and Ctrl-C keeps
    its default behaviour.
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_interrupt(signum: int, frame: object) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        logger.warning("interrupted: saving after this step (Ctrl-C again to stop now)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
