"""Decoder speed: native vs reference on the rendered ground truth of the shared eval images.

Renders the stride-4 target heatmaps of every annotated image of the 640×480 class (long side
≤ 640 px) in ``../shared/data/eval/*/person_keypoints.json`` and decodes each with the native
decoder and with the NumPy reference in one run, each frame's time being the best of
``--repeat`` (native) or ``--reference-repeat`` runs. Also
decodes all frames on two threads at once to show that the native decoder releases the GIL.
Prints ms/frame for each and, as the last line, the speed ratio: ``ratio 312.4``.

    python bench/decode_speed.py [--eval-dir ../shared/data/eval] [--repeat 50]
        [--reference-repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from posecli.config import DecodeConfig
from posecli.decode import decode
from posecli.evaluate import load_annotations
from posecli.spec import coco_to_network
from posecli.train.targets import render_heatmaps

MAX_LONG_SIDE = 640


def rendered_frames(eval_dir: Path) -> tuple[list[np.ndarray], int]:
    """Stride-4 ground-truth heatmaps ``(50, h, w)`` of the annotated 640-class images."""
    frames, people_count = [], 0
    for path in sorted(eval_dir.glob("*/person_keypoints.json")):
        coco = load_annotations(path)
        for image_id in sorted(coco.getImgIds()):
            image = coco.imgs[image_id]
            people = [
                a["keypoints"]
                for a in coco.imgToAnns[image_id]
                if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0
            ]
            if not people or max(image["height"], image["width"]) > MAX_LONG_SIDE:
                continue
            network = coco_to_network(np.array(people, dtype=np.float64).reshape(-1, 17, 3))
            frames.append(render_heatmaps(network, image["height"], image["width"]))
            people_count += len(people)
    return frames, people_count


def best_seconds_per_frame(frames: list[np.ndarray], native: bool, repeat: int) -> float:
    config = DecodeConfig()
    best = []
    for heatmaps in frames:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            decode(heatmaps, config, native=native)
            times.append(time.perf_counter() - start)
        best.append(min(times))
    return float(np.mean(best))


def threaded_seconds(frames: list[np.ndarray], threads: int, repeat: int) -> float:
    """Wall time to decode every frame ``repeat`` times, split over ``threads`` threads."""
    work = frames * repeat
    chunks = [work[i::threads] for i in range(threads)]

    def run(chunk: list[np.ndarray]) -> None:
        for heatmaps in chunk:
            decode(heatmaps)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, chunks))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_eval = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
    parser.add_argument("--eval-dir", type=Path, default=default_eval)
    parser.add_argument("--repeat", type=int, default=50, help="native runs per frame")
    parser.add_argument("--reference-repeat", type=int, default=5, help="reference runs per frame")
    args = parser.parse_args()

    frames, people = rendered_frames(args.eval_dir)
    if not frames:
        raise SystemExit(f"no annotated images of the 640 class under {args.eval_dir}")
    shapes = sorted({tuple(f.shape[1:]) for f in frames})
    print(f"{len(frames)} frames, {people} people, heatmap grids {shapes[0]}…{shapes[-1]}")
    native = best_seconds_per_frame(frames, native=True, repeat=args.repeat)
    reference = best_seconds_per_frame(frames, native=False, repeat=args.reference_repeat)
    print(f"native     {1000 * native:8.3f} ms/frame")
    print(f"reference  {1000 * reference:8.3f} ms/frame")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}")
    one = threaded_seconds(frames, 1, args.repeat)
    two = threaded_seconds(frames, 2, args.repeat)
    print(
        f"native on 2 threads: {one / two:.2f}× the throughput of 1 thread "
        f"({1000 * one / (len(frames) * args.repeat):.3f} → "
        f"{1000 * two / (len(frames) * args.repeat):.3f} ms/frame)"
    )
    print(f"ratio {reference / native:.1f}")


if __name__ == "__main__":
    main()
