"""Speed of the top-down refiner (issue 16) on this CPU: crops per second by batch size.

For every refiner preset: parameters, GFLOPs per crop (Conv2d and Linear multiply-accumulates
counted by forward hooks, as ``bench/model_speed.py`` does; GFLOPs = 2 × GMACs), then crops
per second of the network alone at each batch size (random weights, prepared as at inference:
eval, channels-last; every crop with its own instance selector), and of the whole refinement
of one image (``Refinement.keypoints``: warpAffine crops, normalisation, every λ of every box,
sub-pixel decoding, the map back to image pixels) for a batch of person boxes. ``--refiner``
times a checkpoint instead of the presets. The machine may be shared: figures are the median
of the timed runs after a warm-up.

    .venv/bin/python bench/refine_speed.py [--presets refiner-lite0-256x192] [--threads 1]
    .venv/bin/python bench/refine_speed.py --batch-sizes 1 8 32 --runs 5
    .venv/bin/python bench/refine_speed.py --refiner runs/refiner/checkpoint-last.pt
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from model_speed import count_macs

from posecli.config import REFINER_PRESETS, InferenceConfig, Preprocessing
from posecli.model import build_refiner
from posecli.refine import CropBox, Refinement
from posecli.weights import RefinerModel, load_refiner, prepare_network


def median_seconds(work: Callable[[], object], runs: int) -> float:
    """Median wall time of ``work`` over ``runs`` timed calls after one warm-up call."""
    work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def network_rates(refiner: RefinerModel, batch_sizes: Sequence[int], runs: int) -> list[float]:
    """Crops per second of the network alone at each batch size."""
    shape = refiner.config
    rates = []
    for batch in batch_sizes:
        crops = torch.rand(batch, 3, shape.crop_height, shape.crop_width)  # (B, 3, H, W)
        selectors = torch.arange(batch) % shape.instances  # (B,)
        crops = crops.contiguous(memory_format=torch.channels_last)

        def forward(crops: torch.Tensor = crops, selectors: torch.Tensor = selectors) -> None:
            with torch.inference_mode():
                refiner.network(crops, selectors)

        rates.append(batch / median_seconds(forward, runs))
    return rates


def refinement_rate(refiner: RefinerModel, boxes: int, batch: int, runs: int) -> float:
    """Boxes per second of ``Refinement.keypoints`` on a 640×480 image (every λ of each box)."""
    config = InferenceConfig(device="cpu", refine=True, refine_batch_size=batch)
    refinement = Refinement(refiner, config, torch.device("cpu"))
    image = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    people = [CropBox(80 + 60 * k, 240, 90, 120) for k in range(boxes)]
    return boxes / median_seconds(lambda: refinement.keypoints(image, people), runs)


def report(name: str, refiner: RefinerModel, args: argparse.Namespace) -> None:
    """Print one refiner's size, compute and speeds."""
    shape = refiner.config
    parameters = sum(p.numel() for p in refiner.network.parameters())
    flops = 2 * count_macs(refiner.network, shape.crop_height, shape.crop_width) / 1e9
    print(
        f"{name}: crop {shape.crop_height}×{shape.crop_width}, N={shape.instances}, "
        f"{parameters / 1e6:.2f} M parameters, {flops:.2f} GFLOPs per crop"
    )
    rates = network_rates(refiner, args.batch_sizes, args.runs)
    for batch, rate in zip(args.batch_sizes, rates, strict=True):
        print(f"  network, batch {batch:>3}: {rate:7.1f} crops/s")
    per_box = refinement_rate(refiner, args.boxes, max(args.batch_sizes), args.runs)
    print(
        f"  refinement of {args.boxes} boxes × {shape.instances} λ (crops, decoding, mapping): "
        f"{per_box:.1f} boxes/s"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(REFINER_PRESETS))
    parser.add_argument("--refiner", help="time this refiner checkpoint instead of the presets")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--boxes", type=int, default=8, help="person boxes per image")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.refiner:
        report(args.refiner, load_refiner(args.refiner), args)
        return
    for name in args.presets:
        network = prepare_network(build_refiner(REFINER_PRESETS[name]), torch.device("cpu"))
        report(name, RefinerModel(network, REFINER_PRESETS[name], Preprocessing(), name), args)


if __name__ == "__main__":
    main()
