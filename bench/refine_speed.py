"""Speed of the top-down refiner (issue 16) on this CPU: crops per second by batch size.

For every refiner preset: parameters, GFLOPs per crop (Conv2d and Linear multiply-accumulates
counted by forward hooks, as ``bench/model_speed.py`` does; GFLOPs = 2 × GMACs), then crops
per second of the network alone at each batch size (random weights, prepared as at inference:
eval, channels-last; every crop with its own instance selector), and of the whole refinement
of one image (``Refinement.keypoints``: warpAffine crops, normalisation, every λ of every box,
sub-pixel decoding, the map back to image pixels) for a batch of person boxes. ``--refiner``
times a checkpoint instead of the presets; ``--onnx`` times refiners (registered names, ``.pt``
or ``.onnx`` files) on onnxruntime, e.g. the bundled one against its int8 file, and prints each
one's speed relative to the first. The machine may be shared: figures are the median of the
timed runs after a warm-up.

    .venv/bin/python bench/refine_speed.py [--presets refiner-lite0-256x192] [--threads 1]
    .venv/bin/python bench/refine_speed.py --batch-sizes 1 8 32 --runs 5
    .venv/bin/python bench/refine_speed.py --refiner runs/refiner/checkpoint-last.pt
    .venv/bin/python bench/refine_speed.py --onnx refiner refiner-int8 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from model_speed import count_macs

from posecli.backends import ONNXRUNTIME, TORCH, Runner, make_runner
from posecli.boxes import CropBox
from posecli.config import REFINER_PRESETS, InferenceConfig, Preprocessing
from posecli.loader import load_refiner
from posecli.model import build_refiner
from posecli.networks import RefinerModel, prepare_network
from posecli.refine import Refinement


def median_seconds(work: Callable[[], object], runs: int) -> float:
    """Median wall time of ``work`` over ``runs`` timed calls after one warm-up call."""
    work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def network_rates(
    runner: Runner, refiner: RefinerModel, batch_sizes: Sequence[int], runs: int
) -> list[float]:
    """Crops per second of ``refiner``'s network alone, run by ``runner``, at each batch size."""
    shape = refiner.config
    rates = []
    for batch in batch_sizes:
        crops = np.random.default_rng(0).random(
            (batch, 3, shape.crop_height, shape.crop_width), dtype=np.float32
        )  # (B, 3, H, W)
        selectors = np.arange(batch, dtype=np.int64) % shape.instances  # (B,)
        rates.append(batch / median_seconds(lambda c=crops, s=selectors: runner(c, s), runs))
    return rates


def refinement_rate(refiner: RefinerModel, backend: str, args: argparse.Namespace) -> float:
    """Boxes per second of ``Refinement.keypoints`` on a 640×480 image (every λ of each box;
    ``args.boxes`` boxes, batches of the largest of ``args.batch_sizes``)."""
    batch, boxes, runs = max(args.batch_sizes), args.boxes, args.runs
    config = InferenceConfig(
        device="cpu",
        refine=True,
        refine_batch_size=batch,
        refine_flip=args.flip,
        threads=args.threads,
    )
    refinement = Refinement(refiner, config, torch.device("cpu"), backend=backend)
    image = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    people = [CropBox(80 + 60 * k, 240, 90, 120) for k in range(boxes)]
    return boxes / median_seconds(lambda: refinement.keypoints(image, people), runs)


def _flipped(args: argparse.Namespace) -> str:
    return ", flip-tested" if args.flip else ""


def report(name: str, refiner: RefinerModel, args: argparse.Namespace) -> None:
    """Print one refiner's size, compute and speeds."""
    shape = refiner.config
    parameters = sum(p.numel() for p in refiner.network.parameters())
    flops = 2 * count_macs(refiner.network, shape.crop_height, shape.crop_width) / 1e9
    print(
        f"{name}: crop {shape.crop_height}×{shape.crop_width}, N={shape.instances}, "
        f"{parameters / 1e6:.2f} M parameters, {flops:.2f} GFLOPs per crop"
    )
    runner = make_runner(refiner, TORCH, torch.device("cpu"))
    rates = network_rates(runner, refiner, args.batch_sizes, args.runs)
    for batch, rate in zip(args.batch_sizes, rates, strict=True):
        print(f"  network, batch {batch:>3}: {rate:7.1f} crops/s")
    per_box = refinement_rate(refiner, TORCH, args)
    print(
        f"  refinement of {args.boxes} boxes × {shape.instances} λ{_flipped(args)} "
        f"(crops, decoding, mapping): {per_box:.1f} boxes/s"
    )


def compare_on_onnxruntime(names: Sequence[str], args: argparse.Namespace) -> None:
    """Print the crops/s and boxes/s of each refiner on onnxruntime, and its ratio to the
    first one's (the same batches, in one run)."""
    first: list[float] = []
    for name in names:
        refiner = load_refiner(name)
        runner = make_runner(refiner, ONNXRUNTIME, torch.device("cpu"), threads=args.threads)
        rates = network_rates(runner, refiner, args.batch_sizes, args.runs)
        rates.append(refinement_rate(refiner, ONNXRUNTIME, args))
        first = first or rates
        print(f"{name} on onnxruntime ({refiner.name}):")
        labels = [f"network, batch {batch:>3}" for batch in args.batch_sizes]
        labels.append(f"refinement of {args.boxes} boxes{_flipped(args)}")
        unit = ["crops/s"] * len(args.batch_sizes) + ["boxes/s"]
        for label, rate, base, per in zip(labels, rates, first, unit, strict=True):
            print(f"  {label}: {rate:7.1f} {per} ({rate / base:.2f}× the first)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(REFINER_PRESETS))
    parser.add_argument("--refiner", help="time this refiner checkpoint instead of the presets")
    parser.add_argument(
        "--onnx", nargs="+", metavar="REFINER", help="compare these refiners on onnxruntime"
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--boxes", type=int, default=8, help="person boxes per image")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="flip-test the whole refinement (images' default; video's is --no-flip)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.onnx:
        compare_on_onnxruntime(args.onnx, args)
        return
    if args.refiner:
        report(args.refiner, load_refiner(args.refiner), args)
        return
    for name in args.presets:
        network = prepare_network(build_refiner(REFINER_PRESETS[name]), torch.device("cpu"))
        report(name, RefinerModel(network, REFINER_PRESETS[name], Preprocessing(), name), args)


if __name__ == "__main__":
    main()
