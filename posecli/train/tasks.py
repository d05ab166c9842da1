"""The table of training tasks: how each kind of network is trained, keyed by the kind's tag.

A task says whether a ``TrainConfig`` asks for its kind, builds (or loads) the network to
train, makes the run's dataset, computes a batch's loss and measures validation AP. The trainer
(``posecli.train.trainer``) reads :data:`TASKS` and branches on nothing else; the network kinds
themselves are ``posecli.model.kinds.KINDS``.

* ``imhn``: whole augmented images and their five-scale targets (``CocoKeypointDataset``), the
  focal L2 loss (``heatmap_loss``), bottom-up AP through ``posecli eval``'s path;
* ``refiner``: person crops (the labels' targets, or a teacher's heatmaps of each crop), the
  MIPNet heatmap loss, top-down AP on the annotated people's boxes (``posecli.train.refiner``);
* ``prn``: synthetic box heatmaps of the annotations, cross-entropy, no validation
  (``posecli.train.prn``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from posecli.assemble import build_estimator
from posecli.config import (
    MODEL_PRESETS,
    PRN_PRESETS,
    REFINER_PRESETS,
    InferenceConfig,
    ModelConfig,
    Preprocessing,
    TrainConfig,
)
from posecli.errors import UsageError
from posecli.evaluate import SUMMARY_KEYS, evaluate_model
from posecli.loader import load_model
from posecli.model import (
    BOTTOM_UP,
    PRN,
    REFINER,
    NetworkConfig,
    NetworkKind,
    build_network,
    grow_stacks,
)
from posecli.networks import PoseModel, RefinerModel
from posecli.spec import STRIDE
from posecli.train.dataset import CocoKeypointDataset
from posecli.train.distill import TeacherCropDataset
from posecli.train.loss import heatmap_loss
from posecli.train.pretrained import load_pretrained_encoder
from posecli.train.prn import PRNSampleDataset, initial_prn, is_prn_task, prn_loss
from posecli.train.refiner import (
    RefinerCropDataset,
    box_ap,
    initial_refiner,
    is_refiner_task,
    refiner_loss,
)

logger = logging.getLogger(__name__)

#: ``(network, config, preprocessing)`` of the network a run trains.
InitialNetwork = tuple[nn.Module, NetworkConfig, Preprocessing]


@dataclass(frozen=True)
class TrainingTask:
    """How one kind of network is trained (see the module docstring).

    ``loss(model, images, targets, masks, config)`` runs the forward pass and returns a float32
    scalar; ``metrics(handle, config, annotations, images)`` returns AP… of the network under
    training, wrapped in its role's inference handle (``posecli.networks.HANDLES``), on a
    validation set (``None``: the kind is not validated while training);
    ``bf16_on_cpu`` whether its forward pass gains from bf16 on CPUs that compute it natively.
    """

    kind: NetworkKind
    asked: Callable[[TrainConfig], bool]
    initial: Callable[[TrainConfig], InitialNetwork]
    dataset: Callable[[TrainConfig, Any, Preprocessing], Dataset]
    loss: Callable[..., torch.Tensor]
    metrics: Callable[..., dict[str, float]] | None
    bf16_on_cpu: bool


def task_of(config: TrainConfig) -> TrainingTask:
    """The task ``config`` asks for: the first of :data:`TASKS` whose ``asked`` holds (the
    bottom-up IMHN, last, takes every other config)."""
    return next(task for task in TASKS.values() if task.asked(config))


def initial_imhn(config: TrainConfig) -> InitialNetwork:
    """The IMHN to train: from ``config.init`` (grown to ``config.init_stacks`` stacks if set),
    else freshly built from ``config.model`` or the preset, its encoder from ImageNet weights
    when ``config.pretrained``."""
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


def imhn_dataset(
    config: TrainConfig, shape: ModelConfig, preprocessing: Preprocessing
) -> CocoKeypointDataset:
    """Whole augmented images; UsageError when a batch would leave BatchNorm one value per
    channel at the coarsest scale."""
    coarsest = config.input_size // (STRIDE * 2**shape.depth)  # cells per side
    if config.batch_size * coarsest**2 < 2:
        raise UsageError(
            f"batch size 1 at input size {config.input_size} leaves BatchNorm one value per "
            "channel at the coarsest scale; use a larger batch or input"
        )
    return CocoKeypointDataset.from_config(config, preprocessing)


def imhn_loss(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    config: TrainConfig,
) -> torch.Tensor:
    """The focal L2 loss of every stack's five scales: ``images`` (N, 3, S, S), ``targets``
    [(N, 50, h_j, w_j)], ``masks`` [(N, 1|50, h_j, w_j)]."""
    outputs = model(images)  # [stacks][scales] (N, 50, h_j, w_j)
    return heatmap_loss(outputs, targets, masks, config.loss)


def coco_results_ap(
    model: PoseModel, inference: InferenceConfig, annotations: str, images: str
) -> dict[str, float]:
    """AP, AP50, AP75, APM, APL, AR of a model on a COCO keypoint set: ``posecli eval``'s path
    (``evaluate.evaluate_model``)."""
    evaluation = evaluate_model(build_estimator(model, inference), annotations, images)
    return {key: evaluation.scores[key] for key in SUMMARY_KEYS}


def imhn_metrics(
    model: PoseModel, config: TrainConfig, annotations: str, images: str
) -> dict[str, float]:
    """Bottom-up AP of the network under training on a validation set."""
    inference = InferenceConfig(box_size=config.val_box_size, device=str(model.device))
    return coco_results_ap(model, inference, annotations, images)


def refiner_dataset(config: TrainConfig, shape: Any, preprocessing: Preprocessing) -> Dataset:
    """Person crops: the labels' targets, or the teacher's heatmaps of each crop."""
    crops = TeacherCropDataset if config.teacher else RefinerCropDataset
    return crops.from_config(config, shape, preprocessing)


def refiner_metrics(
    refiner: RefinerModel, config: TrainConfig, annotations: str, images: str
) -> dict[str, float]:
    """Top-down AP on the annotated people's boxes (the refiner's ceiling)."""
    return box_ap(refiner, annotations, images, refiner.device)


def _kind_loss(
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[..., torch.Tensor]:
    """A refiner's or PRN's loss in the task signature (its config is not needed)."""

    def task_loss(model, images, targets, masks, config):  # noqa: ANN001, ANN202
        return loss(model, images, targets, masks)

    return task_loss


#: Every task, by the tag of the kind it trains; ``task_of`` tries them in this order.
TASKS: dict[str, TrainingTask] = {
    PRN.tag: TrainingTask(
        PRN,
        is_prn_task,
        initial_prn,
        lambda config, shape, preprocessing: PRNSampleDataset.from_config(config, shape),
        _kind_loss(prn_loss),
        None,
        bf16_on_cpu=True,
    ),
    REFINER.tag: TrainingTask(
        REFINER,
        is_refiner_task,
        initial_refiner,
        refiner_dataset,
        _kind_loss(refiner_loss),
        refiner_metrics,
        bf16_on_cpu=False,  # its depthwise backward is slower in bf16 (autocast_dtype)
    ),
    BOTTOM_UP.tag: TrainingTask(
        BOTTOM_UP,
        lambda config: True,
        initial_imhn,
        imhn_dataset,
        imhn_loss,
        imhn_metrics,
        bf16_on_cpu=True,
    ),
}


def autocast_dtype(amp: bool, device: torch.device, task: TrainingTask) -> torch.dtype | None:
    """The mixed-precision type of the forward pass of ``task``'s network, or None for fp32.

    fp16 (with loss scaling) on CUDA. On CPUs that compute bf16 natively (AVX512-BF16 or AMX),
    bf16 for an IMHN or PRN, fp32 for a refiner (``bf16_on_cpu``): on a 2-core AMD EPYC with
    AVX512-BF16 (``bench/train_speed.py``, one run) bf16 makes a step of ``imhn-cpu-lite0``
    (batch 8, 384²) 2.9× faster than fp32, but one of ``refiner-lite0-128x96`` (batch 32) 0.61×
    as fast (its depthwise backward is slower in bf16). Elsewhere bf16 is emulated and slower
    than fp32. Weights and optimiser stay fp32.
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and task.bf16_on_cpu and torch.cpu._is_avx512_bf16_supported():
        return torch.bfloat16
    return None
