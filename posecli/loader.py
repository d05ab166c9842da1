"""One loader: a registered name or a file → the inference handle of a network.

``load(name_or_path, role)`` reads a posecli checkpoint, the official Simple Pose checkpoint
(an IMHN) or an exported ONNX file (kinds that run on onnxruntime), checks that it holds a
network of a kind (a row of ``posecli.model.kinds.KINDS``) that plays ``role`` (bottom-up,
refiner or grouping; another is named with the flags that take it), builds the network from
its config, checks its stated output layout and copies its tensors strictly
(``posecli.checkpoint``), then prepares it for the device. A model of an ONNX file has no torch
network (``network`` is ``None``) and runs on the onnxruntime backend only; its graph is
checked against its stated header.

``load_model``, ``load_refiner`` and ``load_prn`` are ``load`` with the role named.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from posecli.checkpoint import (
    Header,
    is_onnx,
    load_state_dict,
    parse_checkpoint,
    parse_header,
    read_checkpoint,
)
from posecli.device import resolve_device
from posecli.errors import CheckpointError
from posecli.model import KINDS, NetworkKind, describe_config
from posecli.model.kinds import BOTTOM_UP_ROLE, GROUPING_ROLE, REFINER_ROLE
from posecli.networks import (
    HANDLES,
    LoadedNetwork,
    PoseModel,
    PRNModel,
    RefinerModel,
    prepare_network,
)
from posecli.onnxfile import check_finite, check_graph, read_header, session
from posecli.registry import locate

logger = logging.getLogger(__name__)


def load(
    name_or_path: str | os.PathLike[str], role: str = BOTTOM_UP_ROLE, device: str = "cpu"
) -> LoadedNetwork:
    """The handle (``posecli.networks.HANDLES[role]``) of a registered model or a file holding
    a network of a kind that plays ``role`` (``posecli.model.kinds.ROLES``), on ``device``
    (see ``posecli.device.resolve_device``).

    Raises:
        ModelNotFoundError: unknown name, missing file, or no bundled default yet.
        CheckpointError: unreadable or unsafe file, another kind of network, unknown layout,
            tensors that do not match the network, or an ONNX file of a kind that runs on
            torch only.
        UsageError: an invalid device.
    """
    target = resolve_device(device)
    path, name = locate(name_or_path)
    handle = HANDLES[role]
    if is_onnx(path):
        header = _onnx_header(path, role)
        return handle(None, header.config, header.preprocessing, name, header.provenance, path)
    header, state_dict = parse_checkpoint(read_checkpoint(path), path)
    _check_role(header, role, path)
    network = _built(header, path)
    load_state_dict(network, state_dict, header.config, path)
    label, described = header.kind.label, describe_config(header.config)
    logger.info("loaded %s %s (%s) from %s", label, name, described, path)
    network = prepare_network(network, target)
    return handle(network, header.config, header.preprocessing, name, header.provenance, path)


def load_model(name_or_path: str | os.PathLike[str], device: str = "cpu") -> PoseModel:
    """A bottom-up network, the IMHN or another bottom-up kind (``load``)."""
    return load(name_or_path, BOTTOM_UP_ROLE, device)  # type: ignore[return-value]


def load_refiner(name_or_path: str | os.PathLike[str], device: str = "cpu") -> RefinerModel:
    """A top-down refiner (``load``)."""
    return load(name_or_path, REFINER_ROLE, device)  # type: ignore[return-value]


def load_prn(name_or_path: str | os.PathLike[str], device: str = "cpu") -> PRNModel:
    """A Pose Residual Network, the grouping network (``load``)."""
    return load(name_or_path, GROUPING_ROLE, device)  # type: ignore[return-value]


def checkpoint_kind(name_or_path: str | os.PathLike[str]) -> NetworkKind:
    """The kind of network a registered model or checkpoint file holds (ModelNotFoundError /
    CheckpointError as ``load``; CheckpointError for an ONNX file: what asks, training and
    export, needs the torch network)."""
    path, _ = locate(name_or_path)
    if is_onnx(path):
        raise CheckpointError(
            f"{path} is an ONNX model, for inference only: training and export start from "
            "its .pt checkpoint"
        )
    header, _ = parse_checkpoint(read_checkpoint(path), path)
    return header.kind


def _check_role(header: Header, role: str, path: Path) -> None:
    """CheckpointError unless the file holds a network of a kind that plays ``role``; the error
    names the flags that take the kind it holds."""
    if header.kind.role != role:
        raise CheckpointError(
            f"{path} is a {header.kind.tag!r} checkpoint, not a {role} network; use it with "
            f"{header.kind.use}"
        )


def _built(header: Header, path: Path) -> nn.Module:
    """The network ``header`` describes, freshly built (CheckpointError for a config its
    builder refuses)."""
    try:
        return header.kind.build(header.config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path} has an invalid {header.kind.label} config: {error}"
        ) from error


def _onnx_header(path: Path, role: str) -> Header:
    """The header of an exported ONNX file holding a network that plays ``role``, its metadata
    checked as a checkpoint's header is and its graph against it (CheckpointError;
    MissingDependencyError without onnxruntime)."""
    if not any(kind.runs_on_onnx for kind in KINDS.values() if kind.role == role):
        raise CheckpointError(f"{path}: a {role} network runs on torch only; use its .pt file")
    runtime = session(path, threads=1, optimise=False)
    header = parse_header(read_header(runtime, path), path)
    _check_role(header, role, path)
    check_graph(runtime, header.config, path)
    check_finite(path)
    logger.info("loaded ONNX %s %s (%s)", header.kind.label, path, describe_config(header.config))
    return header
