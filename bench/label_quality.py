"""Pseudo-label quality on the shared eval sets: one raw teacher pass against the fused labels.

For every image of ../shared/data/eval/<set> the teachers run once with the labelling settings
(LabelConfig defaults: MoveNet at long sides 256/384/512 and OpenPose, each also mirrored), and
four methods are scored against the ground truth:

* ``movenet-384``: the raw MoveNet pass at long side 384, not mirrored;
* ``openpose``: the raw OpenPose pass, not mirrored;
* ``fused-all``: every fused person with every fused keypoint position (the ensemble as a pose
  estimator, scored like the raw passes);
* ``labels``: what ``label_images`` writes: labelled people with their kept keypoints only.

Columns: OKS AP and AP50 (posecli.evaluate, i.e. pycocotools; keypoints a method lacks are
placed at the centroid of its other keypoints, the same rule for every method), then the
precision of *kept* keypoints:
the fraction of kept keypoints within COCO-OKS-consistent distance of ground truth (per-keypoint
similarity ≥ 0.5 on the matched annotated person; a kept keypoint on a person matching nobody
is wrong unless it lies in an unannotated or crowd region), and the recall of annotated
keypoints. Raw passes keep keypoints with score ≥ 0.3 on people with score ≥ 0.2 (the usual
display thresholds); OpenPose keeps every keypoint it groups.

Run: ``.venv/bin/python bench/label_quality.py [--sets cocomini-train ...] [--limit N]``
``[--keep-keypoint P --confident-person P --min-keypoints N]`` (the ``posecli label`` keep rules)
(with posecli installed, or ``PYTHONPATH=.``). The eval sets are for measuring only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posecli.evaluate import coco_keypoint_ap, load_annotations
from posecli.label import (
    OPENPOSE_INPUT,
    Detection,
    LabelConfig,
    Teachers,
    check_config,
    fuse_teachers,
    keypoint_similarity,
    read_image_rgb,
    select_labels,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
EVAL_SETS = ("cocomini-train", "mmpose-coco", "mmpose-ochuman")
METHODS = ("movenet-384", "openpose", "fused-all", "labels")
RAW_PERSON_SCORE = 0.2  # raw MoveNet people kept as labels
RAW_KEYPOINT_SCORE = 0.3  # raw MoveNet keypoints kept as labels
CORRECT_SIMILARITY = 0.5  # a kept keypoint is correct when its COCO similarity to GT ≥ this
MATCH_OKS = 0.1  # a predicted person is an annotated person when their OKS ≥ this
IN_REGION_FRACTION = 0.5  # unmatched people with this much in unannotated regions: not judged


@dataclass
class Person:
    """A method's person: (17, 3) [x, y, kept] image pixels COCO order, and a score."""

    keypoints: np.ndarray
    score: float


@dataclass
class Tally:
    """Results and kept-keypoint counts of one method on one set."""

    results: list[dict] = field(default_factory=list)
    kept: int = 0
    judged: int = 0
    correct: int = 0
    annotated: int = 0
    ap: dict[str, float] = field(default_factory=dict)


def filled(keypoints: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``(17, 2)`` positions with the absent ones at the centroid of the present ones."""
    xy = keypoints[:, :2].copy()
    if present.any():
        xy[~present] = xy[present].mean(axis=0)
    return xy


def result_record(image_id: int, xy: np.ndarray, score: float) -> dict:
    """A COCO keypoint result."""
    keypoints = np.column_stack([xy, np.ones(len(xy))]).reshape(-1)
    return {
        "image_id": image_id,
        "category_id": 1,
        "keypoints": [float(v) for v in keypoints],
        "score": float(score),
    }


def raw_people(detections: Sequence[Detection], all_keypoints: bool) -> list[Person]:
    """A raw pass as labels: kept keypoints by the raw thresholds (or all found ones)."""
    people = []
    for detection in detections:
        if not all_keypoints and detection.score < RAW_PERSON_SCORE:
            continue
        threshold = 1e-9 if all_keypoints else RAW_KEYPOINT_SCORE
        kept = detection.keypoints[:, 2] >= threshold
        people.append(Person(np.column_stack([detection.keypoints[:, :2], kept]), detection.score))
    return people


def ap_results(image_id: int, detections: Sequence[Detection]) -> list[dict]:
    """Every detection as a result; absent keypoints (no position, score 0) filled."""
    records = []
    for detection in detections:
        absent = (detection.keypoints == 0).all(axis=1)  # (17,)
        records.append(
            result_record(image_id, filled(detection.keypoints, ~absent), detection.score)
        )
    return records


def inside(points: np.ndarray, boxes_xywh: np.ndarray) -> np.ndarray:
    """Whether each of ``(N, 2)`` points lies in any ``(B, 4)`` xywh box."""
    if len(boxes_xywh) == 0:
        return np.zeros(len(points), dtype=bool)
    low, high = boxes_xywh[None, :, :2], boxes_xywh[None, :, :2] + boxes_xywh[None, :, 2:]
    return ((points[:, None] >= low) & (points[:, None] <= high)).all(axis=-1).any(axis=1)


def count_keypoints(tally: Tally, people: Sequence[Person], annotations: list[dict]) -> None:
    """Add one image's kept, judged and correct keypoints to ``tally``."""
    persons = [a for a in annotations if not a["iscrowd"] and a["num_keypoints"] > 0]
    regions = np.array(
        [a["bbox"] for a in annotations if a["iscrowd"] or a["num_keypoints"] == 0]
    ).reshape(-1, 4)
    truths = [np.array(a["keypoints"], dtype=np.float64).reshape(17, 3) for a in persons]
    tally.annotated += sum(int((t[:, 2] > 0).sum()) for t in truths)
    free = set(range(len(persons)))
    for person in sorted(people, key=lambda p: -p.score):
        kept = person.keypoints[:, 2] > 0  # (17,)
        if not kept.any():
            continue
        tally.kept += int(kept.sum())
        best, best_oks, best_hits = -1, MATCH_OKS, np.zeros(17, dtype=bool)
        for index in free:
            judged = kept & (truths[index][:, 2] > 0)
            if not judged.any():
                continue
            similarity = keypoint_similarity(
                person.keypoints[:, :2], truths[index][:, :2], persons[index]["area"]
            )  # (17,)
            oks = float(similarity[judged].mean())
            if oks >= best_oks:
                best, best_oks = index, oks
                best_hits = judged & (similarity >= CORRECT_SIMILARITY)
        if best >= 0:
            free.discard(best)
            tally.judged += int((kept & (truths[best][:, 2] > 0)).sum())
            tally.correct += int(best_hits.sum())
        elif inside(person.keypoints[kept, :2], regions).mean() < IN_REGION_FRACTION:
            tally.judged += int(kept.sum())


def measure_set(
    folder: Path, teachers: Teachers, config: LabelConfig, limit: int
) -> tuple[dict[str, Tally], int, float]:
    """Tallies per method on one eval set, the number of images and seconds per image."""
    annotations_path = folder / "person_keypoints.json"
    ground_truth = load_annotations(annotations_path)
    image_ids = sorted(ground_truth.getImgIds())[: limit or None]
    tallies = {method: Tally() for method in METHODS}
    started = time.perf_counter()
    for image_id in image_ids:
        info = ground_truth.loadImgs(image_id)[0]
        image = read_image_rgb(folder / "images" / info["file_name"])
        annotations = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=image_id, iscrowd=None))
        passes = teachers.passes(image)
        fused = fuse_teachers(passes, config)
        labels = [
            label
            for label in select_labels(fused, np.zeros((0, 4)), image.shape[:2], config)
            if not label.ignore
        ]
        movenet = passes[("movenet", 384, False)]
        openpose = passes[("openpose", OPENPOSE_INPUT[0], False)]
        tallies["movenet-384"].results += ap_results(image_id, movenet)
        tallies["openpose"].results += ap_results(image_id, openpose)
        tallies["fused-all"].results += ap_results(image_id, fused)
        tallies["labels"].results += [
            result_record(image_id, filled(label.keypoints, label.keypoints[:, 2] > 0), label.score)
            for label in labels
        ]
        kept = {
            "movenet-384": raw_people(movenet, all_keypoints=False),
            "openpose": raw_people(openpose, all_keypoints=True),
            "labels": [Person(label.keypoints, label.score) for label in labels],
        }
        for method, people in kept.items():
            count_keypoints(tallies[method], people, annotations)
    seconds = (time.perf_counter() - started) / max(len(image_ids), 1)
    for tally in tallies.values():
        tally.ap = coco_keypoint_ap(annotations_path, tally.results, image_ids)
    return tallies, len(image_ids), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(EVAL_SETS), choices=EVAL_SETS)
    parser.add_argument("--teachers", type=Path, default=SHARED / "teachers")
    parser.add_argument("--limit", type=int, default=0, help="images per set (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    defaults = LabelConfig()
    parser.add_argument("--keep-keypoint", type=float, default=defaults.keep_keypoint)
    parser.add_argument("--confident-person", type=float, default=defaults.confident_person)
    parser.add_argument("--min-keypoints", type=int, default=defaults.min_keypoints)
    args = parser.parse_args()
    config = LabelConfig(
        threads=args.threads,
        keep_keypoint=args.keep_keypoint,
        confident_person=args.confident_person,
        min_keypoints=args.min_keypoints,
    )
    check_config(config)
    teachers = Teachers(args.teachers, config)
    columns = ("AP", "AP50", "kept kps", "precision", "recall")
    print(f"{'set':16} {'method':12} " + " ".join(f"{c:>9}" for c in columns))
    for name in args.sets:
        tallies, count, seconds = measure_set(
            SHARED / "data" / "eval" / name, teachers, config, args.limit
        )
        for method in METHODS:
            tally = tallies[method]
            precision = tally.correct / tally.judged if tally.judged else float("nan")
            recall = tally.correct / tally.annotated if tally.annotated else float("nan")
            kept = "-" if method == "fused-all" else str(tally.kept)
            precision_text = "-" if method == "fused-all" else f"{precision:.3f}"
            recall_text = "-" if method == "fused-all" else f"{recall:.3f}"
            print(
                f"{name:16} {method:12} {tally.ap['AP']:9.3f} {tally.ap['AP50']:9.3f} "
                f"{kept:>9} {precision_text:>9} {recall_text:>9}"
            )
        print(f"{name:16} ({count} images, {seconds:.2f} s per image for all teacher passes)")


if __name__ == "__main__":
    main()
