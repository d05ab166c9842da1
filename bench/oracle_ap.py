"""Oracle AP: render ground-truth heatmaps from a COCO keypoint file, decode them, score them.

For every image of the annotation file, the annotated people (not crowds, at least one keypoint)
are converted to network order and rendered with ``posecli.train.targets.render_heatmaps`` at the
image size. From there on the path is the one ``posecli eval`` takes after the network: the maps
and their grid → pixel transform (stride ``s`` at resize factor 1: ``x = s·gx + (s-1)/2``) as
``posecli.estimator.Heatmaps``, ``posecli.estimator.decode_heatmaps`` to poses in pixels,
``posecli.pose.to_coco_result`` and ``posecli.evaluate.coco_keypoint_ap``. Prints the COCO
summary figures and, as its last line, the OKS AP: ``AP 0.912``.

    python bench/oracle_ap.py --annotations ../shared/data/eval/cocomini-train/person_keypoints.json
    python bench/oracle_ap.py --annotations ANN.json --set refinement=centroid \
        --set completion_reach=0
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from posecli.config import DecodeConfig
from posecli.estimator import Heatmaps, decode_heatmaps
from posecli.evaluate import SUMMARY_KEYS, coco_keypoint_ap, load_annotations
from posecli.pose import to_coco_result
from posecli.spec import coco_to_network
from posecli.train.targets import render_heatmaps
from posecli.transforms import GridTransform


@dataclass(frozen=True)
class OracleRun:
    """One oracle run: COCO summary figures (``SUMMARY_KEYS``), the results scored, counts."""

    figures: dict[str, float]
    results: list[dict]  # COCO results (``posecli.pose.to_coco_result``), by image id
    images: int
    people_in: int  # annotated people rendered
    people_out: int  # people decoded
    decode_seconds: float  # total time in decode_heatmaps


def annotated_people(coco: COCO, image_id: int) -> np.ndarray:
    """``(P, 18, 3)`` network-order keypoints of the non-crowd people with keypoints."""
    annotations = [
        annotation
        for annotation in coco.imgToAnns[image_id]
        if not annotation.get("iscrowd", 0) and annotation.get("num_keypoints", 0) > 0
    ]
    keypoints = np.array([a["keypoints"] for a in annotations], dtype=np.float64)
    return coco_to_network(keypoints.reshape(-1, 17, 3))


def ground_truth_heatmaps(people: np.ndarray, height: int, width: int, stride: int) -> Heatmaps:
    """The rendered targets of ``(P, 18, 3)`` people on the stride grid of an image at its size."""
    maps = render_heatmaps(people, height, width, stride)  # (50, H/s, W/s)
    return Heatmaps(maps=maps, transform=GridTransform.from_resize(stride, 1.0, 1.0))


def oracle_ap(
    annotations: Path,
    config: DecodeConfig = DecodeConfig(),  # noqa: B008 (frozen record)
    stride: int = 4,
    native: bool = True,
) -> OracleRun:
    """OKS AP of the decoded ground-truth heatmaps of every image of ``annotations``."""
    coco = load_annotations(annotations)
    results, people_in, people_out, seconds = [], 0, 0, 0.0
    image_ids = sorted(coco.getImgIds())
    for image_id in image_ids:
        image, people = coco.imgs[image_id], annotated_people(coco, image_id)
        heatmaps = ground_truth_heatmaps(people, image["height"], image["width"], stride)
        start = time.perf_counter()
        poses = decode_heatmaps(heatmaps, config, native=native)
        seconds += time.perf_counter() - start
        results += [to_coco_result(pose, image_id) for pose in poses]
        people_in += len(people)
        people_out += len(poses)
    figures = coco_keypoint_ap(annotations, results)
    return OracleRun(figures, results, len(image_ids), people_in, people_out, seconds)


def decode_config(overrides: list[str]) -> DecodeConfig:
    """DecodeConfig with ``field=value`` overrides (values parsed as the field's default type)."""
    defaults = DecodeConfig()
    values = {}
    for override in overrides:
        name, _, text = override.partition("=")
        if not hasattr(defaults, name):
            raise SystemExit(f"unknown DecodeConfig field: {name}")
        values[name] = type(getattr(defaults, name))(text)
    return dataclasses.replace(defaults, **values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", required=True, type=Path)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--reference", action="store_true", help="use the NumPy decoder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a DecodeConfig field, e.g. refinement=centroid",
    )
    args = parser.parse_args()

    run = oracle_ap(args.annotations, decode_config(args.set), args.stride, not args.reference)
    decoder = "reference" if args.reference else "native"
    print(
        f"{args.annotations}: {run.images} images, {run.people_in} annotated people, "
        f"{run.people_out} decoded ({decoder}, stride {args.stride}, "
        f"{1000 * run.decode_seconds / max(run.images, 1):.2f} ms/image)"
        + (f", {' '.join(args.set)}" if args.set else "")
    )
    print("  ".join(f"{key} {run.figures[key]:.3f}" for key in SUMMARY_KEYS))
    print(f"AP {run.figures['AP']:.3f}")


if __name__ == "__main__":
    main()
