"""COCO keypoint evaluation (OKS AP) of pose results, through pycocotools.

Results use the COCO results format: one dict per person ``{"image_id": int, "category_id": 1,
"keypoints": [x, y, score] * 17 (COCO order, image pixels), "score": float}``.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posecli.errors import InputError

#: Summary figures returned, in the order of ``COCOeval.stats`` for keypoints.
SUMMARY_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APM", "APL", "AR")
_STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APM": 3, "APL": 4, "AR": 5}
#: Upper bounds of the person-height bands of ``recall_by_height``, in network-input pixels.
HEIGHT_BANDS: tuple[float, ...] = (40.0, 80.0, 160.0)


def load_annotations(annotations: str | Path) -> COCO:
    """Load a COCO ``person_keypoints`` file quietly.

    Raises:
        InputError: the file is missing, not JSON, or not a COCO annotation file.
    """
    path = Path(annotations)
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read annotations {path}: {error}") from error
    if not isinstance(dataset, dict) or not {"images", "annotations"} <= dataset.keys():
        raise InputError(f"{path} is not a COCO annotation file (needs images and annotations)")
    dataset.setdefault("categories", [{"id": 1, "name": "person"}])
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_keypoint_ap(
    annotations: str | Path, results: list[dict], image_ids: list[int] | None = None
) -> dict[str, float]:
    """OKS keypoint AP of ``results`` against a COCO annotation file.

    Args:
        annotations: path of a COCO ``person_keypoints`` JSON file.
        results: COCO-format person results (see module doc); may be empty.
        image_ids: images to evaluate (default: every image of the annotation file).

    Returns:
        ``{"AP", "AP50", "AP75", "APM", "APL", "AR"}`` as floats in [0, 1]; all zeros when there
        are no results. pycocotools reports -1 for an empty area range; that is returned as 0.

    Raises:
        InputError: unreadable annotations or malformed results.
    """
    ground_truth = load_annotations(annotations)
    if not results:
        return dict.fromkeys(SUMMARY_KEYS, 0.0)
    evaluation = _matched(ground_truth, results, image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.accumulate()
        evaluation.summarize()
    stats = np.asarray(evaluation.stats, dtype=np.float64)
    return {key: max(float(stats[index]), 0.0) for key, index in _STATS_INDEX.items()}


def recall_by_height(
    annotations: str | Path,
    results: list[dict],
    input_scale: Callable[[int, int], float],
    bands: tuple[float, ...] = HEIGHT_BANDS,
) -> list[dict[str, float | None]]:
    """Share of the annotated people found, per band of their height at the network input.

    A person (not a crowd region, at least one annotated keypoint) is found at OKS t when one
    result on its image, among the 20 best scored that COCO AP considers, has OKS ≥ t with it.
    Its height is its box height in image pixels × ``input_scale(image_height, image_width)``
    (the resize factor at search scale 1), so bands read as sizes the network sees.

    Returns:
        One row per band holding people, in order: ``{"low", "high", "people", "found50",
        "found75"}`` in network-input pixels (``high`` None for the last band); ``found*`` are
        fractions.

    Raises:
        InputError: unreadable annotations or malformed results.
    """
    ground_truth = load_annotations(annotations)
    # (image id, 1) -> (results, people) OKS matrix, or [] where either is missing
    ious = _matched(ground_truth, results).ious if results else {}
    heights, best = [], []
    for image_id, image in ground_truth.imgs.items():
        people = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=[image_id], catIds=[1]))
        oks = np.asarray(ious.get((image_id, 1), []), dtype=np.float64)
        factor = input_scale(image["height"], image["width"])
        for column, person in enumerate(people):
            if person.get("iscrowd") or person.get("num_keypoints", 0) == 0:
                continue
            heights.append(person["bbox"][3] * factor)
            best.append(float(oks[:, column].max()) if oks.size else 0.0)
    heights_array, best_array = np.array(heights), np.array(best)
    edges = (0.0, *bands, float("inf"))
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (heights_array >= low) & (heights_array < high)
        if inside.any():
            rows.append({
                "low": low, "high": high if high < float("inf") else None,
                "people": int(inside.sum()),
                "found50": float(np.mean(best_array[inside] >= 0.5)),
                "found75": float(np.mean(best_array[inside] >= 0.75)),
            })  # fmt: skip
    return rows


def _matched(
    ground_truth: COCO, results: list[dict], image_ids: list[int] | None = None
) -> COCOeval:
    """A keypoint ``COCOeval`` of checked, non-empty ``results`` after ``evaluate()`` (OKS of
    every result with every person in ``ious``, per-image matches), quietly."""
    _check_results(results, ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        detections = ground_truth.loadRes([{"category_id": 1, **result} for result in results])
        evaluation = COCOeval(ground_truth, detections, iouType="keypoints")
        if image_ids is not None:
            evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
    return evaluation


def _check_results(results: list[dict], ground_truth: COCO) -> None:
    known_images = set(ground_truth.getImgIds())
    for number, result in enumerate(results):
        if not isinstance(result, dict) or not {"image_id", "keypoints", "score"} <= result.keys():
            raise InputError(f"result {number} needs image_id, keypoints and score")
        if len(result["keypoints"]) != 51:
            raise InputError(
                f"result {number} has {len(result['keypoints'])} keypoint values, expected 51"
            )
        if result["image_id"] not in known_images:
            raise InputError(f"result {number} is for image {result['image_id']}, not annotated")
