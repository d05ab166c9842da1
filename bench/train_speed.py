"""Seconds per training step on this machine, fp32 against mixed precision.

For each preset: ``Trainer.step`` itself (forward under autocast, the preset's loss: focal L2
over the five scales for an IMHN, the weighted heatmap MSE for a refiner; backward, AdamW with
gradient clipping, scheduler) on a batch of random images (``S × S`` for an IMHN, the preset's
crop for a refiner) with random targets and full masks, timed after a warm-up step; the figure
is the median of the timed steps. Each preset runs in fp32 and in the device's mixed type (fp16
on CUDA, bf16 on CPUs; emulated, so slow, where the CPU lacks native bf16), forced whatever the
trainer would choose; the last column is what ``--amp`` picks
(``posecli.train.tasks.autocast_dtype``).
Data loading is not included (measured separately: ~0.1 s per batch of 8 on one core).

    .venv/bin/python bench/train_speed.py [--presets imhn-cpu-lite0 refiner-lite0-128x96]
        [--batch-size 8] [--size 384]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from posecli.config import MODEL_PRESETS, REFINER_PRESETS, TrainConfig
from posecli.model.refiner import REFINER_STRIDE
from posecli.spec import NUM_CHANNELS, NUM_COCO_KEYPOINTS
from posecli.train.machinery import Distributed
from posecli.train.masks import scale_shapes
from posecli.train.tasks import TASKS, autocast_dtype
from posecli.train.trainer import Trainer


def write_one_person_set(root: Path) -> tuple[Path, Path]:
    """A COCO keypoint file listing one 64 × 64 image with one person, and an image folder.

    The trainer needs a dataset to be built, not read: the timed steps use random batches, so
    the folder stays empty.
    """
    images = root / "images"
    images.mkdir()
    keypoints = [value for k in range(NUM_COCO_KEYPOINTS) for value in (20 + k, 10 + 2 * k, 2)]
    annotations = root / "person_keypoints.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "person.png", "height": 64, "width": 64}],
        "annotations": [{
            "id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "keypoints": keypoints,
            "num_keypoints": NUM_COCO_KEYPOINTS, "bbox": [16, 8, 24, 40], "area": 960,
        }],
        "categories": [{"id": 1, "name": "person"}],
    }))  # fmt: skip
    return annotations, images


def seconds_per_step(
    preset: str,
    batch_size: int,
    size: int,
    mixed: torch.dtype | None,
    steps: int,
    device: torch.device,
) -> float:
    """Median seconds of ``steps`` calls of ``Trainer.step`` after one warm-up step, its forward
    under autocast to ``mixed`` (None: fp32), whatever the trainer would choose."""
    with tempfile.TemporaryDirectory() as root:
        annotations, images = write_one_person_set(Path(root))
        config = TrainConfig(
            annotations=str(annotations), images=str(images), out=str(Path(root) / "run"),
            preset=preset, input_size=size, batch_size=batch_size, optimizer="adamw",
            amp=mixed is not None, workers=0, device=str(device),
        )  # fmt: skip
        trainer = Trainer(config, Distributed(), device, progress=None)
    trainer.autocast_dtype = mixed
    batch = synthetic_batch(preset, batch_size, size)
    durations = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        trainer.step(*batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        durations.append(time.perf_counter() - start)
    return statistics.median(durations[1:])


def synthetic_batch(preset: str, batch_size: int, size: int) -> tuple[Any, Any, Any]:
    """Random ``(images, targets, masks)`` shaped as the preset's training data loader yields."""
    if preset in REFINER_PRESETS:
        shape = REFINER_PRESETS[preset]
        height, width = shape.crop_height, shape.crop_width
        images = torch.rand(batch_size, 3, height, width)  # (N, 3, H, W)
        cells = (height // REFINER_STRIDE, width // REFINER_STRIDE)
        heatmaps = (batch_size, shape.instances, NUM_COCO_KEYPOINTS, *cells)
        targets = torch.rand(heatmaps) * 0.1  # (N, λ, 17, H/4, W/4)
        return images, targets, torch.ones(heatmaps[:3])  # weights (N, λ, 17)
    images = torch.rand(batch_size, 3, size, size)  # (N, 3, S, S)
    shapes = scale_shapes(size, size)
    targets = [torch.rand(batch_size, NUM_CHANNELS, *s) * 0.1 for s in shapes]  # [(N, 50, h, w)]
    return images, targets, [torch.ones(batch_size, 1, *s) for s in shapes]  # [(N, 1, h, w)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["imhn-cpu-lite0", "refiner-lite0-128x96"],
        choices=sorted([*MODEL_PRESETS, *REFINER_PRESETS]),
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
    native = torch.float16 if device.type == "cuda" else torch.bfloat16
    print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch "
        f"{args.batch_size} (IMHN {args.size}², refiners their crop), mixed type {native}, "
        f"native here: {autocast_dtype(True, device, TASKS['imhn']) is not None}"
    )
    print("preset                 fp32 s/step  mixed s/step  speed-up  trainer's --amp")
    for name in args.presets:
        fp32 = seconds_per_step(name, args.batch_size, args.size, None, args.steps, device)
        mixed = seconds_per_step(name, args.batch_size, args.size, native, args.steps, device)
        task = TASKS["refiner" if name in REFINER_PRESETS else "imhn"]
        chosen = autocast_dtype(True, device, task) or "fp32"
        print(f"{name:<21}  {fp32:11.2f}  {mixed:12.2f}  {fp32 / mixed:7.2f}×  {chosen}")


if __name__ == "__main__":
    main()
