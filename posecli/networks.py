"""Inference handles: a loaded network of each kind with its config, preprocessing and
provenance (``PoseModel``, ``RefinerModel``, ``PRNModel``), made by ``posecli.loader`` or wrapped
around an in-memory network; preparing a network for a device; weight averaging.

``HANDLES`` maps each role a network kind plays (``posecli.model.kinds.ROLES``) to its handle
type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from posecli.checkpoint import DEFAULT_PREPROCESSING, check_network_config
from posecli.config import ModelConfig, Preprocessing, PRNConfig, RefinerConfig
from posecli.errors import UsageError
from posecli.model import NetworkConfig, output_layout
from posecli.model.kinds import BOTTOM_UP_ROLE, GROUPING_ROLE, REFINER_ROLE

_Handle = TypeVar("_Handle", bound="LoadedNetwork")


@dataclass
class LoadedNetwork:
    """A network ready for inference, with what it needs to be fed (every kind's handle
    shares these fields): its device, its layout and wrapping an in-memory network.

    ``network`` is in eval mode (``None`` for a model loaded from an exported ONNX file);
    ``preprocessing`` says how images become its input; ``provenance`` is free-form (data,
    teacher, recipe, date...); ``file`` is the checkpoint or ONNX file it was loaded from
    (``None`` for an in-memory network).
    """

    network: nn.Module | None
    config: NetworkConfig
    preprocessing: Preprocessing
    name: str
    provenance: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None

    @property
    def device(self) -> torch.device:
        """Device holding the network's parameters (the CPU for an ONNX file)."""
        if self.network is None:
            return torch.device("cpu")
        return next(self.network.parameters()).device

    @property
    def layout(self) -> Any:
        """The network's typed output contract (``posecli.model.output_layout``)."""
        return output_layout(self.config)

    @classmethod
    def from_network(
        cls: type[_Handle],
        network: nn.Module,
        config: NetworkConfig,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        name: str = "random",
    ) -> _Handle:
        """Wrap an in-memory network (switched to eval mode, left on its device)."""
        check_network_config(network, config)
        return cls(network.eval(), config, preprocessing, name, {"source": "in-memory network"})


@dataclass
class PoseModel(LoadedNetwork):
    """A bottom-up network ready for inference with everything needed to feed it (the fields
    of ``LoadedNetwork``; ``config`` an IMHN's)."""

    config: ModelConfig


@dataclass
class RefinerModel(LoadedNetwork):
    """A top-down refiner ready for inference (issue 16): ``network`` (eval mode) maps
    ``(B, 3, crop_height, crop_width)`` crops normalised per ``preprocessing`` and ``(B,)``
    instance selectors to ``(B, 17, crop_height/4, crop_width/4)`` COCO heatmaps (``None`` for
    a refiner loaded from an exported ONNX file); the other fields as ``LoadedNetwork``'s."""

    config: RefinerConfig


@dataclass
class PRNModel(LoadedNetwork):
    """A Pose Residual Network ready for inference (issue 20): ``network`` (eval mode) maps
    ``(B, 17, crop_height, crop_width)`` keypoint heatmaps cropped to person boxes to logits of
    the same shape (``posecli.model.prn``); ``preprocessing`` is unused (it reads heatmaps, not
    images); the other fields as ``LoadedNetwork``'s."""

    config: PRNConfig


def prepare_network(network: nn.Module, device: torch.device) -> nn.Module:
    """Move ``network`` to ``device`` in eval mode; on CPU use the channels-last layout.

    Channels-last parameters make oneDNN convolutions ~1.4× faster on CPU for the same
    results; outputs then come out channels-last (strided, not contiguous, in NCHW terms).
    """
    if device.type == "cpu":
        network = network.to(device=device, memory_format=torch.channels_last)
    else:
        network = network.to(device=device)
    return network.eval()


#: The handle type of each role a network kind plays (``posecli.model.kinds.ROLES``).
HANDLES: dict[str, type[LoadedNetwork]] = {
    BOTTOM_UP_ROLE: PoseModel,
    REFINER_ROLE: RefinerModel,
    GROUPING_ROLE: PRNModel,
}


def average_models(models: Sequence[_Handle]) -> _Handle:
    """The uniform weight average of ``models`` (a "model soup", Wortsman et al., ICML 2022):
    networks of one kind, config and preprocessing, typically fine-tuned from one parent.

    Floating-point tensors (weights, BatchNorm running statistics) are averaged in float32
    and stored in the first model's network, in place; other tensors (BatchNorm's batch
    counters) are kept from the first. Returns the first model, renamed and with provenance
    ``averaged_from`` (every model's file, or name when it has none) added. One config means
    the same tensor names and shapes: the loaders checked each file against its config.

    Raises:
        UsageError: no model; with several, an ONNX file among them or models that differ in
            kind, config or preprocessing.
    """
    if not models:
        raise UsageError("nothing to average: give at least one model")
    first = models[0]
    if len(models) == 1:
        return first
    signature = (type(first), first.config, first.preprocessing)
    for model in models:
        if model.network is None:
            raise UsageError(f"cannot average {model.name}: an ONNX file holds no weights")
        if (type(model), model.config, model.preprocessing) != signature:
            raise UsageError(
                f"cannot average {model.name} with {first.name}: another kind, config or "
                "preprocessing"
            )
    states = [model.network.state_dict() for model in models]  # one config: the same tensors
    averaged = {
        key: torch.stack([state[key].float() for state in states]).mean(dim=0).to(tensor.dtype)
        for key, tensor in states[0].items()
        if tensor.is_floating_point()
    }
    first.network.load_state_dict(averaged, strict=False)
    names = [model.name if model.file is None else str(model.file) for model in models]
    first.name = f"average of {len(models)} models"
    first.provenance = {**first.provenance, "averaged_from": names}
    return first
