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

``--grouping prn`` (issue 20) regroups with a Pose Residual Network (``posecli.group``, ``--prn``:
default the bundled one) in boxes: ``--boxes truth`` (default) the annotated people's boxes
(keypoint extent as at inference, × 1.25) jittered by ``--box-jitter`` (side × U(1 ± j), centre ±
j/2 of the box, seeded), ``greedy`` the greedy people's boxes (the path of ``posecli eval``),
``mask`` the bounding boxes of the blobs of the person-mask channel (> 0.5). ``--grouping both``
prints greedy and PRN side by side, one line per annotation file (repeat ``--annotations``):

    python bench/oracle_ap.py --grouping both --annotations A.json --annotations B.json
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO

from posecli.boxes import CropBox, person_box
from posecli.config import DecodeConfig
from posecli.estimator import Heatmaps, decode_heatmaps
from posecli.evaluate import SUMMARY_KEYS, coco_keypoint_ap, load_annotations
from posecli.group import PRNGrouping
from posecli.loader import load_prn
from posecli.pose import Pose, to_coco_result
from posecli.spec import MASK_CHANNEL, coco_to_network, network_to_coco
from posecli.train.targets import render_heatmaps
from posecli.transforms import GridTransform

#: Box sources of ``--boxes``.
BOX_SOURCES = ("truth", "greedy", "mask")


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


@dataclass(frozen=True)
class PRNBoxes:
    """How the PRN of an oracle run gets its boxes: ``source`` (:data:`BOX_SOURCES`), the
    jitter of ``truth`` boxes and its seed."""

    grouping: PRNGrouping
    source: str = "truth"
    jitter: float = 0.2
    seed: int = 0


def jittered(box: CropBox, jitter: float, rng: np.random.Generator) -> CropBox:
    """``box`` with its side × U(1 ± jitter) and its centre moved by U(± jitter / 2) × its size."""
    scale, shift_x, shift_y = jitter * (2 * rng.random(3) - 1) * (1, 0.5, 0.5)
    scale += 1
    return CropBox(
        box.centre_x + shift_x * box.width, box.centre_y + shift_y * box.height,
        box.width * scale, box.height * scale,
    )  # fmt: skip


def mask_boxes(heatmaps: Heatmaps, aspect: float, scale: float) -> list[CropBox]:
    """Boxes of the blobs of the person-mask channel (> 0.5), image pixels, at the PRN's aspect
    and enlarged by ``scale`` as ``person_box`` does."""
    blobs = (heatmaps.maps[MASK_CHANNEL] > 0.5).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(blobs)
    boxes = []
    for left, top, width, height, _ in stats[1:count]:  # grid cells; 0 is the background
        corners = heatmaps.transform.apply(
            np.array([[left, top], [left + width - 1, top + height - 1]])
        )
        keypoints = np.concatenate([corners, np.ones((2, 1))], axis=1)  # (2, 3) as found points
        boxes.append(person_box(keypoints, aspect, scale))
    return [box for box in boxes if box is not None]


def prn_poses(
    heatmaps: Heatmaps,
    greedy: list[Pose],
    truth: np.ndarray,
    prn: PRNBoxes,
    rng: np.random.Generator,
) -> list[Pose]:
    """The PRN's people of one image, boxes as ``prn.source`` says (``truth``: ``(P, 18, 3)``
    annotated people, image pixels)."""
    grouping, config = prn.grouping, prn.grouping.config
    if prn.source == "greedy":
        return grouping.group(heatmaps.maps, heatmaps.transform, greedy)
    aspect = grouping.prn.config.crop_width / grouping.prn.config.crop_height
    if prn.source == "mask":
        boxes = mask_boxes(heatmaps, aspect, config.prn_box_scale)
    else:
        found = [
            person_box(p, aspect, config.prn_box_scale, config.prn_min_box)
            for p in network_to_coco(truth)
        ]
        boxes = [jittered(box, prn.jitter, rng) for box in found if box is not None]
    return grouping.people(heatmaps.maps, heatmaps.transform, boxes, [1.0] * len(boxes))


def oracle_ap(
    annotations: Path,
    config: DecodeConfig = DecodeConfig(),  # noqa: B008 (frozen record)
    stride: int = 4,
    native: bool = True,
    prn: PRNBoxes | None = None,
) -> OracleRun:
    """OKS AP of the decoded ground-truth heatmaps of every image of ``annotations``, grouped
    greedily or, with ``prn``, by the PRN (``decode_seconds`` then includes it)."""
    coco = load_annotations(annotations)
    results, people_in, people_out, seconds = [], 0, 0, 0.0
    image_ids = sorted(coco.getImgIds())
    rng = np.random.default_rng(prn.seed if prn is not None else 0)
    for image_id in image_ids:
        image, people = coco.imgs[image_id], annotated_people(coco, image_id)
        heatmaps = ground_truth_heatmaps(people, image["height"], image["width"], stride)
        start = time.perf_counter()
        poses = decode_heatmaps(heatmaps, config, native=native)
        if prn is not None:
            poses = prn_poses(heatmaps, poses, people, prn, rng)
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
    parser.add_argument("--annotations", required=True, type=Path, action="append")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--reference", action="store_true", help="use the NumPy decoder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a DecodeConfig field, e.g. refinement=centroid",
    )
    parser.add_argument("--grouping", choices=("greedy", "prn", "both"), default="greedy")
    parser.add_argument("--prn", default="prn", help="PRN checkpoint or registered name")
    parser.add_argument("--boxes", choices=BOX_SOURCES, default="truth")
    parser.add_argument("--box-jitter", type=float, default=0.2)
    args = parser.parse_args()

    config = decode_config(args.set)
    prn = None
    if args.grouping != "greedy":
        grouping = PRNGrouping(load_prn(args.prn), config, torch.device("cpu"))
        prn = PRNBoxes(grouping, args.boxes, args.box_jitter)
    runs = {"greedy": [None], "prn": [prn], "both": [None, prn]}[args.grouping]
    decoder = "reference" if args.reference else "native"
    for path in args.annotations:
        for chosen in runs:
            run = oracle_ap(path, config, args.stride, not args.reference, chosen)
            name = (
                "greedy"
                if chosen is None
                else f"prn ({chosen.source} boxes, jitter {chosen.jitter:g})"
            )
            print(
                f"{path}: {name}, {run.images} images, {run.people_in} annotated people, "
                f"{run.people_out} found ({decoder}, stride {args.stride}, "
                f"{1000 * run.decode_seconds / max(run.images, 1):.2f} ms/image)"
                + (f", {' '.join(args.set)}" if args.set else "")
            )
            print("  " + "  ".join(f"{key} {run.figures[key]:.3f}" for key in SUMMARY_KEYS))
    print(f"AP {run.figures['AP']:.3f}")


if __name__ == "__main__":
    main()
