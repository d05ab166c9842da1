"""Training loop: optimiser, schedule, checkpoints that resume exactly, DDP, COCO validation.

``train(config, progress)`` is the one entry point, for one process or many: under ``torchrun``
(``WORLD_SIZE > 1``) it joins the process group through ``torch.distributed``'s ``env://``
initialisation (gloo on CPU, NCCL on CUDA; each process on ``cuda:LOCAL_RANK``), wraps the
network in ``DistributedDataParallel`` and gives each process its share of every epoch through a
``DistributedSampler``. Only rank 0 writes files and reports progress.

The run directory (``config.out``) receives:

* ``checkpoint-last.pt``: the network in posecli's checkpoint format (``posecli.weights``),
  loadable by ``load_model`` and ``posecli eval``; its provenance records the step;
* ``checkpoint-best.pt``: the checkpoint of the best validation AP (with a validation set);
* ``train-state.pt``: optimiser, scheduler, gradient scaler, epoch, step and RNG states; with
  ``checkpoint-last.pt`` it resumes the run exactly (``resume=True``);
* ``metrics.jsonl``: one JSON object per logged step (``"event": "step"``), epoch
  (``"epoch"``) and validation (``"val"``), appended across resumes;
* ``config.json``: the ``TrainConfig`` of the (latest) invocation.

Exact resume: the data order is a function of (seed, epoch) and every augmentation draw of
(seed, epoch, image), and the schedule a function of the step, so restoring the network,
optimiser, scheduler and scaler states and skipping the batches already done in the epoch gives
the very next step of the uninterrupted run.

Refiners (issue 16): a ``TrainConfig`` with a ``refiner`` shape, a refiner preset or a refiner
``init`` trains a top-down refiner on person crops instead (``posecli.train.refiner``), with the
same machinery; its validation is top-down AP on the annotated people's boxes.

Pose Residual Networks (issue 20): a ``prn`` shape, a PRN preset or a PRN ``init`` trains a PRN
on synthetic heatmaps of the annotations (``posecli.train.prn``; no image is read), without
validation (``bench/oracle_ap.py --grouping prn`` measures it).

Ctrl-C (SIGINT in the main thread) finishes the step under way, saves both files and raises
``ResumableInterruptError``, so ``resume=True`` continues from that very step; a second Ctrl-C
stops at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from posecli.config import (
    MODEL_PRESETS,
    PRN_PRESETS,
    REFINER_PRESETS,
    InferenceConfig,
    ModelConfig,
    Preprocessing,
    PRNConfig,
    RefinerConfig,
    TrainConfig,
)
from posecli.device import resolve_device
from posecli.errors import (
    CheckpointError,
    InputError,
    OutputError,
    ResumableInterruptError,
    TrainingError,
    UsageError,
)
from posecli.estimator import Estimator
from posecli.evaluate import SUMMARY_KEYS, evaluate_model
from posecli.io.files import write_atomically
from posecli.model import build_network, grow_stacks
from posecli.spec import STRIDE
from posecli.train.dataset import CocoKeypointDataset
from posecli.train.distill import TeacherCropDataset
from posecli.train.loss import heatmap_loss
from posecli.train.prn import PRNSampleDataset, initial_prn, is_prn_task, prn_loss
from posecli.train.refiner import (
    RefinerCropDataset,
    box_ap,
    initial_refiner,
    is_refiner_task,
    refiner_loss,
)
from posecli.weights import (
    PoseModel,
    RefinerModel,
    load_model,
    load_pretrained_encoder,
    load_prn,
    load_refiner,
    prepare_network,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

#: A progress callback receives every record written to ``metrics.jsonl`` plus one
#: ``{"event": "start", ...}`` record and one ``{"event": "batch", ...}`` record per step.
ProgressCallback = Callable[[dict[str, Any]], None]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
STATE_FORMAT = 1
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


@dataclass
class Progress:
    """Where the run stands: the next batch to train is ``batch`` of ``epoch``."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_ap: float = -1.0


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


def initial_network(
    config: TrainConfig,
) -> tuple[nn.Module, ModelConfig | RefinerConfig | PRNConfig, Preprocessing]:
    """The network to train: from ``config.init`` (grown to ``config.init_stacks`` stacks if
    set), else freshly built from the model or preset (a refiner or a PRN for their tasks)."""
    if is_prn_task(config):
        return initial_prn(config)
    if is_refiner_task(config):
        return initial_refiner(config)
    if config.init:
        model = load_model(config.init, device="cpu")
        logger.info("initialised from %s", config.init)
        if not config.init_stacks or config.init_stacks == model.config.stacks:
            return model.network, model.config, model.preprocessing
        try:
            network = grow_stacks(model.network, config.init_stacks)
        except ValueError as error:
            raise UsageError(f"{config.init}: {error} (--init-stacks)") from None
        logger.info("grown from %d to %d stacks", model.config.stacks, config.init_stacks)
        return network, network.config, model.preprocessing
    if config.model is not None:
        model_config = config.model
    elif config.preset in MODEL_PRESETS:
        model_config = MODEL_PRESETS[config.preset]
    else:
        raise UsageError(
            f"unknown preset {config.preset!r}; choose one of "
            f"{', '.join([*MODEL_PRESETS, *REFINER_PRESETS, *PRN_PRESETS])}"
        )
    network = build_network(model_config)
    if model_config.encoder and config.pretrained:
        load_pretrained_encoder(network)
    return network, model_config, config.preprocessing


def build_optimizer(
    network: nn.Module, config: TrainConfig, world_size: int
) -> torch.optim.Optimizer:
    """SGD or AdamW at ``lr × world_size``; weight decay on weights, not on biases or norms."""
    decayed = [p for p in network.parameters() if p.requires_grad and p.ndim > 1]
    others = [p for p in network.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decayed, "weight_decay": config.weight_decay},
        {"params": others, "weight_decay": 0.0},
    ]
    lr = config.lr * world_size
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise UsageError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")


def lr_factor(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Learning-rate multiplier before optimiser step ``step`` (0-based).

    Linear warm-up from ``warmup_start_fraction`` over ``warmup_steps``, then either a cosine
    decay to ``min_lr_fraction`` at the last step of the last epoch, or ``lr_gamma`` per
    milestone epoch passed.
    """
    if step < config.warmup_steps:
        fraction = step / config.warmup_steps
        return config.warmup_start_fraction + (1.0 - config.warmup_start_fraction) * fraction
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        done = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * done))
        return config.min_lr_fraction + (1.0 - config.min_lr_fraction) * cosine
    if config.schedule == "step":
        passed = sum(step >= milestone * steps_per_epoch for milestone in config.lr_milestones)
        return config.lr_gamma**passed
    raise UsageError(f"unknown schedule {config.schedule!r}; choose one of {SCHEDULES}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step ``LambdaLR`` following ``lr_factor``."""

    def factor(step: int) -> float:
        return lr_factor(step, config, steps_per_epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _worker_init(worker_id: int) -> None:
    """Data-loading workers: one OpenCV and one torch thread each (the trainer owns the cores).

    Workers ignore Ctrl-C: the trainer decides when to stop, and shuts them down itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _check_config(config: TrainConfig) -> None:
    if config.batch_size < 1 or config.epochs < 1:
        raise UsageError("batch size and epochs must be at least 1")
    if config.optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")
    if config.schedule not in SCHEDULES:
        raise UsageError(f"unknown schedule {config.schedule!r}; choose one of {SCHEDULES}")
    if config.log_every_steps < 1 or config.val_every_epochs < 1:
        raise UsageError("logging and validation periods must be at least 1")
    zoom = config.augment
    if not 0 < zoom.scale_min <= zoom.scale_max:
        raise UsageError(
            f"zoom range {zoom.scale_min}–{zoom.scale_max} must be positive and increasing "
            "(--scale-min, --scale-max)"
        )
    if config.init_stacks < 0 or (config.init_stacks and not config.init):
        raise UsageError("--init-stacks needs --init and a positive number of stacks")
    if config.init_instances < 0 or (config.init_instances and not config.init):
        raise UsageError("--init-instances needs --init and a positive number of selectors")
    if (config.init_crop_height or config.init_crop_width) and not config.init:
        raise UsageError("--init-crop needs --init")
    if not 0 <= zoom.mosaic_probability <= 1:
        raise UsageError(f"mosaic probability {zoom.mosaic_probability} is outside 0–1 (--mosaic)")
    if config.teacher and not is_refiner_task(config):
        raise UsageError("--teacher distils a top-down teacher into a refiner: train a refiner")
    if config.teacher and not Path(config.teacher).is_file():
        raise InputError(f"teacher model not found: {config.teacher} (--teacher)")


def _check_run_folder(config: TrainConfig) -> None:
    """A run starts in a folder without one, and resumes only one that is there.

    Raises:
        OutputError: ``config.out`` holds a run and ``resume`` is off (an existing output).
        InputError: ``resume`` is on and ``config.out`` holds no run to continue.
    """
    paths = RunPaths.of(Path(config.out))
    if config.resume and not paths.state.is_file():
        raise InputError(
            f"--resume: {paths.root} holds no training run to continue (no {paths.state.name}); "
            "leave out --resume to start one"
        )
    if not config.resume and paths.state.is_file():
        raise OutputError(
            f"{paths.root} already holds a training run; resume it (--resume) or choose another "
            "output directory"
        )


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


def _mean_across_processes(
    value: float, count: int, device: torch.device, world_size: int
) -> float:
    """Mean of a per-process average weighted by its count, over all processes."""
    if world_size == 1:
        return value
    totals = torch.tensor([value * count, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return float(totals[0] / totals[1].clamp(min=1.0))


def _changed_settings(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names of the settings that differ between two ``TrainConfig.to_dict()`` (resume aside)."""
    return [
        name
        for name in sorted(set(before) | set(after))
        if name not in ("resume", "max_steps")
        and json.dumps(before.get(name)) != json.dumps(after.get(name))
    ]


def _rng_states(device: torch.device) -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _restore_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


@contextmanager
def _deferred_interrupt() -> Iterator[threading.Event]:
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


def autocast_dtype(
    amp: bool, device: torch.device, network: ModelConfig | RefinerConfig | PRNConfig | None = None
) -> torch.dtype | None:
    """The mixed-precision type of the forward pass of ``network``, or None for plain fp32.

    fp16 (with loss scaling) on CUDA. On CPUs that compute bf16 natively (AVX512-BF16 or AMX),
    bf16 for an IMHN or PRN, fp32 for a refiner: on a 2-core AMD EPYC with AVX512-BF16
    (``bench/train_speed.py``, one run) bf16 makes a step of ``imhn-cpu-lite0`` (batch 8, 384²)
    2.9× faster than fp32, but one of ``refiner-lite0-128x96`` (batch 32) 0.61× as fast (its
    depthwise backward is slower in bf16). Elsewhere bf16 is emulated and slower than fp32.
    Weights and optimiser stay fp32.
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    refiner = isinstance(network, RefinerConfig)
    if device.type == "cpu" and not refiner and torch.cpu._is_avx512_bf16_supported():
        return torch.bfloat16
    return None


class Trainer:
    """One training run; see ``train``."""

    def __init__(
        self,
        config: TrainConfig,
        distributed: Distributed,
        device: torch.device,
        progress: ProgressCallback | None,
    ) -> None:
        self.config = config
        self.paths = RunPaths.of(Path(config.out))
        self.distributed = distributed
        self.device = device
        self.log = MetricsLog(self.paths.metrics, self.distributed.is_main, progress)
        torch.manual_seed(config.seed)
        network, self.model_config, self.preprocessing = initial_network(config)
        self.autocast_dtype = autocast_dtype(config.amp, self.device, self.model_config)
        self.network = prepare_network(network, self.device).train()  # CPU: channels-last
        self.dataset = self._dataset()
        self.sampler = DistributedSampler(
            self.dataset,
            num_replicas=self.distributed.world_size,
            rank=self.distributed.rank,
            shuffle=True,
            seed=config.seed,
        )
        self.epoch_sampler = EpochSampler(self.sampler, config.batch_size)
        self.steps_per_epoch = math.ceil(self.sampler.num_samples / config.batch_size)
        self.optimizer = build_optimizer(self.network, config, self.distributed.world_size)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.progress = Progress()
        if config.resume and self.paths.state.is_file():
            self._resume()
        else:
            _check_run_folder(config)
        self.model = self._parallel(self.network)

    def _dataset(
        self,
    ) -> CocoKeypointDataset | RefinerCropDataset | TeacherCropDataset | PRNSampleDataset:
        """The run's training items: person crops for a refiner (the labels' targets, or a
        teacher's on each crop), synthetic box heatmaps for a PRN, whole images for an IMHN."""
        config, shape = self.config, self.model_config
        if isinstance(shape, PRNConfig):
            return PRNSampleDataset.from_config(config, shape)
        if isinstance(shape, RefinerConfig):
            crops = TeacherCropDataset if config.teacher else RefinerCropDataset
            return crops.from_config(config, shape, self.preprocessing)
        coarsest = config.input_size // (STRIDE * 2**shape.depth)  # cells per side
        if config.batch_size * coarsest**2 < 2:
            raise UsageError(
                f"batch size 1 at input size {config.input_size} leaves BatchNorm one value per "
                "channel at the coarsest scale; use a larger batch or input"
            )
        return CocoKeypointDataset.from_config(config, self.preprocessing)

    def _parallel(self, network: nn.Module) -> nn.Module:
        """Wrap for DDP when several processes train (SyncBatchNorm on CUDA when asked)."""
        if self.distributed.world_size == 1:
            return network
        if self.device.type == "cuda" and self.config.sync_batchnorm:
            network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(network, device_ids=device_ids)

    # -- checkpoints -------------------------------------------------------------------------

    def _resume(self) -> None:
        state = torch.load(self.paths.state, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{self.paths.state}: not a posecli training state")
        loaders = {RefinerConfig: load_refiner, PRNConfig: load_prn}
        loader = loaders.get(type(self.model_config), load_model)
        model = loader(str(self.paths.last), device="cpu")
        if model.provenance.get("step") != state["step"]:
            raise CheckpointError(
                f"{self.paths.last} (step {model.provenance.get('step')}) does not match "
                f"{self.paths.state} (step {state['step']}); the run was interrupted while saving"
            )
        if model.config != self.model_config:
            raise CheckpointError(
                f"{self.paths.last} holds a network of shape {model.config}, this run builds "
                f"{self.model_config}"
            )
        changed = _changed_settings(state["config"], self.config.to_dict())
        if changed:
            logger.warning("resuming with changed settings: %s", ", ".join(changed))
        self.network.load_state_dict(model.network.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _restore_rng_states(state["rng"], self.device)
        self.progress = Progress(
            epoch=state["epoch"],
            batch=state["batch"],
            step=state["step"],
            best_ap=state["best_ap"],
        )
        logger.info("resumed %s at step %d", self.paths.root, self.progress.step)

    def _save(self) -> None:
        """Write ``checkpoint-last.pt``, then ``train-state.pt`` (rank 0; each atomically)."""
        if not self.distributed.is_main:
            return
        provenance = {
            "trained_by": "posecli train",
            "annotations": self.config.annotations,
            "init": self.config.init,
            "epoch": self.progress.epoch,
            "step": self.progress.step,
            "world_size": self.distributed.world_size,
        }
        save_checkpoint(
            self.paths.last, self.network, self.model_config, self.preprocessing, provenance
        )
        state = {
            "format": STATE_FORMAT,
            "epoch": self.progress.epoch,
            "batch": self.progress.batch,
            "step": self.progress.step,
            "best_ap": self.progress.best_ap,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_states(self.device),
            "config": self.config.to_dict(),
        }
        write_atomically(self.paths.state, lambda file: torch.save(state, file))

    # -- training ----------------------------------------------------------------------------

    def _loader(self) -> DataLoader:
        """One loader for the whole run; ``EpochSampler`` picks each epoch's items.

        Workers are started by a fork server and kept for the run: forking the trainer itself
        after OpenCV's thread pool has run in it (validation) deadlocks the child.
        """
        workers = self.config.workers
        return DataLoader(
            self.dataset,
            batch_size=self.config.batch_size,
            sampler=self.epoch_sampler,
            num_workers=workers,
            worker_init_fn=_worker_init if workers else None,
            multiprocessing_context="forkserver" if workers else None,
            persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",
        )

    def step(
        self,
        images: torch.Tensor,
        targets: list[torch.Tensor] | torch.Tensor,
        masks: list[torch.Tensor] | torch.Tensor,
    ) -> tuple[float, float]:
        """One optimiser and scheduler step on a batch; returns the loss and the gradient norm
        before clipping. ``images`` (N, 3, S, S) float normalised, ``targets`` and ``masks`` one
        tensor per output scale, as ``CocoKeypointDataset`` yields them (a refiner: the
        ``(N, λ, 17, h, w)`` targets and ``(N, λ, 17)`` weights of ``RefinerCropDataset``).
        """
        loss = self._loss(images, targets, masks)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"training diverged: loss is {loss.item()} at step {self.progress.step + 1}; "
                "lower the learning rate or enable gradient clipping"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        parameters = [p for p in self.network.parameters() if p.grad is not None]
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.item(), grad_norm.item()

    def _loss(
        self,
        images: torch.Tensor,
        targets: list[torch.Tensor] | torch.Tensor,
        masks: list[torch.Tensor] | torch.Tensor,
    ) -> torch.Tensor:
        """The training loss of one batch (see ``step``), float32 scalar on the device."""
        images = images.to(self.device, non_blocking=True)  # (N, 3, S, S)
        autocast = torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )
        if isinstance(targets, torch.Tensor) and isinstance(masks, torch.Tensor):  # refiner, PRN
            targets = targets.to(self.device, non_blocking=True)  # (N, λ, 17, h, w) | (N, 17, H, W)
            masks = masks.to(self.device, non_blocking=True)  # (N, λ, 17) | (N, 17)
            loss = prn_loss if isinstance(self.model_config, PRNConfig) else refiner_loss
            with autocast:
                return loss(self.model, images, targets, masks)
        targets = [t.to(self.device, non_blocking=True) for t in targets]  # [(N, 50, h_j, w_j)]
        masks = [m.to(self.device, non_blocking=True) for m in masks]  # [(N, 1|50, h_j, w_j)]
        with autocast:
            outputs = self.model(images)  # [stacks][scales] (N, 50, h_j, w_j)
        return heatmap_loss(outputs, targets, masks, self.config.loss)

    def _batches(self) -> Iterator[tuple[int, int, tuple]]:
        """``(epoch, batch index, batch)`` from the resume point to the end of the run."""
        loader = self._loader()
        for epoch in range(self.progress.epoch, self.config.epochs):
            first = self.progress.batch if epoch == self.progress.epoch else 0
            self.epoch_sampler.start(epoch, first)
            for index, batch in enumerate(loader, start=first):
                yield epoch, index, batch

    def run(self) -> Path:
        """Train to the end (or ``max_steps``); returns the path of ``checkpoint-last.pt``."""
        config = self.config
        if self.distributed.is_main:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            self.paths.config.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        self.log.notify({
            "event": "start", "step": self.progress.step, "total_steps": total_steps,
            "steps_per_epoch": self.steps_per_epoch, "epochs": config.epochs,
            "world_size": self.distributed.world_size, "images": len(self.dataset),
        })  # fmt: skip
        with _deferred_interrupt() as interrupted:
            self._run(total_steps, interrupted)
        if self.distributed.world_size > 1:
            dist.barrier()
        return self.paths.last

    def _run(self, total_steps: int, interrupted: threading.Event) -> None:
        """The steps of ``run``; once ``interrupted`` is set: save and raise."""
        config = self.config
        window: list[float] = []
        epoch_losses: list[float] = []
        started = time.perf_counter()
        for epoch, index, (images, targets, masks) in self._batches():
            lr = self.optimizer.param_groups[0]["lr"]
            loss, grad_norm = self.step(images, targets, masks)
            window.append(loss)
            epoch_losses.append(loss)
            self.progress.step += 1
            self.progress.epoch, self.progress.batch = epoch, index + 1
            if self.progress.batch == self.steps_per_epoch:
                self.progress.epoch, self.progress.batch = epoch + 1, 0
            self.log.notify({
                "event": "batch", "epoch": epoch, "step": self.progress.step,
                "batch": index + 1, "batches": self.steps_per_epoch, "loss": loss,
            })  # fmt: skip
            if self.progress.step % config.log_every_steps == 0:
                self._log_step(epoch, window, lr, grad_norm, started, images.shape[0])
                window, started = [], time.perf_counter()
            finished = bool(config.max_steps) and self.progress.step >= config.max_steps
            stopping = self._any_process(interrupted.is_set())
            periodic = config.checkpoint_every_steps and (
                self.progress.step % config.checkpoint_every_steps == 0
            )
            if self.progress.batch == 0:  # end of an epoch
                self._end_epoch(epoch, epoch_losses)
                epoch_losses = []
            elif finished or stopping or periodic:
                self._save()
            if finished:
                break
            if stopping:
                raise ResumableInterruptError(
                    f"training interrupted at step {self.progress.step} of {total_steps}; saved "
                    f"{self.paths.root}, continue with --resume"
                )

    def _any_process(self, flag: bool) -> bool:
        """Whether ``flag`` is set in any process (every process stops at the same step)."""
        if self.distributed.world_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _log_step(
        self,
        epoch: int,
        window: list[float],
        lr: float,
        grad_norm: float,
        started: float,
        batch_size: int,
    ) -> None:
        loss = _mean_across_processes(
            sum(window) / len(window), len(window), self.device, self.distributed.world_size
        )
        seconds = time.perf_counter() - started
        images = len(window) * batch_size * self.distributed.world_size
        self.log.write({
            "event": "step", "epoch": epoch, "step": self.progress.step, "loss": loss, "lr": lr,
            "grad_norm": grad_norm, "images_per_second": images / max(seconds, 1e-9),
        })  # fmt: skip

    def _end_epoch(self, epoch: int, losses: list[float]) -> None:
        """Epoch metrics, validation when due, then the checkpoints."""
        loss = _mean_across_processes(
            sum(losses) / max(1, len(losses)),
            len(losses),
            self.device,
            self.distributed.world_size,
        )
        self.log.write({"event": "epoch", "epoch": epoch, "step": self.progress.step, "loss": loss})
        metrics = self._validate(epoch)
        improved = metrics is not None and metrics["AP"] > self.progress.best_ap
        if improved:
            self.progress.best_ap = metrics["AP"]
        self._save()
        if improved and self.distributed.is_main:
            shutil.copyfile(self.paths.last, self.paths.best)

    def _val_metrics(self, annotations: str, images: str) -> dict[str, float]:
        """AP… of the network on a validation set: bottom-up for an IMHN, top-down on the
        annotated people's boxes for a refiner (its ceiling)."""
        name = self.paths.root.name
        if isinstance(self.model_config, RefinerConfig):
            refiner = RefinerModel.from_network(
                self.network, self.model_config, self.preprocessing, name=name
            )
            return box_ap(refiner, annotations, images, self.device)
        model = PoseModel.from_network(self.network, self.model_config, self.preprocessing, name)
        inference = InferenceConfig(box_size=self.config.val_box_size, device=str(self.device))
        return coco_results_ap(model, inference, annotations, images)

    def _validate(self, epoch: int) -> dict[str, float] | None:
        """COCO keypoint AP on the validation set (rank 0; the others wait)."""
        config = self.config
        last_epoch = epoch + 1 == config.epochs
        if not config.val_annotations or not (
            (epoch + 1) % config.val_every_epochs == 0 or last_epoch
        ):
            return None
        metrics = None
        if self.distributed.is_main:
            images = config.val_images or str(Path(config.val_annotations).parent / "images")
            metrics = self._val_metrics(config.val_annotations, images)
            self.network.train()
            self.log.write({"event": "val", "epoch": epoch, "step": self.progress.step, **metrics})
        if self.distributed.world_size > 1:
            shared = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        return metrics


def coco_results_ap(
    model: PoseModel, inference: InferenceConfig, annotations: str, images: str
) -> dict[str, float]:
    """AP, AP50, AP75, APM, APL, AR of a model on a COCO keypoint set: ``posecli eval``'s path
    (``evaluate.evaluate_model``)."""
    evaluation = evaluate_model(Estimator(model, inference), annotations, images)
    return {key: evaluation.scores[key] for key in SUMMARY_KEYS}


def train(config: TrainConfig, progress: ProgressCallback | None = None) -> Path:
    """Train a network as ``config`` says; returns the path of the final ``checkpoint-last.pt``.

    Works alone or under ``torchrun`` (see the module docstring). ``progress`` (rank 0 only)
    receives each metrics record as a dict with an ``"event"`` key: ``"start"`` (``step``,
    ``total_steps``, ``steps_per_epoch``, ``epochs``, ``world_size``, ``images``), ``"batch"``
    after every step (``epoch``, ``step``, ``batch``, ``batches``, ``loss``), ``"step"`` every
    ``log_every_steps`` (``loss``, ``lr``, ``grad_norm``, ``images_per_second``), ``"epoch"``
    (mean ``loss``) and ``"val"`` (``AP``, ``AP50``, ``AP75``, ``APM``, ``APL``, ``AR``).

    Raises:
        UsageError: invalid settings.
        OutputError: ``out`` holds a run and ``resume`` is off.
        CheckpointError: ``init`` or the run's checkpoints cannot be loaded.
        InputError: unreadable annotations or images; ``resume`` and ``out`` holds no run.
    """
    _check_config(config)
    _check_run_folder(config)
    distributed, device = join_process_group(resolve_device(config.device))
    try:
        return Trainer(config, distributed, device, progress).run()
    finally:
        if distributed.initialised_here:
            dist.destroy_process_group()
