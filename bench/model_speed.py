"""Size, compute and CPU speed of the IMHN presets.

For every preset: parameters, multiply-accumulates of the convolutions and Linear layers
(counted by forward hooks; GFLOPs = 2 × GMACs) and images per second at batch 1 for a 4:3
landscape image of the given long sides, padded to a multiple of 64 (e.g. 384×288 → 384×320).
Runs under torch.inference_mode after a warm-up pass, with random weights (speed does not
depend on them) prepared as ``load_model`` prepares them on CPU (eval, channels-last; ``--nchw``
keeps the contiguous layout for comparison). ``--models`` times networks as saved in checkpoints
or registered models instead (their own configuration and weights, loaded by ``load_model``).
The machine may be shared: the figures are the median of the timed runs.

    .venv/bin/python bench/model_speed.py [--presets imhn-cpu imhn-tiny] [--sizes 384 512]
    .venv/bin/python bench/model_speed.py --models default runs/x/checkpoint-last.pt
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from posecli.config import MODEL_PRESETS, ModelConfig
from posecli.errors import PoseCliError
from posecli.model import build_network
from posecli.weights import load_model, prepare_network


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


def images_per_second(network: nn.Module, height: int, width: int, runs: int) -> float:
    """Median images/s at batch 1 over ``runs`` timed passes after one warm-up pass."""
    image = torch.randn(1, 3, height, width)  # (1, 3, H, W)
    durations = []
    with torch.inference_mode():
        network(image)
        for _ in range(runs):
            start = time.perf_counter()
            network(image)
            durations.append(time.perf_counter() - start)
    return 1.0 / statistics.median(durations)


def preset_network(config: ModelConfig, nchw: bool) -> nn.Module:
    """A randomly initialised network of ``config`` in eval mode, prepared like ``load_model``."""
    network = build_network(config).eval()
    if nchw:
        return network
    return prepare_network(network, torch.device("cpu"))


def measure(name: str, network: nn.Module, sizes: Sequence[int], runs: int) -> list[str]:
    """One table row: name, parameters, then GFLOPs and images/s per size."""
    parameters = sum(p.numel() for p in network.parameters())
    cells = [name, f"{parameters / 1e6:.2f} M"]
    for long_side in sizes:
        height, width = padded_input_size(long_side)
        gflops = 2 * count_macs(network, height, width) / 1e9
        speed = images_per_second(network, height, width, runs)
        cells += [f"{gflops:.2f}", f"{speed:.2f}"]
    return cells


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets", nargs="*", help="preset names (default: all, or none with --models)"
    )
    parser.add_argument(
        "--models", nargs="*", default=[], help="registered model names or checkpoint paths"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[384, 512], help="long sides")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per network")
    parser.add_argument(
        "--official-runs", type=int, default=3, help="timed runs for imhn-official (slow)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--nchw", action="store_true", help="presets: contiguous, not channels-last"
    )
    args = parser.parse_args(argv)
    if args.presets is None:
        args.presets = [] if args.models else list(MODEL_PRESETS)
    unknown = [name for name in args.presets if name not in MODEL_PRESETS]
    if unknown:
        parser.error(f"unknown presets {unknown}; known: {sorted(MODEL_PRESETS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    header = ["network", "params"]
    for long_side in args.sizes:
        height, width = padded_input_size(long_side)
        header += [f"GFLOPs@{width}×{height}", f"img/s@{width}×{height}"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, "
        f"{'NCHW' if args.nchw else 'channels-last'} weights, "
        "GFLOPs = 2 × multiply-accumulates of conv + linear layers"
    )
    rows = [header]
    for name in args.presets:
        runs = args.official_runs if name == "imhn-official" else args.runs
        network = preset_network(MODEL_PRESETS[name], args.nchw)
        rows.append(measure(name, network, args.sizes, runs))
    for name in args.models:
        try:
            network = load_model(name).network
        except PoseCliError as error:
            parser.error(str(error))
        rows.append(measure(name, network, args.sizes, args.runs))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
