"""What runs the networks (issue 19): torch or ONNX Runtime, behind one small runner interface.

A runner maps a network's inputs, NumPy arrays (an IMHN: float32 ``(B, 3, H, W)``; a refiner:
float32 ``(B, 3, h, w)`` crops and int64 ``(B,)`` instance selectors), to its one output as a
torch tensor on the Estimator's device: the decoder's ``(B, 50, H/4, W/4)`` heatmaps of an IMHN
(``posecli.onnxfile.graph_module``), a refiner's ``(B, 17, h/4, w/4)``.

* ``torch``: the network itself (channels-last on CPU, fp16 on CUDA with ``--half``).
* ``onnxruntime``: an ONNX Runtime CPU session of the model's ``.onnx`` file, or for a ``.pt``
  model of its export, cached per network content (``posecli.onnxfile.cached_onnx``; in
  memory, with a warning, where the cache cannot be used).
* ``auto``: onnxruntime for a model loaded from a file, on the CPU, when onnxruntime is
  installed; torch on CUDA, and for in-memory networks (a network in training changes: each
  version would be exported anew). On 2 CPU cores the bundled default model's network runs
  1.8× as fast on onnxruntime (``bench/model_speed.py``), ``posecli video`` 1.1–1.3×
  (``bench/pipeline_speed.py``), and torch's threads collapse when another process is busy.

``threads`` (0: the backend's default) sets torch's intra-op threads (process-wide) or the
session's own.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from posecli.config import BACKENDS, InferenceConfig
from posecli.device import resolve_device
from posecli.errors import CheckpointError, MissingDependencyError, UsageError
from posecli.networks import PoseModel, RefinerModel, prepare_network
from posecli.onnxfile import graph_module, graph_names, onnx_source, session

logger = logging.getLogger(__name__)

AUTO, TORCH, ONNXRUNTIME = BACKENDS


class Runner(Protocol):
    """A network's inputs (NumPy arrays) → its one output (a torch tensor on the device)."""

    def __call__(self, *inputs: np.ndarray) -> torch.Tensor: ...


def onnxruntime_installed() -> bool:
    """Whether onnxruntime and onnx (which the export of a ``.pt`` model needs) are there."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def choose_backend(
    backend: str, device: torch.device, device_spec: str, model: PoseModel | RefinerModel
) -> tuple[str, torch.device]:
    """The backend and device a run uses: ``backend`` (``BACKENDS``) for ``model`` on ``device``
    (resolved from ``device_spec``, which may be ``"auto"``).

    Raises:
        UsageError: an unknown backend; torch for an ONNX file; onnxruntime on a CUDA device
            that was asked for by name.
        MissingDependencyError: onnxruntime asked for by name but not installed.
    """
    if backend == AUTO:
        from_file = device.type == "cpu" and model.file is not None and onnxruntime_installed()
        backend = ONNXRUNTIME if model.network is None or from_file else TORCH
    if backend == TORCH and model.network is None:
        raise UsageError(
            f"model {model.name} is an ONNX file: it runs with --backend onnxruntime (or auto)"
        )
    if backend == TORCH:
        return backend, device
    if not onnxruntime_installed():
        raise MissingDependencyError("--backend onnxruntime needs onnxruntime and onnx installed")
    if device.type != "cpu" and device_spec != AUTO:
        raise UsageError(f"--backend onnxruntime runs on the CPU, not {device}: use --device cpu")
    return backend, torch.device("cpu")


def make_runner(
    model: PoseModel | RefinerModel,
    backend: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    threads: int = 0,
) -> Runner:
    """The runner of ``model`` on a backend :func:`choose_backend` chose; the torch network is
    prepared in place (``networks.prepare_network``, then ``dtype``)."""
    if backend == TORCH:
        if threads:
            torch.set_num_threads(threads)
        assert model.network is not None  # choose_backend refused torch for an ONNX file
        network = prepare_network(model.network, device).to(dtype=dtype)
        return TorchRunner(graph_module(network, model.layout), device, dtype)
    names = graph_names(model.config)
    if model.network is None:  # an ONNX file
        assert model.file is not None
        return OnnxRunner(session(model.file, threads), names)
    try:
        runtime = session(onnx_source(model), threads)
    except CheckpointError as error:  # a damaged cache entry: export it again
        logger.warning("re-exporting the cached ONNX model: %s", error)
        runtime = session(onnx_source(model, refresh=True), threads)
    return OnnxRunner(runtime, names)


@dataclass(frozen=True)
class NetworkStage:
    """A loaded network ready to run: the model, its runner, and where it runs (backend,
    device, float dtype of its inputs)."""

    model: PoseModel | RefinerModel
    runner: Runner
    backend: str
    device: torch.device
    dtype: torch.dtype


def network_stage(model: PoseModel | RefinerModel, config: InferenceConfig) -> NetworkStage:
    """``model`` on the backend and device ``config`` asks for (:func:`choose_backend`), float16
    with ``config.half`` on CUDA (float32 elsewhere, said in the log), with its runner
    (:func:`make_runner`: the onnxruntime backend may export a ``.pt`` model to the cache)."""
    device = resolve_device(config.device)
    backend, device = choose_backend(config.backend, device, config.device, model)
    dtype = torch.float16 if config.half and device.type == "cuda" else torch.float32
    if config.half and dtype != torch.float16:
        logger.info("fp16 requested on %s: running float32 (fp16 is CUDA only)", device)
    runner = make_runner(model, backend, device, dtype, config.threads)
    return NetworkStage(model, runner, backend, device, dtype)


class TorchRunner:
    """Runs a torch module (``graph_module``) under ``torch.inference_mode``."""

    def __init__(self, module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.module, self.device, self.dtype = module, device, dtype

    @torch.inference_mode()
    def __call__(self, *inputs: np.ndarray) -> torch.Tensor:
        tensors = [
            torch.from_numpy(array).to(
                device=self.device, dtype=self.dtype if array.dtype.kind == "f" else None
            )
            for array in inputs
        ]
        return self.module(*tensors)


class OnnxRunner:
    """Runs an onnxruntime session whose graph takes ``names`` and gives ``heatmaps``; inputs
    beyond ``names`` (the λ of a one-instance refiner, always 0) are not passed."""

    def __init__(self, runtime: Any, names: list[str]) -> None:
        self.runtime, self.names = runtime, names

    def __call__(self, *inputs: np.ndarray) -> torch.Tensor:
        chosen = zip(self.names, inputs, strict=False)  # (name, array) of what the graph takes
        feeds = {name: np.ascontiguousarray(array) for name, array in chosen}
        return torch.from_numpy(self.runtime.run(["heatmaps"], feeds)[0])
