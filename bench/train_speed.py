"""Seconds per training step on this machine, fp32 against mixed precision.

For each preset: ``Trainer.step`` itself (forward under the trainer's autocast type, focal L2
loss over the five scales, backward, AdamW with gradient clipping, scheduler) on a batch of
random ``S × S`` images with random targets and full masks, timed after a warm-up step; the
figure is the median of the timed steps. ``amp`` uses ``posecli.train.trainer.autocast_dtype``:
fp16 on CUDA, bf16 on CPUs that compute it natively, else nothing (then both rows measure fp32).
Data loading is not included (measured separately: ~0.1 s per batch of 8 on one core).

    .venv/bin/python bench/train_speed.py [--presets imhn-cpu-lite0] [--batch-size 8] [--size 384]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from posecli.config import MODEL_PRESETS, TrainConfig
from posecli.spec import NUM_CHANNELS, NUM_COCO_KEYPOINTS
from posecli.train.masks import scale_shapes
from posecli.train.trainer import Distributed, Trainer, autocast_dtype


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
    preset: str, batch_size: int, size: int, amp: bool, steps: int, device: torch.device
) -> float:
    """Median seconds of ``steps`` calls of ``Trainer.step`` after one warm-up step."""
    with tempfile.TemporaryDirectory() as root:
        annotations, images = write_one_person_set(Path(root))
        config = TrainConfig(
            annotations=str(annotations), images=str(images), out=str(Path(root) / "run"),
            preset=preset, input_size=size, batch_size=batch_size, optimizer="adamw", amp=amp,
            workers=0, device=str(device),
        )  # fmt: skip
        trainer = Trainer(config, Distributed(), device, progress=None)
    batch = torch.rand(batch_size, 3, size, size)  # (N, 3, S, S)
    shapes = scale_shapes(size, size)
    targets = [torch.rand(batch_size, NUM_CHANNELS, *s) * 0.1 for s in shapes]  # [(N, 50, h, w)]
    masks = [torch.ones(batch_size, 1, *s) for s in shapes]  # [(N, 1, h, w)]
    durations = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        trainer.step(batch, targets, masks)
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
