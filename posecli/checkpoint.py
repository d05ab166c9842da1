"""The posecli checkpoint format, and the official Simple Pose checkpoint.

* A **posecli checkpoint** is a dict ``{"format": "posecli", "format_version": 1, "kind": tag,
  "config": config.to_dict(), "preprocessing": Preprocessing.to_dict(), "provenance": {...},
  "output": layout.to_dict(), "state_dict": {name: tensor}}`` (tensors may be stored as float16;
  they are loaded as float32), written by :func:`save_checkpoint`. ``"kind"`` is the tag of a
  row of ``posecli.model.kinds.KINDS`` (``"imhn"`` when absent), which says which config record
  ``"config"`` is; ``"output"`` states the network's output layout, checked on reading.
* The **official checkpoint** ``PoseNet_52_epoch.pth``: ``{"weights": state_dict, ...}`` with keys
  prefixed ``posenet.`` (and possibly ``module.``), a 4-stack IMHN that takes BGR images scaled to
  [0, 1] (``OFFICIAL_PREPROCESSING``).

Files are always read with ``torch.load(..., weights_only=True)``: a pickle that carries code is
refused. Tensor names and shapes must match the network exactly (:func:`load_state_dict`).
An exported ONNX file's metadata holds the same header (``posecli.onnxfile``).
"""

from __future__ import annotations

import os
import pickle
import re
import tarfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.serialization import MAGIC_NUMBER

from posecli.config import MODEL_PRESETS, ModelConfig, Preprocessing
from posecli.errors import CheckpointError, OutputError, UsageError
from posecli.io.files import remove_stale_temporaries, write_atomically
from posecli.model import BOTTOM_UP, KINDS, NetworkConfig, NetworkKind, describe_config, kind_of

CHECKPOINT_FORMAT = "posecli"
CHECKPOINT_FORMAT_VERSION = 1

#: Input convention of the official checkpoint: BGR, scaled to [0, 1], padding grey 128.
OFFICIAL_PREPROCESSING = Preprocessing(
    colour_order="BGR", scale=1.0 / 255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), pad_value=128
)

#: Preprocessing of a network wrapped without one (the published convention).
DEFAULT_PREPROCESSING = Preprocessing()

#: How many mismatching tensors an error message names, per kind of mismatch.
MISMATCHES_SHOWN = 3


@dataclass(frozen=True)
class Header:
    """What a checkpoint (or an ONNX file's metadata) says about its network: its kind, config,
    preprocessing, provenance and stated output layout (``None`` for files that state none)."""

    kind: NetworkKind
    config: NetworkConfig
    preprocessing: Preprocessing
    provenance: dict[str, Any]
    stated_layout: dict[str, Any] | None = None


def save_checkpoint(
    path: str | os.PathLike[str],
    network: nn.Module,
    config: NetworkConfig,
    preprocessing: Preprocessing,
    provenance: Mapping[str, Any],
    half: bool = False,
) -> Path:
    """Write a posecli checkpoint atomically (``posecli.io.files.write_atomically``).

    The kind follows ``config`` (``posecli.model.kind_of``).

    ``half`` stores floating-point tensors as float16 (half the size; loaded as float32).
    ``provenance`` must hold only plain data (str, int, float, bool, None, lists, tuples,
    dicts with str keys) so that the file loads with ``weights_only=True``.
    """
    check_network_config(network, config)
    check_plain_data(dict(provenance), "provenance")
    state_dict = {}
    for key, tensor in network.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()  # portable NCHW layout
        state_dict[key] = tensor.half() if half and tensor.is_floating_point() else tensor
    checkpoint = {**checkpoint_header(config, preprocessing, provenance), "state_dict": state_dict}
    destination = Path(path)
    if not destination.parent.is_dir():
        raise OutputError(f"cannot write checkpoint {destination}: no folder {destination.parent}")
    remove_stale_temporaries(destination.parent, destination.name)
    write_atomically(
        destination, lambda file: torch.save(checkpoint, file), name=f"checkpoint {destination}"
    )
    return destination


def checkpoint_header(
    config: NetworkConfig,
    preprocessing: Preprocessing,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything a posecli checkpoint holds but its tensors (an ONNX file's metadata too):
    format, version, kind (from ``config``), config, preprocessing, provenance, output layout."""
    kind = kind_of(config)
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "kind": kind.tag,
        "config": config.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "provenance": dict(provenance),
        "output": kind.layout(config).to_dict(),  # what the network outputs, checked on reading
    }


def is_onnx(path: Path) -> bool:
    """Whether ``path`` names an exported ONNX model (``*.onnx``) rather than a torch file."""
    return path.suffix.lower() == ".onnx"


#: The start of every file ``torch.save`` writes: a zip archive, or (before torch 1.6) a pickled
#: magic number (protocol 2 by default), or (very old torch) a tar archive.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = MAGIC_NUMBER.to_bytes(10, "little")


def _torch_file_kind(path: Path) -> str | None:
    """``None`` for a file ``torch.save`` could have written, else what the file looks like."""
    try:
        with open(path, "rb") as file:
            head = file.read(64)
    except OSError as error:
        reason = error.strerror or error
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from error
    if head.startswith(_ZIP_MAGIC) or _LEGACY_MAGIC in head[:32] or tarfile.is_tarfile(path):
        return None
    if not head:
        return "an empty file"
    if head[:1] == b"\x80" or head[-1:] == b"." or head[:2] in (b"(d", b"(l", b"(I"):
        return "a Python pickle"
    return "an unknown binary file" if b"\0" in head else "a text file"


def read_checkpoint(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; every failure becomes a CheckpointError.

    A file that ``torch.save`` cannot have written is refused before torch reads it, and
    torch's warnings about a file's pickle protocol are silenced: the error says it all.
    """
    kind = _torch_file_kind(path)
    if kind is not None:
        raise CheckpointError(f"{path} is not a posecli or PyTorch checkpoint: it is {kind}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's weights-only unpickler names any class or function it will not import
        # ("GLOBAL module.name"): that is the pickle trying to reach code.
        culprit = re.search(r"GLOBAL ([\w.]+)", str(error))
        if culprit is None:
            raise CheckpointError(f"cannot read checkpoint {path}: {_reason(error)}") from error
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data "
            f"(it references {culprit.group(1)}), which could run code; "
            "only weights-only checkpoints are accepted"
        ) from error
    except Exception as error:  # torch.load raises many types on corrupt or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(error)}") from error


#: Lines of torch.load's error messages that explain nothing about the file itself.
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _reason(error: BaseException) -> str:
    """The error's type and the first informative line of its message."""
    for line in str(error).splitlines():
        line = line.strip()
        if line and not line.startswith(_BOILERPLATE):
            return f"{type(error).__name__}: {line}"
    return type(error).__name__


def parse_checkpoint(checkpoint: Any, path: Path) -> tuple[Header, dict[str, Any]]:
    """The header and the state dict (network names) of a checkpoint of either layout."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} is not a checkpoint: expected a dict, found {type(checkpoint).__name__}"
        )
    if checkpoint.get("format") == CHECKPOINT_FORMAT:
        header = parse_header(checkpoint, path)
        if not isinstance(checkpoint.get("state_dict"), dict):
            raise CheckpointError(f"{path} is a posecli checkpoint without a 'state_dict' dict")
        return header, _strip_prefix(checkpoint["state_dict"], "module.")
    if isinstance(checkpoint.get("weights"), dict):
        return _parse_official(checkpoint, path)
    raise CheckpointError(
        f"{path} is neither a posecli checkpoint (no 'format': 'posecli') nor a Simple Pose "
        f"checkpoint (no 'weights' state dict); its keys are {sorted(map(str, checkpoint))[:5]}"
    )


def parse_header(header: dict[str, Any], path: Path) -> Header:
    """The :class:`Header` of a posecli checkpoint or an ONNX file's metadata (the dict
    :func:`checkpoint_header` makes); CheckpointError for another version, an unknown kind or
    records that do not parse."""
    if header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} states format {header.get('format')!r}, not 'posecli'")
    version = header.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has posecli checkpoint format version {version!r}; "
            f"this posecli reads version {CHECKPOINT_FORMAT_VERSION}"
        )
    kind = KINDS.get(str(header.get("kind", BOTTOM_UP.tag)))
    if kind is None:
        raise CheckpointError(
            f"{path} holds a network of kind {header.get('kind')!r}; this posecli knows "
            f"{', '.join(KINDS)}"
        )
    for key in ("config", "preprocessing"):
        if not isinstance(header.get(key), dict):
            raise CheckpointError(f"{path} is a posecli checkpoint without a {key!r} dict")
    try:
        config = kind.config_type.from_dict(header["config"])
        preprocessing = Preprocessing.from_dict(header["preprocessing"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has an invalid {kind.label} config: {error}") from error
    provenance = header.get("provenance")
    provenance = dict(provenance) if isinstance(provenance, dict) else {}
    stated = header.get("output")
    header_record = Header(kind, config, preprocessing, provenance, stated)
    check_stated_layout(header_record, path)
    return header_record


def check_stated_layout(header: Header, path: Path) -> None:
    """CheckpointError when the output layout a file states (older IMHN files state none) is
    not the one this posecli builds from its config: the decoder would misread it."""
    stated = header.stated_layout
    if stated is None:
        return
    built = header.kind.layout(header.config).to_dict()
    if not isinstance(stated, dict):
        raise CheckpointError(f"{path} states an output layout that is no dict")
    if stated != built:
        differing = sorted(key for key in {*stated, *built} if stated.get(key) != built.get(key))
        raise CheckpointError(
            f"{path} states an output layout this posecli does not build "
            f"(differs in {', '.join(differing)})"
        )


def _parse_official(checkpoint: dict[str, Any], path: Path) -> tuple[Header, dict[str, Any]]:
    """Header and state dict of the official Simple Pose checkpoint (an IMHN)."""
    state_dict = _strip_prefix(_strip_prefix(checkpoint["weights"], "module."), "posenet.")
    stacks = {key.split(".")[1] for key in state_dict if key.startswith("hourglass.")}
    config = ModelConfig(stacks=len(stacks)) if stacks else MODEL_PRESETS["imhn-official"]
    provenance: dict[str, Any] = {"source": "official Simple Pose checkpoint", "file": path.name}
    for key in ("epoch", "train_loss"):
        if isinstance(checkpoint.get(key), int | float):
            provenance[key] = checkpoint[key]
    return Header(BOTTOM_UP, config, OFFICIAL_PREPROCESSING, provenance), state_dict


def _strip_prefix(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Remove ``prefix`` from every key, when every key has it."""
    named = {str(key): value for key, value in state_dict.items()}
    if named and all(key.startswith(prefix) for key in named):
        return {key.removeprefix(prefix): value for key, value in named.items()}
    return named


def load_state_dict(
    network: nn.Module,
    state_dict: dict[str, Any],
    config: NetworkConfig,
    path: Path,
) -> None:
    """Copy the checkpoint's tensors into ``network``, strictly, in the network's dtypes
    (float16 storage becomes float32), after naming the first mismatches in a CheckpointError.
    """
    expected = network.state_dict()
    problems = _mismatches(state_dict, expected)
    if problems:
        raise CheckpointError(
            f"checkpoint {path.name} does not match {describe_config(config)}: "
            + "; ".join(problems)
        )
    for key, value in state_dict.items():
        if value.is_floating_point() and not _finite(value):
            raise CheckpointError(
                f"checkpoint {path.name} holds NaN or infinite values in {key}: it is corrupt, "
                "or its training diverged"
            )
    converted = {key: value.to(dtype=expected[key].dtype) for key, value in state_dict.items()}
    network.load_state_dict(converted, strict=True)


def _finite(values: torch.Tensor) -> bool:
    """Whether every value of a floating-point tensor is finite, checked in NumPy: torch's
    check of float16 tensors took 2.7 s of CPU time for the default model (issue 38)."""
    if values.dtype == torch.bfloat16:  # no NumPy twin
        values = values.float()
    return bool(np.isfinite(values.detach().cpu().numpy()).all())


def _mismatches(found: dict[str, Any], expected: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable missing, unexpected, non-tensor and mis-shaped entries (first few each)."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    not_tensors = [
        f"{key} is a {type(value).__name__}, not a tensor"
        for key, value in found.items()
        if key in expected and not isinstance(value, torch.Tensor)
    ]
    wrong_shapes = [
        f"shape of {key} is {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
        for key, value in found.items()
        if key in expected
        and isinstance(value, torch.Tensor)
        and tuple(value.shape) != tuple(expected[key].shape)
    ]
    problems = []
    if missing:
        problems.append("missing " + _first_few(missing))
    if unexpected:
        problems.append("unexpected " + _first_few(unexpected))
    problems += not_tensors[:MISMATCHES_SHOWN] + wrong_shapes[:MISMATCHES_SHOWN]
    return problems


def _first_few(names: list[str]) -> str:
    shown = ", ".join(names[:MISMATCHES_SHOWN])
    more = len(names) - MISMATCHES_SHOWN
    return f"{shown} (+{more} more)" if more > 0 else shown


def check_network_config(network: nn.Module, config: NetworkConfig) -> None:
    """UsageError when ``network`` was built from another config than ``config``."""
    built = getattr(network, "config", config)
    if built != config:
        raise UsageError(
            f"network was built as {describe_config(built)}, not {describe_config(config)}"
        )


def check_plain_data(value: Any, where: str) -> None:
    """Raise UsageError unless ``value`` is plain data that ``weights_only`` loading accepts.

    Types are checked exactly: subclasses such as NumPy's float64 would make the file
    unloadable.
    """
    if value is None or type(value) in (str, int, float, bool):
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            check_plain_data(item, f"{where}[{index}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise UsageError(f"{where} has a non-string key {key!r}")
            check_plain_data(item, f"{where}.{key}")
        return
    raise UsageError(
        f"{where} is a {type(value).__name__}; checkpoints hold only str, int, float, bool, "
        "None, lists, tuples and dicts"
    )
