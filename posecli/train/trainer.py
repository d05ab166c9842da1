"""Training loop: optimiser, schedule, checkpoints that resume exactly, DDP, COCO validation.

``train(config, progress)`` is the one entry point, for one process or many: under ``torchrun``
(``WORLD_SIZE > 1``) it joins the process group through ``torch.distributed``'s ``env://``
initialisation (gloo on CPU, NCCL on CUDA; each process on ``cuda:LOCAL_RANK``), wraps the
network in ``DistributedDataParallel`` and gives each process its share of every epoch through a
``DistributedSampler``. Only rank 0 writes files and reports progress.

The run directory (``config.out``) receives:

* ``checkpoint-last.pt``: the network in posecli's checkpoint format (``posecli.checkpoint``),
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
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from posecli.checkpoint import save_checkpoint
from posecli.config import TrainConfig
from posecli.device import resolve_device
from posecli.errors import (
    CheckpointError,
    InputError,
    OutputError,
    ResumableInterruptError,
    TrainingError,
    UsageError,
)
from posecli.io.files import write_atomically
from posecli.loader import load
from posecli.model import REFINER
from posecli.networks import HANDLES, prepare_network
from posecli.train.machinery import (
    Distributed,
    EpochSampler,
    MetricsLog,
    ProgressCallback,
    RunPaths,
    deferred_interrupt,
    join_process_group,
    mean_across_processes,
    restore_rng_states,
    rng_states,
    worker_init,
)
from posecli.train.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from posecli.train.tasks import autocast_dtype, task_of

logger = logging.getLogger(__name__)


STATE_FORMAT = 1


@dataclass
class Progress:
    """Where the run stands: the next batch to train is ``batch`` of ``epoch``."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_ap: float = -1.0


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
    if config.teacher and task_of(config).kind is not REFINER:
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


def _changed_settings(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names of the settings that differ between two ``TrainConfig.to_dict()`` (resume aside)."""
    return [
        name
        for name in sorted(set(before) | set(after))
        if name not in ("resume", "max_steps")
        and json.dumps(before.get(name)) != json.dumps(after.get(name))
    ]


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
        self.task = task_of(config)
        network, self.model_config, self.preprocessing = self.task.initial(config)
        self.autocast_dtype = autocast_dtype(config.amp, self.device, self.task)
        self.network = prepare_network(network, self.device).train()  # CPU: channels-last
        self.dataset = self.task.dataset(config, self.model_config, self.preprocessing)
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
        model = load(str(self.paths.last), self.task.kind.role, device="cpu")
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
        restore_rng_states(state["rng"], self.device)
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
            "rng": rng_states(self.device),
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
            worker_init_fn=worker_init if workers else None,
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
        # IMHN: one tensor per scale, [(N, 50, h_j, w_j)] and [(N, 1|50, h_j, w_j)]; refiner:
        # (N, λ, 17, h, w) and (N, λ, 17); PRN: (N, 17, H, W) and (N, 17)
        targets, masks = self._on_device(targets), self._on_device(masks)
        with autocast:
            return self.task.loss(self.model, images, targets, masks, self.config)

    def _on_device(
        self, tensors: list[torch.Tensor] | torch.Tensor
    ) -> list[torch.Tensor] | torch.Tensor:
        """A batch's tensor, or list of tensors, on the training device."""
        if isinstance(tensors, torch.Tensor):
            return tensors.to(self.device, non_blocking=True)
        return [tensor.to(self.device, non_blocking=True) for tensor in tensors]

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
        with deferred_interrupt() as interrupted:
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
        loss = mean_across_processes(
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
        loss = mean_across_processes(
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
            handle = HANDLES[self.task.kind.role].from_network(
                self.network, self.model_config, self.preprocessing, self.paths.root.name
            )
            metrics = self.task.metrics(handle, config, config.val_annotations, images)
            self.network.train()
            self.log.write({"event": "val", "epoch": epoch, "step": self.progress.step, **metrics})
        if self.distributed.world_size > 1:
            shared = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        return metrics


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
