"""Optimisers and learning-rate schedules of a training run (``TrainConfig`` fields)."""

from __future__ import annotations

import math

import torch
from torch import nn

from posecli.config import TrainConfig
from posecli.errors import UsageError

OPTIMIZERS = ("sgd", "adamw")


SCHEDULES = ("cosine", "step")


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
