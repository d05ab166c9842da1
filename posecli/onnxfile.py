"""ONNX files of posecli networks (issue 19): export, the metadata that makes one load like a
checkpoint, the checks on reading one back, and the export cache of the onnxruntime backend.

An exported file holds one graph, batch, height and width dynamic, opset :data:`OPSET`:

* an IMHN: input ``images`` float32 ``(B, 3, H, W)`` (normalised, H and W multiples of
  ``IMHN.input_multiple``), output ``heatmaps`` float32 ``(B, 50, H/4, W/4)``: the one output the
  decoder reads (``layout.decode_stack``, ``layout.decode_scale``), the only one exported;
* a refiner: input ``crops`` float32 ``(B, 3, crop_height, crop_width)`` and, when it has more
  than one instance selector, ``instances`` int64 ``(B,)``; output ``heatmaps`` float32
  ``(B, 17, crop_height/4, crop_width/4)``.

Its ``metadata_props`` hold the header of a posecli checkpoint, each value a JSON string:
``format``, ``format_version``, ``kind``, ``config``, ``preprocessing``, ``provenance`` and
``output`` (the layout). ``posecli.loader.load`` reads them back; :func:`check_graph`
refuses a graph that does not take and give what they state.

The cache: ``$XDG_CACHE_HOME/posecli/onnx`` (default ``~/.cache/posecli/onnx``), one file per
network content (a SHA-256 of its config, preprocessing, tensors), opset and :data:`GRAPH_VERSION`,
so that a ``.pt`` model run with ``--backend onnxruntime`` is exported once.

:func:`quantize_onnx` makes an int8 copy of an exported file (same inputs, output, metadata):
static quantisation, calibrated on inputs the caller gives.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from posecli.checkpoint import checkpoint_header
from posecli.errors import CheckpointError, MissingDependencyError, OutputError, UsageError
from posecli.io.files import error_reason, write_atomically
from posecli.model import KINDS, NetworkConfig, kind_of, output_layout
from posecli.networks import PoseModel, RefinerModel
from posecli.onnxtensors import float_initializers

logger = logging.getLogger(__name__)

#: ONNX opset of the exported graphs.
OPSET = 17

#: Version of the exported graph's form; a new one makes the cache export again.
GRAPH_VERSION = 1

#: The checkpoint keys the metadata holds (everything but the tensors).
HEADER_KEYS = (
    "format",
    "format_version",
    "kind",
    "config",
    "preprocessing",
    "provenance",
    "output",
)


def graph_module(network: nn.Module, layout: Any) -> nn.Module:
    """What both backends run, with one tensor out, for a network of output ``layout`` (the
    model's, ``model.layout``): its kind's ``graph`` (an IMHN's ``DecoderOutput`` of the output
    the layout names, a refiner itself: ``(crops, instances)`` → heatmaps)."""
    return KINDS[layout.kind].graph(network, layout)


def graph_names(config: NetworkConfig) -> list[str]:
    """The graph's input names (its kind's ``graph_inputs``): ``images``; ``crops`` (+
    ``instances`` when λ is a choice)."""
    return list(kind_of(config).graph_inputs(config))


def probe_inputs(config: NetworkConfig) -> tuple[np.ndarray, ...]:
    """The smallest inputs the network takes, batch 1 (its kind's ``probe_inputs``)."""
    return kind_of(config).probe_inputs(config)


def onnx_bytes(model: PoseModel | RefinerModel, opset: int = OPSET) -> bytes:
    """The ONNX file of ``model`` (module docstring), metadata included, as bytes.

    Raises:
        MissingDependencyError: the ``onnx`` package (the exporter needs it) is missing.
        CheckpointError: ``model`` was itself loaded from an ONNX file (no network to export).
    """
    onnx = _import("onnx")
    if model.network is None:
        raise CheckpointError(f"model {model.name} is an ONNX file already: export its .pt")
    config = model.config
    module = graph_module(model.network, model.layout).eval()
    names = graph_names(config)
    inputs = tuple(torch.from_numpy(array) for array in probe_inputs(config))
    axes = {name: {0: "batch"} for name in names}
    axes[names[0]] = {0: "batch", 2: "height", 3: "width"}
    axes["heatmaps"] = {0: "batch", 2: "rows", 3: "columns"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation, tracer notes
        torch.onnx.export(
            module, inputs, buffer, dynamo=False, opset_version=opset, input_names=names,
            output_names=["heatmaps"], dynamic_axes=axes,
        )  # fmt: skip
    model.network.eval()  # the exporter restores the wrapper's mode onto it: keep eval
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata(model).items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def metadata(model: PoseModel | RefinerModel) -> dict[str, str]:
    """The checkpoint header of ``model`` as ONNX ``metadata_props``: key → JSON string."""
    header = checkpoint_header(model.config, model.preprocessing, model.provenance)
    return {key: json.dumps(header[key]) for key in HEADER_KEYS}


def export_onnx(model: PoseModel | RefinerModel, path: Path, opset: int = OPSET) -> Path:
    """Write the ONNX file of ``model`` to ``path`` atomically; return ``path`` (OutputError
    when it cannot be written)."""
    data = onnx_bytes(model, opset)
    return write_atomically(path, data, name=f"ONNX model {path}")


def quantize_onnx(
    source: Path, out: Path, calibration: Iterable[dict[str, np.ndarray]], note: str
) -> Path:
    """Write an int8 copy of the posecli ONNX file ``source`` to ``out`` atomically; return
    ``out``.

    Static quantisation in QDQ form (onnxruntime.quantization, after its pre-processing: shape
    inference, graph optimisation): weights int8 per output channel, activations uint8 with
    ranges from the min/max seen on ``calibration`` (feeds: input name → float32 array, as the
    graph takes them). The first and last convolutions stay float: the raw image and the
    heatmaps lose most in 8 bits (weights/README.md). The metadata is kept; its provenance
    gains ``quantized``: ``note``.

    Raises:
        UsageError: ``calibration`` gave no input.
        MissingDependencyError: onnx or onnxruntime is missing.
        OutputError: ``out`` cannot be written.
    """
    onnx = _import("onnx")
    quantization = _import("onnxruntime.quantization")
    with tempfile.TemporaryDirectory(prefix="posecli-int8-") as folder:
        prepared, quantized = Path(folder) / "prepared.onnx", Path(folder) / "int8.onnx"
        quantization.quant_pre_process(str(source), str(prepared))
        proto = onnx.load(str(prepared))
        convolutions = [node.name for node in proto.graph.node if node.op_type == "Conv"]
        quantization.quantize_static(
            str(prepared), str(quantized), _Feeds(calibration),
            quant_format=quantization.QuantFormat.QDQ, per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=[convolutions[0], convolutions[-1]],
        )  # fmt: skip
        result = onnx.load(str(quantized))
    stated = onnx.load(str(source)).metadata_props
    header = {entry.key: entry.value for entry in stated if entry.key in HEADER_KEYS}
    provenance = {**json.loads(header["provenance"]), "quantized": note}
    header["provenance"] = json.dumps(provenance)
    del result.metadata_props[:]
    for key, value in header.items():
        result.metadata_props.add(key=key, value=value)
    return write_atomically(out, result.SerializeToString(), name=f"ONNX model {out}")


class _Feeds:
    """``calibration`` feeds as onnxruntime's CalibrationDataReader (``get_next``, then
    ``None``); UsageError when there is none at all."""

    def __init__(self, calibration: Iterable[dict[str, np.ndarray]]) -> None:
        self.feeds: Iterator[dict[str, np.ndarray]] = iter(calibration)
        self.fed = False

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self.feeds, None)
        if feed is None and not self.fed:
            raise UsageError("nothing to calibrate int8 on: no input came from the calibration")
        self.fed = True
        return feed


def session(source: Path | bytes, threads: int = 0, optimise: bool = True) -> Any:
    """An onnxruntime CPU session of the ONNX file ``source`` (or of its bytes).

    ``threads``: intra-op threads (0: onnxruntime's default, one per physical core); workers do
    not spin while waiting, which keeps them from starving the pipeline's other threads and
    other processes on a busy machine. ``optimise`` False skips graph optimisation (for checks).

    Raises:
        MissingDependencyError: onnxruntime is not installed.
        CheckpointError: the file is not a loadable ONNX model (truncated, not ONNX...).
    """
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings would reach the terminal
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    model = source if isinstance(source, bytes) else str(source)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for corrupt files
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        name = "exported in memory" if isinstance(source, bytes) else str(source)
        raise CheckpointError(f"cannot read ONNX model {name}: {first}") from error


def check_finite(source: Path) -> None:
    """CheckpointError when a floating-point weight (initializer) of the ONNX file ``source``
    holds NaN or infinity: the twin of the checkpoint's check (such a network finds no one).
    Read with :func:`posecli.onnxtensors.float_initializers`, without importing ``onnx``."""
    try:
        for name, values in float_initializers(source.read_bytes()):
            if not np.isfinite(values).all():
                raise CheckpointError(
                    f"ONNX model {source.name} holds NaN or infinite values in {name}: it is "
                    "corrupt, or its training diverged"
                )
    except (OSError, ValueError) as error:  # the session read it already: rare
        raise CheckpointError(f"cannot read ONNX model {source}: {error}") from error


def read_header(runtime: Any, source: Path) -> dict[str, Any]:
    """The checkpoint header (:data:`HEADER_KEYS`) an ONNX session's metadata states
    (CheckpointError when a key is missing or not JSON)."""
    stated = runtime.get_modelmeta().custom_metadata_map
    missing = [key for key in HEADER_KEYS if key not in stated]
    if missing:
        raise CheckpointError(
            f"{source} is an ONNX model without posecli metadata (no {', '.join(missing)}); "
            "export it with posecli export --format onnx"
        )
    try:
        return {key: json.loads(stated[key]) for key in HEADER_KEYS}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{source} has metadata that is not JSON: {error}") from error


def check_graph(runtime: Any, config: NetworkConfig, source: Path) -> None:
    """CheckpointError unless the session's graph takes and gives what ``config`` states: the
    input names, and for the smallest input (:func:`probe_inputs`) heatmaps of the stated
    channels at the stated stride."""
    names = [entry.name for entry in runtime.get_inputs()]
    outputs = [entry.name for entry in runtime.get_outputs()]
    wanted = graph_names(config)
    if names != wanted or outputs != ["heatmaps"]:
        raise CheckpointError(
            f"{source} does not match its stated network: inputs {names}, outputs {outputs}; "
            f"expected inputs {wanted}, output ['heatmaps']"
        )
    probe = probe_inputs(config)
    layout = output_layout(config)
    height, width = probe[0].shape[2:]
    expected = (1, layout.channels, height // layout.stride, width // layout.stride)
    try:
        found = runtime.run(["heatmaps"], dict(zip(names, probe, strict=True)))[0].shape
    except Exception as error:  # onnxruntime's own types: shapes that do not fit
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{source} does not run as its stated network: {first}") from error
    if tuple(found) != expected:
        raise CheckpointError(
            f"{source} does not match its stated network: heatmaps {tuple(found)} for an input "
            f"of {tuple(probe[0].shape)}, expected {expected}"
        )


def cache_folder() -> Path:
    """``$XDG_CACHE_HOME/posecli/onnx``, by default ``~/.cache/posecli/onnx`` (OutputError
    when neither names a folder)."""
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError as error:  # no HOME, and no home in the password database
        raise OutputError(f"no folder for the ONNX cache: {error}") from error
    return Path(base) / "posecli" / "onnx"


def content_key(model: PoseModel | RefinerModel, opset: int = OPSET) -> str:
    """SHA-256 (hex) of what the exported graph depends on: the graph version, opset, config,
    preprocessing and every tensor of the network (names, dtypes, shapes, bytes)."""
    assert model.network is not None
    digest = hashlib.sha256()
    stated = [GRAPH_VERSION, opset, type(model.config).__name__, model.config.to_dict()]
    digest.update(json.dumps([*stated, model.preprocessing.to_dict()]).encode())
    for name, tensor in model.network.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_onnx(
    model: PoseModel | RefinerModel, folder: Path | None = None, refresh: bool = False
) -> Path:
    """The cached ONNX file of ``model``'s network, exported first when missing (or, with
    ``refresh``, found unreadable).

    Raises:
        OutputError: the cache folder cannot be created or written.
    """
    folder = cache_folder() if folder is None else folder
    path = folder / f"{content_key(model)[:32]}-opset{OPSET}.onnx"
    if path.is_file() and not refresh:
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error_reason(error)
        raise OutputError(f"cannot create the ONNX cache {folder}: {reason}") from error
    logger.info("exporting %s to ONNX once: %s", model.name, path)
    return export_onnx(model, path)


def onnx_source(model: PoseModel | RefinerModel, refresh: bool = False) -> Path | bytes:
    """What onnxruntime loads for ``model``'s network: its :func:`cached_onnx` file, or where
    the cache cannot be read or written (no permission, no home, a full disk) the export in
    memory, with a warning: the run goes on, only without the cache."""
    try:
        return cached_onnx(model, refresh=refresh)
    except (OutputError, OSError) as error:
        reason = error_reason(error) if isinstance(error, OSError) else str(error)
        logger.warning("ONNX cache not usable (%s): exporting %s in memory", reason, model.name)
        return onnx_bytes(model)


def _import(name: str) -> Any:
    """Import onnx or onnxruntime (core dependencies), or a MissingDependencyError."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise MissingDependencyError(
            f"the onnxruntime backend and ONNX export need the {name} module: pip install "
            f"{name.partition('.')[0]}"
        ) from error
