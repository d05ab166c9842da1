"""COCO keypoint evaluation (OKS AP) of pose results, through pycocotools.

Results use the COCO results format: one dict per person ``{"image_id": int, "category_id": 1,
"keypoints": [x, y, score] * 17 (COCO order, image pixels), "score": float}``.

:func:`evaluate_model` measures an Estimator on an annotated set through the same pipeline as
``posecli images`` (``posecli.images.detect_images``): ``posecli eval``, the trainer's validation
and the benchmarks all evaluate through it, so there is one evaluation path.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posecli.errors import InputError
from posecli.images import ImageOutputs, detect_images
from posecli.io.sources import ImageSource
from posecli.spec import NUM_COCO_KEYPOINTS

if TYPE_CHECKING:
    from posecli.estimator import Estimator
    from posecli.pipeline import PipelineStats, ProgressCallback

#: Summary figures returned: the first six of ``COCOeval.stats`` for keypoints, in its order.
SUMMARY_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APM", "APL", "AR")
#: pycocotools' twelve person-box figures, in the order of ``COCOeval.stats`` for boxes.
BOX_SUMMARY_KEYS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APS", "APM", "APL", "AR1", "AR10", "AR100", "ARS", "ARM", "ARL",
)  # fmt: skip
#: What a result holds per ``COCOeval`` kind: its field (the kind's name), that field's length,
#: and the word an error uses for its values.
_RESULT_FIELDS = {"keypoints": (51, "keypoint"), "bbox": (4, "box")}
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
    check_annotations(dataset, path)
    dataset.setdefault("categories", [{"id": 1, "name": "person"}])
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _is_number(value: object) -> bool:
    """Whether a JSON value is a finite number (``true`` and ``false`` are not)."""
    return type(value) in (int, float) and math.isfinite(value)


def _entries(dataset: dict, key: str, path: Path) -> list[dict]:
    """``dataset[key]``, a list of objects, or an InputError naming the first that is not."""
    entries = dataset[key]
    if not isinstance(entries, list):
        raise InputError(f"{path}: {key!r} is not a list")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: {key}[{index}] is not an object")
        if "id" not in entry:
            raise InputError(f"{path}: {key}[{index}] has no 'id'")
        if type(entry["id"]) is not int:
            raise InputError(f"{path}: {key}[{index}] has id {entry['id']!r}, not an integer")
    return entries


def _check_unique_ids(entries: list[dict], key: str, path: Path) -> set[int]:
    """The ids of ``entries``, or an InputError naming the first entry whose id repeats."""
    seen: set[int] = set()
    for index, entry in enumerate(entries):
        if entry["id"] in seen:
            raise InputError(f"{path}: {key}[{index}] has a duplicate id {entry['id']}")
        seen.add(entry["id"])
    return seen


def _check_annotation(annotation: dict, where: str, image_ids: set[int]) -> None:
    """InputError (naming ``where``) unless ``annotation`` is a usable person annotation.

    Derivable fields get their COCO values: ``category_id`` 1, ``iscrowd`` 0, no keypoints
    (51 zeros), ``num_keypoints`` counted, ``area`` of the box.
    """
    if annotation.get("image_id") not in image_ids:
        raise InputError(f"{where} is for image {annotation.get('image_id')!r}, not in 'images'")
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        raise InputError(f"{where} needs a 'bbox' of 4 numbers [x, y, width, height]")
    keypoints = annotation.setdefault("keypoints", [0] * (3 * NUM_COCO_KEYPOINTS))
    if not isinstance(keypoints, list) or len(keypoints) != 3 * NUM_COCO_KEYPOINTS:
        count = len(keypoints) if isinstance(keypoints, list) else "no list of"
        raise InputError(
            f"{where} has {count} keypoint values, expected {3 * NUM_COCO_KEYPOINTS} "
            f"({NUM_COCO_KEYPOINTS} × x, y, visibility)"
        )
    if not all(map(_is_number, keypoints)):
        raise InputError(f"{where} has keypoints that are not all numbers")
    annotation.setdefault("category_id", 1)
    annotation.setdefault("iscrowd", 0)
    annotation.setdefault("num_keypoints", sum(1 for v in keypoints[2::3] if v > 0))
    annotation.setdefault("area", float(bbox[2] * bbox[3]))


def check_annotations(dataset: dict, path: str | Path) -> None:
    """Check a COCO keypoint dataset (as loaded from JSON) before any work starts.

    Every image needs an integer ``id`` (unique); every annotation an integer ``id`` (unique),
    the ``image_id`` of a listed image, a ``bbox`` and, if any, 51 keypoint numbers. Missing
    derivable fields are filled in (see ``_check_annotation``). What running on the images
    needs besides is checked by :func:`check_images`.

    Raises:
        InputError: naming the file and the first entry that is wrong.
    """
    path = Path(path)
    images = _entries(dataset, "images", path)
    image_ids = _check_unique_ids(images, "images", path)
    annotations = _entries(dataset, "annotations", path)
    _check_unique_ids(annotations, "annotations", path)
    for index, annotation in enumerate(annotations):
        where = f"{path}: annotations[{index}] (id {annotation['id']})"
        _check_annotation(annotation, where, image_ids)


def check_images(ground_truth: COCO, path: str | Path, *, sizes: bool = False) -> None:
    """InputError unless every image of a loaded annotation file names its file (what running
    a model on them needs) and, with ``sizes``, has a positive width and height (what
    ``recall_by_height`` needs)."""
    for index, image in enumerate(ground_truth.dataset["images"]):
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise InputError(f"{path}: images[{index}] has no 'file_name'")
        dimensions = (image.get("width"), image.get("height"))
        if sizes and not all(_is_number(size) and size > 0 for size in dimensions):
            raise InputError(f"{path}: images[{index}] needs a positive 'width' and 'height'")


def check_people(ground_truth: COCO, path: str | Path) -> None:
    """InputError unless someone outside a crowd is annotated with keypoints: the ground truth
    AP measures finding (COCO ignores the others); without it AP is undefined, not 0."""
    people = ground_truth.dataset["annotations"]
    if not any(not p.get("iscrowd") and p.get("num_keypoints", 0) > 0 for p in people):
        raise InputError(f"{path} annotates no person with keypoints: AP is undefined")


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
    return _summary(annotations, results, SUMMARY_KEYS, "keypoints", image_ids)


def coco_box_ap(annotations: str | Path, results: list[dict]) -> dict[str, float]:
    """pycocotools box AP and AR (``iouType="bbox"``) of person boxes against the annotated ones.

    Args:
        annotations: path of a COCO ``person_keypoints`` JSON file.
        results: COCO-format results with ``image_id``, ``bbox`` ``[x, y, w, h]`` (image pixels)
            and ``score``; may be empty.

    Returns:
        :data:`BOX_SUMMARY_KEYS` → float in [0, 1] (pycocotools' -1 of an empty area range as 0).

    Raises:
        InputError: unreadable annotations or malformed results.
    """
    return _summary(annotations, results, BOX_SUMMARY_KEYS, "bbox")


def _summary(
    annotations: str | Path,
    results: list[dict],
    keys: tuple[str, ...],
    iou_type: str,
    image_ids: list[int] | None = None,
) -> dict[str, float]:
    """The first ``len(keys)`` figures of pycocotools' summary (``COCOeval.stats``, computed
    quietly) of ``results`` as ``keys`` → float, pycocotools' -1 as 0; all zeros without
    results."""
    ground_truth = load_annotations(annotations)
    if not results:
        return dict.fromkeys(keys, 0.0)
    evaluation = _matched(ground_truth, results, image_ids, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.accumulate()
        evaluation.summarize()
    stats = np.asarray(evaluation.stats, dtype=np.float64)[: len(keys)]
    return {key: max(float(value), 0.0) for key, value in zip(keys, stats, strict=True)}


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
    ground_truth: COCO,
    results: list[dict],
    image_ids: list[int] | None = None,
    iou_type: str = "keypoints",
) -> COCOeval:
    """A ``COCOeval`` (``iou_type`` "keypoints" or "bbox") of checked, non-empty ``results``
    after ``evaluate()`` (OKS or IoU of every result with every person in ``ious``, per-image
    matches), quietly."""
    _check_results(results, ground_truth, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        detections = ground_truth.loadRes([{"category_id": 1, **result} for result in results])
        evaluation = COCOeval(ground_truth, detections, iouType=iou_type)
        if image_ids is not None:
            evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
    return evaluation


def _check_results(results: list[dict], ground_truth: COCO, iou_type: str = "keypoints") -> None:
    known_images = set(ground_truth.getImgIds())
    size, word = _RESULT_FIELDS[iou_type]
    for number, result in enumerate(results):
        if not isinstance(result, dict) or not {"image_id", iou_type, "score"} <= result.keys():
            raise InputError(f"result {number} needs image_id, {iou_type} and score")
        if len(result[iou_type]) != size:
            raise InputError(
                f"result {number} has {len(result[iou_type])} {word} values, expected {size}"
            )
        if result["image_id"] not in known_images:
            raise InputError(f"result {number} is for image {result['image_id']}, not annotated")


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_model` measured: COCO keypoint metrics, the detections, the run."""

    scores: dict[str, Any]
    results: list[dict[str, Any]]
    stats: PipelineStats

    def lines(self) -> list[str]:
        """The metrics as ``posecli eval`` prints them: one per key, then one per height band."""
        lines = [f"{key:<5} {self.scores[key]:.4f}" for key in SUMMARY_KEYS]
        for band in self.scores.get("by_height", []):
            low, high = band["low"], band["high"]
            heights = f"{low:.0f}–{high:.0f}" if high is not None else f"≥ {low:.0f}"
            found = f"found {band['found50']:.2f} at OKS 0.5, {band['found75']:.2f} at 0.75"
            lines.append(f"height {heights} px: {band['people']} people, {found}")
        return lines


def detections_path(metrics: Path) -> Path:
    """``METRICS.detections.json`` beside the metrics file."""
    return metrics.with_name(f"{metrics.stem}.detections.json")


def annotated_images(
    annotations: str | Path, images_dir: str | Path, *, sizes: bool = False, people: bool = False
) -> ImageSource:
    """The images of an annotation file, with its image ids, every entry and file checked
    (before the model loads): InputError for a bad entry or a missing image, and with
    ``people`` for a file that annotates no one (``evaluate.check_people``: AP undefined)."""
    ground_truth = load_annotations(annotations)
    check_images(ground_truth, annotations, sizes=sizes)
    if people:
        check_people(ground_truth, annotations)
    ids_by_path = {
        (Path(images_dir) / image["file_name"]).resolve(): image_id
        for image_id, image in ground_truth.imgs.items()
    }
    if not ids_by_path:
        raise InputError(f"{annotations} lists no images")
    frames = ImageSource(sorted(ids_by_path))
    frames.ids = [(ids_by_path[path.resolve()], path.name) for path in frames.paths]
    return frames


def evaluate_model(
    estimator: Estimator,
    annotations: str | Path,
    images_dir: str | Path,
    *,
    frames: ImageSource | None = None,
    detections: Path | None = None,
    by_height: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """COCO keypoint AP (``evaluate.SUMMARY_KEYS``) of ``estimator`` on an annotated set, the
    same pipeline as ``posecli images``; ``by_height`` adds ``scores["by_height"]``.

    ``frames`` is :func:`annotated_images`'s answer when the caller checked the set already;
    ``detections`` also saves the COCO results there.
    """
    if frames is None:
        frames = annotated_images(annotations, images_dir, sizes=by_height)
    outputs = ImageOutputs(results=detections, list_images=False)
    results, stats = detect_images(frames, estimator, outputs, force=force, progress=progress)
    scores: dict[str, Any] = coco_keypoint_ap(annotations, results)
    if by_height:
        scores["by_height"] = recall_by_height(
            annotations, results, lambda height, width: estimator.geometry(height, width).factor_y
        )
    return Evaluation(scores, results, stats)
