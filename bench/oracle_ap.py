"""Oracle AP: render ground-truth heatmaps from a COCO keypoint file, decode them, score them.

For every image of the annotation file, the annotated people (not crowds, at least one keypoint)
are converted to network order, rendered with ``posecli.train.targets.render_heatmaps`` at the
image size, decoded with ``posecli.decode.decode``, mapped back to pixels
(``x = stride·gx + (stride-1)/2``) and scored with pycocotools. Prints the COCO summary figures
and, as its last line, the OKS AP: ``AP 0.912``.

    python bench/oracle_ap.py --annotations ../shared/data/eval/cocomini-train/person_keypoints.json
    python bench/oracle_ap.py --annotations ANN.json --set refinement=centroid \
        --set completion_reach=0
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from posecli.config import DecodeConfig
from posecli.decode import decode
from posecli.evaluate import SUMMARY_KEYS, coco_keypoint_ap, load_annotations
from posecli.spec import coco_to_network
from posecli.train.targets import render_heatmaps


def annotated_people(coco: COCO, image_id: int) -> np.ndarray:
    """``(P, 18, 3)`` network-order keypoints of the non-crowd people with keypoints."""
    annotations = [
        annotation
        for annotation in coco.imgToAnns[image_id]
        if not annotation.get("iscrowd", 0) and annotation.get("num_keypoints", 0) > 0
    ]
    keypoints = np.array([a["keypoints"] for a in annotations], dtype=np.float64)
    return coco_to_network(keypoints.reshape(-1, 17, 3))


def image_results(
    image_id: int, keypoints: np.ndarray, scores: np.ndarray, stride: int
) -> list[dict]:
    """COCO results of one image from decoded grid keypoints ``(P, 17, 3)``."""
    pixels = keypoints.astype(np.float64).copy()
    present = pixels[..., 2] > 0
    pixels[..., :2] = np.where(present[..., None], stride * pixels[..., :2] + (stride - 1) / 2, 0)
    return [
        {
            "image_id": image_id,
            "category_id": 1,
            "keypoints": [round(float(v), 3) for v in person.reshape(-1)],
            "score": float(score),
        }
        for person, score in zip(pixels, scores, strict=True)
    ]


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

    coco = load_annotations(args.annotations)
    config = decode_config(args.set)
    results, people_in, people_out, seconds = [], 0, 0, 0.0
    for image_id in sorted(coco.getImgIds()):
        image = coco.imgs[image_id]
        people = annotated_people(coco, image_id)
        heatmaps = render_heatmaps(people, image["height"], image["width"], args.stride)
        start = time.perf_counter()
        poses = decode(heatmaps, config, native=not args.reference)
        seconds += time.perf_counter() - start
        results += image_results(image_id, poses.keypoints, poses.scores, args.stride)
        people_in += len(people)
        people_out += len(poses)
    figures = coco_keypoint_ap(args.annotations, results)
    decoder = "reference" if args.reference else "native"
    print(
        f"{args.annotations}: {len(coco.getImgIds())} images, {people_in} annotated people, "
        f"{people_out} decoded ({decoder}, stride {args.stride}, "
        f"{1000 * seconds / max(len(coco.getImgIds()), 1):.2f} ms/image)"
        + (f", {' '.join(args.set)}" if args.set else "")
    )
    print("  ".join(f"{key} {figures[key]:.3f}" for key in SUMMARY_KEYS))
    print(f"AP {figures['AP']:.3f}")


if __name__ == "__main__":
    main()
