"""Seconds per training step on this machine, fp32 against mixed precision.

For each preset: one optimiser step (forward under the trainer's autocast type, focal L2 loss
over the five scales, backward, AdamW with gradient clipping) on a batch of random ``S × S``
images with random targets and full masks, the network laid out as the trainer lays it out
(channels-last on CPU), timed after a warm-up step; the figure is the median
of the timed steps. ``amp`` uses ``posecli.train.trainer.autocast_dtype``: fp16 on CUDA, bf16 on
CPUs that compute it natively, else nothing (then both rows measure fp32). Data loading is not
included (measured separately: ~0.1 s per batch of 8 on one core).

    .venv/bin/python bench/train_speed.py [--presets imhn-cpu-lite0] [--batch-size 8] [--size 384]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

from posecli.config import MODEL_PRESETS, TrainConfig
from posecli.model import build_network
from posecli.spec import NUM_CHANNELS
from posecli.train.loss import heatmap_loss
from posecli.train.masks import scale_shapes
from posecli.train.trainer import autocast_dtype, build_optimizer
from posecli.weights import prepare_network


def seconds_per_step(
    preset: str, batch_size: int, size: int, amp: bool, steps: int, device: torch.device
) -> float:
    """Median seconds of ``steps`` optimiser steps after one warm-up step."""
    config = TrainConfig(annotations="", images="", optimizer="adamw", amp=amp)
    network = prepare_network(build_network(MODEL_PRESETS[preset]), device).train()
    optimizer = build_optimizer(network, config, world_size=1)
    dtype = autocast_dtype(amp, device)
    images = torch.rand(batch_size, 3, size, size, device=device)  # (N, 3, S, S)
    shapes = scale_shapes(size, size)
    targets = [torch.rand(batch_size, NUM_CHANNELS, *s, device=device) * 0.1 for s in shapes]
    masks = [torch.ones(batch_size, 1, *s, device=device) for s in shapes]
    durations = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = network(images)  # [stacks][scales] (N, 50, h_j, w_j)
        loss = heatmap_loss(outputs, targets, masks, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        durations.append(time.perf_counter() - start)
    return statistics.median(durations[1:])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets", nargs="+", default=["imhn-cpu-lite0"], choices=sorted(MODEL_PRESETS)
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per step")
    parser.add_argument("--size", type=int, default=384, help="square crop, multiple of 64")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp_type = autocast_dtype(True, device)
    print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size} × {args.size}², mixed precision here: {amp_type or 'none'}"
    )
    print("preset            fp32 s/step  amp s/step  speed-up")
    for name in args.presets:
        fp32 = seconds_per_step(name, args.batch_size, args.size, False, args.steps, device)
        mixed = seconds_per_step(name, args.batch_size, args.size, True, args.steps, device)
        print(f"{name:<16}  {fp32:11.2f}  {mixed:10.2f}  {fp32 / mixed:7.2f}×")


if __name__ == "__main__":
    main()
