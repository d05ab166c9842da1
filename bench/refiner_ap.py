"""Accuracy of top-down refinement (issue 16) on the shared eval sets, in one table.

For each set: the bottom-up model alone, the bottom-up model refined by ``--refiner`` with each
``--instances`` N (``posecli eval --refine``'s path, ``evaluate_model``), and the refiner on
the annotated people's boxes (its ceiling: perfect people, λ 0). COCO keypoint AP, AP50, AR at
``--long-side`` single scale, no flip of the bottom-up pass (``--refine-flip`` adds rows with the
refiner flip-tested), as ``posecli eval --long-side 384`` runs.

    .venv/bin/python bench/refiner_ap.py --refiner runs/refiner/checkpoint-last.pt
    .venv/bin/python bench/refiner_ap.py --refiner R.pt --instances 1 2 --sets mmpose-ochuman
    .venv/bin/python bench/refiner_ap.py --refiner weights/posecli-refiner.pt --refine-flip
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from posecli.assemble import build_estimator
from posecli.config import InferenceConfig
from posecli.evaluate import evaluate_model
from posecli.loader import load_model, load_refiner
from posecli.train.refiner import box_ap

EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
SETS = ("cocomini-train", "mmpose-coco", "mmpose-ochuman")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refiner", required=True, help="refiner checkpoint")
    parser.add_argument("--model", default="default", help="bottom-up model")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--instances", nargs="+", type=int, default=[1])
    parser.add_argument(
        "--refine-flip",
        action="store_true",
        help="also rows with each crop refined mirrored too (refine_flip)",
    )
    parser.add_argument("--long-side", type=int, default=384)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser.parse_args()


def row(name: str, scores: dict) -> str:
    return f"  {name:<28} AP {scores['AP']:.3f}  AP50 {scores['AP50']:.3f}  AR {scores['AR']:.3f}"


def evaluate_set(args: argparse.Namespace, name: str) -> None:
    annotations, images = EVAL / name / "person_keypoints.json", EVAL / name / "images"
    model, refiner = load_model(args.model), load_refiner(args.refiner)
    plain = InferenceConfig(long_side=args.long_side, flip=False)
    print(f"{name}:")
    scores = evaluate_model(build_estimator(model, plain), annotations, images).scores
    print(row("bottom-up", scores), flush=True)
    for instances in args.instances:
        for refine_flip in (False, True)[: 1 + args.refine_flip]:
            refined = InferenceConfig(
                long_side=args.long_side,
                flip=False,
                refine=True,
                instances=instances,
                refine_flip=refine_flip,
            )
            estimator = build_estimator(model, refined, refiner=refiner)
            scores = evaluate_model(estimator, annotations, images).scores
            name = f"bottom-up + refiner N={instances}" + (" flip" if refine_flip else "")
            print(row(name, scores), flush=True)
    ceiling = box_ap(refiner, str(annotations), str(images), torch.device("cpu"))
    print(row("refiner on annotated boxes", ceiling), flush=True)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"refiner {args.refiner}, model {args.model}, long side {args.long_side}, no flip")
    for name in args.sets:
        evaluate_set(args, name)


if __name__ == "__main__":
    main()
