"""Which heatmap grid should the decoder run on? Accuracy and speed per decode stride.

Renders ground-truth heatmaps of the shared COCO-format evaluation sets on the network's stride-4
grid of each image resized as the Estimator resizes it (box size 512), resamples them to the
decode grid the way the Estimator does (bilinear, on torch), decodes, maps the keypoints back to
image pixels and scores them with COCO keypoint AP. Stride 4 decodes the native grid; 2 and 1
upsample first (stride 1 is close to the published code, which decodes at image size).

Ground-truth maps are the best case: the decoder's own quantisation and refinement error is
all that separates the grids. ``--noise`` adds smooth Gaussian noise to the maps to see whether the
ranking holds on less clean input. Times (best of ``--repeats``) are per image of the set,
resampling and decoding separately, rendering excluded; torch runs on one thread.

Usage: .venv/bin/python bench/decode_grid.py [--strides 4 2 1] [--noise 0.05] [--python]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from posecli.config import DecodeConfig
from posecli.decode import decode
from posecli.estimator import resample_heatmaps
from posecli.evaluate import coco_keypoint_ap
from posecli.spec import coco_to_network
from posecli.train.targets import render_heatmaps
from posecli.transforms import InputGeometry, input_geometry

EVAL_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def ground_truth_people(annotations: list[dict], geometry: InputGeometry) -> np.ndarray:
    """``(P, 18, 3)`` network-order ``[x, y, v]`` in resized-input pixels, crowds left out."""
    people = [
        np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3)
        for a in annotations
        if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0
    ]
    if not people:
        return np.zeros((0, 18, 3))
    network = coco_to_network(np.stack(people))  # (P, 18, 3) image pixels
    factors = np.array([geometry.factor_x, geometry.factor_y])
    resized = (network[..., :2] + 0.5) * factors - 0.5  # OpenCV pixel-centre convention
    network[..., :2] = np.where(network[..., 2:] > 0, resized, 0.0)
    return network


Item = tuple[int, np.ndarray, InputGeometry]  # image id, stride-4 heatmaps, geometry


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Gaussian noise correlated over about one stride-4 cell (σ = 1 cell), scaled to ``std``.

    Network heatmaps are smooth at the stride-4 scale; white noise per cell would flood the
    peak finder with single-cell peaks no network makes.
    """
    noise = gaussian_filter(rng.normal(size=shape), sigma=(0, 1, 1))  # (50, h, w)
    return (noise * (std / noise.std())).astype(np.float32)


def load_set(folder: Path, box_size: int, noise: float) -> list[Item]:
    """``(image_id, stride-4 heatmaps (50, h/4, w/4) float32, geometry)`` per image of a set."""
    data = json.loads((folder / "person_keypoints.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    rng = np.random.default_rng(0)
    items = []
    for image in data["images"]:
        geometry = input_geometry(image["height"], image["width"], box_size)
        people = ground_truth_people(by_image.get(image["id"], []), geometry)
        maps = render_heatmaps(people, geometry.height, geometry.width, stride=4)
        if noise > 0:
            maps = maps + smooth_noise(rng, maps.shape, noise)
        items.append((image["id"], np.ascontiguousarray(maps, dtype=np.float32), geometry))
    return items


def run_grid(items: list[Item], stride: int, native: bool) -> tuple[list[dict], float, float]:
    """COCO results and mean milliseconds per image of resampling and of decoding on one grid."""
    config = DecodeConfig()
    results = []
    resampling = decoding = 0.0
    for image_id, maps, geometry in items:
        start = time.perf_counter()
        grid = geometry.grid_shape(stride)
        resampled = resample_heatmaps(torch.from_numpy(maps)[None], grid)[0].numpy()  # (50, h, w)
        middle = time.perf_counter()
        decoded = decode(np.ascontiguousarray(resampled), config, native=native)
        resampling += middle - start
        decoding += time.perf_counter() - middle
        transform = geometry.grid_transform(stride)
        for keypoints, score in zip(decoded.keypoints, decoded.scores, strict=True):
            found = keypoints[:, 2:] > 0
            pixels = np.where(found, transform.apply(keypoints[:, :2]), 0.0)
            flat = np.concatenate([pixels, found.astype(np.float64)], axis=1).ravel()
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": [round(float(v), 2) for v in flat],
                    "score": float(score),
                }
            )
    per_image = 1000.0 / max(len(items), 1)
    return results, resampling * per_image, decoding * per_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 2, 1])
    parser.add_argument("--box-size", type=int, default=512)
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std on the maps")
    parser.add_argument("--repeats", type=int, default=3, help="timing: best of this many runs")
    parser.add_argument("--python", action="store_true", help="NumPy reference decoder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = sorted(path for path in EVAL_ROOT.glob("*") if (path / "person_keypoints.json").exists())
    if not sets:
        raise SystemExit(f"no evaluation sets under {EVAL_ROOT}")
    print(
        f"decode grid benchmark: box {args.box_size}, noise {args.noise}, "
        f"{'reference (NumPy)' if args.python else 'native'} decoder, 1 torch thread"
    )
    print(f"{'set':<16} {'stride':>6} {'grid (median)':>14} {'AP':>6} {'AP50':>6} {'AP75':>6} "
          f"{'AR':>6} {'resample ms':>11} {'decode ms':>9} {'total ms':>8}")  # fmt: skip
    for folder in sets:
        items = load_set(folder, args.box_size, args.noise)
        for stride in args.strides:
            runs = [run_grid(items, stride, not args.python) for _ in range(args.repeats)]
            results = runs[0][0]
            resample_ms = min(run[1] for run in runs)
            decode_ms = min(run[2] for run in runs)
            metrics = coco_keypoint_ap(folder / "person_keypoints.json", results)
            shapes = np.array([geometry.grid_shape(stride) for _, _, geometry in items])
            rows, columns = np.median(shapes, axis=0).astype(int)
            print(
                f"{folder.name:<16} {stride:>6} {f'{rows}×{columns}':>14} {metrics['AP']:>6.3f} "
                f"{metrics['AP50']:>6.3f} {metrics['AP75']:>6.3f} {metrics['AR']:>6.3f} "
                f"{resample_ms:>11.2f} {decode_ms:>9.2f} {resample_ms + decode_ms:>8.2f}"
            )


if __name__ == "__main__":
    main()
