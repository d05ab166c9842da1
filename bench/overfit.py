"""Overfit check: train a small IMHN on a few annotated images, then measure AP on them.

The whole loop (COCO annotations → augmentation and targets → focal L2 loss → trainer →
checkpoint → Estimator → decoder → pycocotools AP) must demonstrably learn: a CPU-sized preset
trained on 2–4 images of ``../shared/data/eval/mmpose-coco`` should reach AP ≥ 0.5 on those
same images. Evaluation goes through ``load_model`` + ``Estimator.predict`` +
``coco_keypoint_ap``, as ``posecli eval --model RUN/checkpoint-last.pt`` does.

    .venv/bin/python bench/overfit.py --out /tmp/overfit_run    # tens of minutes on 2 cores

Prints training progress, the evaluation figures, and the AP as its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from posecli.config import AugmentConfig, InferenceConfig, LossConfig, TrainConfig
from posecli.loader import load_model
from posecli.train.tasks import coco_results_ap
from posecli.train.trainer import train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "mmpose-coco"

#: Mild augmentation: enough to exercise the pipeline, little enough to memorise quickly.
MILD = AugmentConfig(
    scale_min=0.9,
    scale_max=1.1,
    rotate_degrees=5.0,
    shift_fraction=0.03,
    flip_probability=0.0,
    brightness=0.1,
    contrast=0.1,
    saturation=0.1,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="COCO set: JSON + images/")
    parser.add_argument("--images", type=int, default=4, help="train on the first N images")
    parser.add_argument("--preset", default="imhn-tiny")
    parser.add_argument("--input-size", type=int, default=384)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--loss", default="focal", choices=("focal", "l2"))
    parser.add_argument("--box-size", type=int, default=256, help="Estimator input height")
    parser.add_argument("--val-every", type=int, default=100, help="steps between AP checks")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/overfit_run"))
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args()


def write_subset(data: Path, count: int, out: Path) -> Path:
    """The first ``count`` images of the set and their annotations, as a COCO file in ``out``."""
    coco = json.loads((data / "person_keypoints.json").read_text())
    images = sorted(coco["images"], key=lambda image: image["id"])[:count]
    kept = {image["id"] for image in images}
    subset = dict(coco, images=images)
    subset["annotations"] = [a for a in coco["annotations"] if a["image_id"] in kept]
    path = out / "subset.json"
    path.write_text(json.dumps(subset))
    return path


def report(record: dict[str, Any]) -> None:
    """Print the metrics records of the run (not the per-batch ones)."""
    if record["event"] in ("start", "step", "epoch", "val"):
        fields = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in record.items()
            if k != "event"
        )
        print(f"[{time.strftime('%H:%M:%S')}] {record['event']}: {fields}", flush=True)


def main() -> int:
    args = parse_args()
    if not (args.data / "person_keypoints.json").is_file():
        print(f"no COCO set at {args.data}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    annotations = write_subset(args.data, args.images, args.out)
    steps_per_epoch = math.ceil(args.images / args.batch_size)
    config = TrainConfig(
        annotations=str(annotations),
        images=str(args.data / "images"),
        out=str(args.out / "run"),
        val_annotations=str(annotations),
        val_images=str(args.data / "images"),
        preset=args.preset,
        resume=args.resume,
        input_size=args.input_size,
        epochs=math.ceil(args.steps / steps_per_epoch),
        max_steps=args.steps,
        batch_size=args.batch_size,
        workers=args.workers,
        optimizer="adamw",
        lr=args.lr,
        weight_decay=0.0,
        warmup_steps=min(50, args.steps // 10),
        grad_clip=0.0,
        device="cpu",
        log_every_steps=10,
        val_every_epochs=max(1, args.val_every // steps_per_epoch),
        val_box_size=args.box_size,
        augment=MILD,
        loss=LossConfig(kind=args.loss),
    )
    started = time.perf_counter()
    checkpoint = train(config, progress=report)
    minutes = (time.perf_counter() - started) / 60
    model = load_model(checkpoint)
    inference = InferenceConfig(box_size=args.box_size, device="cpu")
    metrics = coco_results_ap(model, inference, str(annotations), str(args.data / "images"))
    print(f"trained {args.preset} for {args.steps} steps in {minutes:.1f} min: {checkpoint}")
    print(
        f"same figures: posecli eval --model {checkpoint} --annotations {annotations} "
        f"--images {args.data / 'images'} --box-size {args.box_size}"
    )
    for key, value in metrics.items():
        print(f"{key:<5} {value:.4f}")
    print(f"AP {metrics['AP']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
