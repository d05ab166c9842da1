"""Size, compute and CPU speed of the IMHN presets, per backend (torch, onnxruntime).

For every preset: parameters, multiply-accumulates of the convolutions and Linear layers
(counted by forward hooks; GFLOPs = 2 × GMACs) and images per second at batch 1 for a 4:3
landscape image of the given long sides, padded to a multiple of 64 (e.g. 384×288 → 384×320),
on each backend of ``--backends`` (``posecli.backends``, the Estimator's runners: torch on the
network prepared as ``load_model`` prepares it on CPU, eval and channels-last, ``--nchw`` keeping
the contiguous layout; onnxruntime on its ONNX export, written to a temporary folder), then the
onnxruntime / torch ratio per size. Random weights (speed does not depend on them); ``--models``
times networks as saved in checkpoints or registered models instead. ``--threads`` sets either
backend's threads. The machine may be shared: the figures are the median of the timed runs.

    .venv/bin/python bench/model_speed.py [--presets imhn-cpu imhn-tiny] [--sizes 384 512]
    .venv/bin/python bench/model_speed.py --models default --backends torch onnxruntime
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from posecli.backends import ONNXRUNTIME, TORCH, Runner, TorchRunner, make_runner
from posecli.config import MODEL_PRESETS, ModelConfig
from posecli.errors import PoseCliError
from posecli.loader import load_model
from posecli.model import build_network
from posecli.networks import PoseModel
from posecli.onnxfile import export_onnx, graph_module


def padded_input_size(long_side: int, multiple: int = 64) -> tuple[int, int]:
    """(height, width) of the network input for a 4:3 landscape image of ``long_side``."""
    height = round(long_side * 3 / 4)
    pad = -height % multiple
    return height + pad, long_side + (-long_side % multiple)


def count_macs(network: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of all Conv2d and Linear layers for one (1, 3, height, width) input."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (module.in_channels // module.groups) * kernel

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    with torch.inference_mode():
        network(torch.zeros(1, 3, height, width))
    for handle in handles:
        handle.remove()
    return total


def images_per_second(runner: Runner, height: int, width: int, runs: int) -> float:
    """Median images/s at batch 1 over ``runs`` timed passes after one warm-up pass."""
    image = np.random.default_rng(0).normal(size=(1, 3, height, width)).astype(np.float32)
    durations = []
    runner(image)
    for _ in range(runs):
        start = time.perf_counter()
        runner(image)
        durations.append(time.perf_counter() - start)
    return 1.0 / statistics.median(durations)


def preset_model(name: str, config: ModelConfig) -> PoseModel:
    """A randomly initialised network of ``config``, in eval mode."""
    return PoseModel.from_network(build_network(config).eval(), config, name=name)


def runner(model: PoseModel, backend: str, folder: Path, nchw: bool, threads: int) -> Runner:
    """The Estimator's runner of ``model`` on ``backend`` (onnxruntime: its export in
    ``folder``; torch with ``nchw``: the network as built, contiguous)."""
    if backend == ONNXRUNTIME:
        path = export_onnx(model, folder / f"{model.name.replace('/', '_')}.onnx")
        return make_runner(load_model(path), ONNXRUNTIME, torch.device("cpu"), threads=threads)
    if not nchw:
        return make_runner(model, TORCH, torch.device("cpu"), threads=threads)
    network = model.network.to(memory_format=torch.contiguous_format)  # type: ignore[union-attr]
    return TorchRunner(graph_module(network, model.layout), torch.device("cpu"), torch.float32)


def measure(
    model: PoseModel, sizes: Sequence[int], runs: int, backends: dict[str, Runner]
) -> list[list[str]]:
    """Table rows of one network: name, backend, parameters, then GFLOPs and images/s per
    size; with both backends, a last row of the onnxruntime / torch ratios."""
    assert model.network is not None
    parameters = sum(p.numel() for p in model.network.parameters())
    flops = [2 * count_macs(model.network, *padded_input_size(side)) / 1e9 for side in sizes]
    speeds = {
        backend: [images_per_second(run, *padded_input_size(side), runs) for side in sizes]
        for backend, run in backends.items()
    }
    rows = []
    for backend, measured in speeds.items():
        cells = [model.name, backend, f"{parameters / 1e6:.2f} M"]
        pairs = zip(flops, measured, strict=True)  # (GFLOPs, images/s) per size
        rows.append(cells + [f"{value:.2f}" for pair in pairs for value in pair])
    if len(speeds) == 2:
        ratios = [o / t for o, t in zip(speeds[ONNXRUNTIME], speeds[TORCH], strict=True)]
        rows.append(
            [model.name, "onnxruntime/torch", ""] + [c for r in ratios for c in ("", f"{r:.2f}×")]
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets", nargs="*", help="preset names (default: all, or none with --models)"
    )
    parser.add_argument(
        "--models", nargs="*", default=[], help="registered model names or checkpoint paths"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[384, 512], help="long sides")
    parser.add_argument(
        "--backends", nargs="+", choices=[TORCH, ONNXRUNTIME], default=[TORCH, ONNXRUNTIME]
    )
    parser.add_argument("--runs", type=int, default=10, help="timed runs per network")
    parser.add_argument(
        "--official-runs", type=int, default=3, help="timed runs for imhn-official (slow)"
    )
    parser.add_argument("--threads", type=int, default=0, help="backend threads (0: default)")
    parser.add_argument("--nchw", action="store_true", help="torch: contiguous, not channels-last")
    args = parser.parse_args(argv)
    if args.presets is None:
        args.presets = [] if args.models else list(MODEL_PRESETS)
    unknown = [name for name in args.presets if name not in MODEL_PRESETS]
    if unknown:
        parser.error(f"unknown presets {unknown}; known: {sorted(MODEL_PRESETS)}")

    header = ["network", "backend", "params"]
    for long_side in args.sizes:
        height, width = padded_input_size(long_side)
        header += [f"GFLOPs@{width}×{height}", f"img/s@{width}×{height}"]
    print(
        f"torch {torch.__version__} ({'NCHW' if args.nchw else 'channels-last'} weights), "
        f"threads {args.threads or 'default'}, batch 1, "
        "GFLOPs = 2 × multiply-accumulates of conv + linear layers"
    )
    rows = [header]
    with tempfile.TemporaryDirectory(prefix="model_speed_") as folder:
        models = [(preset_model(name, MODEL_PRESETS[name]), name) for name in args.presets]
        for name in args.models:
            try:
                models.append((load_model(name), name))
            except PoseCliError as error:
                parser.error(str(error))
        for model, name in models:
            runs = args.official_runs if name == "imhn-official" else args.runs
            runners = {
                backend: runner(model, backend, Path(folder), args.nchw, args.threads)
                for backend in args.backends
            }
            rows += measure(model, args.sizes, runs, runners)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
