"""Grouping time per frame: greedy decoding alone vs greedy + the PRN (issue 20), in one run.

The model's heatmaps of every image of the shared eval sets are computed first (not timed), at
``--long-side`` (384); then, per image, ``decode_heatmaps`` (greedy) and ``decode_heatmaps`` +
``PRNGrouping.group`` (what ``--grouping prn`` runs) are timed on the same maps, alternately.
Prints ms per frame (mean and median) for each and the people found.

    python bench/grouping_speed.py [--model default] [--prn prn] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from posecli.assemble import build_estimator
from posecli.config import DecodeConfig, InferenceConfig
from posecli.estimator import decode_heatmaps
from posecli.group import PRNGrouping
from posecli.io.sources import load_image
from posecli.loader import load_model, load_prn

EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--prn", default="prn")
    parser.add_argument("--long-side", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    inference = InferenceConfig(long_side=args.long_side)
    estimator = build_estimator(load_model(args.model), inference)
    config = DecodeConfig(grouping="prn")
    grouping = PRNGrouping(load_prn(args.prn), config, torch.device("cpu"))
    files = sorted(EVAL.glob("*/images/*"))
    maps = [estimator.heatmaps([load_image(path)])[0] for path in files]
    times: dict[str, list[float]] = {"greedy": [], "prn": []}
    people = {"greedy": 0, "prn": 0}
    for _ in range(args.repeats):
        for heatmaps in maps:
            start = time.perf_counter()
            greedy = decode_heatmaps(heatmaps, config)
            middle = time.perf_counter()
            regrouped = grouping.group(heatmaps.maps, heatmaps.transform, greedy)
            end = time.perf_counter()
            times["greedy"].append(middle - start)
            times["prn"].append(end - start)
            people["greedy"] += len(greedy)
            people["prn"] += len(regrouped)
    print(f"{len(files)} images of {EVAL}, long side {args.long_side}, {args.repeats} repeats")
    for name, seconds in times.items():
        found = people[name] / args.repeats
        print(
            f"{name:<7} {1000 * np.mean(seconds):7.2f} ms/frame mean, "
            f"{1000 * np.median(seconds):7.2f} median, {found:.0f} people"
        )


if __name__ == "__main__":
    main()
