"""The table of network kinds: what every other module needs to know about a kind of network.

A kind is one row of :data:`KINDS`, keyed by the tag its checkpoints state (``"kind"``): its
frozen config record and presets, its builder, its typed output layout, the module both
inference backends run (one tensor out, from the network and its stated layout), its ONNX
input names and smallest probe inputs, and the flags that take it on the command line.
Loading (``posecli.loader``), the checkpoint format (``posecli.checkpoint``), the ONNX export
(``posecli.onnxfile``) and the inference handles (``posecli.networks``) read this table instead
of branching on types; training reads its own table of tasks keyed by the same tags
(``posecli.train.tasks``).

A kind plays one of three roles in inference (:data:`ROLES`): a bottom-up network whose
heatmaps the decoder reads, a top-down refiner, or a grouping network; the inference handle of
each role is ``posecli.networks.HANDLES[role]``. A new kind of network is a module (its config
record with ``to_dict``/``from_dict``, builder and layout) and one row here; to be trained by
``posecli train`` it adds a row to ``train.tasks.TASKS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from posecli.config import (
    MODEL_PRESETS,
    PRN_PRESETS,
    REFINER_PRESETS,
    ModelConfig,
    PRNConfig,
    RefinerConfig,
)
from posecli.model.imhn import IMHN_KIND, STEM_STRIDE, DecoderOutput, build_network
from posecli.model.imhn import output_layout as imhn_output_layout
from posecli.model.prn import PRN_KIND, build_prn, prn_output_layout
from posecli.model.refiner import REFINER_KIND, build_refiner, refiner_output_layout

#: The roles a kind plays in inference: its heatmaps decoded bottom-up, a top-down refiner of
#: person boxes, or a grouping network over heatmap crops.
BOTTOM_UP_ROLE, REFINER_ROLE, GROUPING_ROLE = ROLES = ("bottom-up", "refiner", "grouping")

#: A config record of any kind (``ModelConfig``, ``RefinerConfig``, ``PRNConfig``).
NetworkConfig = ModelConfig | RefinerConfig | PRNConfig


@dataclass(frozen=True)
class NetworkKind:
    """One kind of network (see the module docstring).

    ``role`` is one of :data:`ROLES`; ``graph_inputs`` is empty for a kind that runs on torch
    only (no ONNX file stands in for it); ``use`` names the command-line flags that take a
    checkpoint of this kind.
    """

    tag: str
    role: str
    label: str
    config_type: type
    presets: Mapping[str, Any]
    build: Callable[[Any], nn.Module]
    layout: Callable[[Any], Any]
    graph: Callable[[nn.Module, Any], nn.Module]
    graph_inputs: Callable[[Any], tuple[str, ...]]
    probe_inputs: Callable[[Any], tuple[np.ndarray, ...]]
    use: str

    @property
    def runs_on_onnx(self) -> bool:
        """Whether an exported ONNX file can stand in for a checkpoint of this kind."""
        return bool(self.graph_inputs(self.config_type()))


def _imhn_probe(config: ModelConfig) -> tuple[np.ndarray, ...]:
    """The smallest image an IMHN takes: float32 zeros ``(1, 3, s, s)``, ``s`` its input
    multiple."""
    side = STEM_STRIDE * 2**config.depth  # IMHN.input_multiple
    return (np.zeros((1, 3, side, side), dtype=np.float32),)


def _refiner_inputs(config: RefinerConfig) -> tuple[str, ...]:
    """``crops``, and ``instances`` when λ is a choice."""
    return ("crops", "instances") if config.instances > 1 else ("crops",)


def _refiner_probe(config: RefinerConfig) -> tuple[np.ndarray, ...]:
    """One zero crop ``(1, 3, crop_height, crop_width)`` float32 (and a ``(1,)`` int64 λ 0 for
    a refiner of several instances)."""
    crops = np.zeros((1, 3, config.crop_height, config.crop_width), dtype=np.float32)
    return (crops, np.zeros(1, dtype=np.int64))[: len(_refiner_inputs(config))]


def _prn_probe(config: PRNConfig) -> tuple[np.ndarray, ...]:
    """One zero heatmap crop ``(1, 17, crop_height, crop_width)`` float32."""
    return (np.zeros((1, 17, config.crop_height, config.crop_width), dtype=np.float32),)


def _itself(network: nn.Module, layout: Any) -> nn.Module:
    return network


BOTTOM_UP = NetworkKind(
    tag=IMHN_KIND,
    role=BOTTOM_UP_ROLE,
    label="bottom-up IMHN",
    config_type=ModelConfig,
    presets=MODEL_PRESETS,
    build=build_network,
    layout=imhn_output_layout,
    graph=DecoderOutput,
    graph_inputs=lambda config: ("images",),
    probe_inputs=_imhn_probe,
    use="--model",
)
REFINER = NetworkKind(
    tag=REFINER_KIND,
    role=REFINER_ROLE,
    label="refiner",
    config_type=RefinerConfig,
    presets=REFINER_PRESETS,
    build=build_refiner,
    layout=refiner_output_layout,
    graph=_itself,
    graph_inputs=_refiner_inputs,
    probe_inputs=_refiner_probe,
    use="--refine --refiner",
)
PRN = NetworkKind(
    tag=PRN_KIND,
    role=GROUPING_ROLE,
    label="PRN",
    config_type=PRNConfig,
    presets=PRN_PRESETS,
    build=build_prn,
    layout=prn_output_layout,
    graph=_itself,
    graph_inputs=lambda config: (),
    probe_inputs=_prn_probe,
    use="--grouping prn --prn",
)

#: Every kind, by the tag its checkpoints state.
KINDS: dict[str, NetworkKind] = {kind.tag: kind for kind in (BOTTOM_UP, REFINER, PRN)}


def kind_of(config: NetworkConfig) -> NetworkKind:
    """The kind whose config record ``config`` is (ValueError for anything else)."""
    for kind in KINDS.values():
        if type(config) is kind.config_type:
            return kind
    raise ValueError(f"{type(config).__name__} is no network config")


def output_layout(config: NetworkConfig) -> Any:
    """The typed output contract of the network ``config`` describes (``IMHNLayout``,
    ``RefinerLayout`` or ``PRNLayout``; checkpoints store its ``to_dict()``)."""
    return kind_of(config).layout(config)


def describe_config(config: NetworkConfig) -> str:
    """The preset name of ``config``, or its record with its fields."""
    for name, preset in kind_of(config).presets.items():
        if preset == config:
            return name
    fields = ", ".join(f"{key}={value}" for key, value in config.to_dict().items())
    return f"{type(config).__name__}({fields})"
