"""Pseudo-label quality on the shared eval sets: raw teacher passes, bottom-up fusion, top-down.

For every image of ../shared/data/eval/<set> the teachers run once and these methods are scored
against the ground truth, in one table:

* ``movenet-384``: the raw MoveNet MultiPose pass at long side 384, not mirrored;
* ``openpose``: the raw OpenPose pass, not mirrored;
* ``fused-all``: the bottom-up fusion (MoveNet at 256/384/512 and OpenPose, each also mirrored)
  with every fused keypoint: the ensemble as a pose estimator;
* ``fusion-labels``: what ``posecli label --teacher both`` writes (the labels of the first
  milestones): fused people with their kept keypoints, keep rule ``--fusion-*`` (default
  0.25 / 0.2 / 5, the rule those labels were made with);
* ``thunder-boxes K/P/M``: what ``posecli label --teacher thunder`` (the labels v2) writes when
  the images have hand-drawn boxes: MoveNet Thunder, flip-fused, on every annotated person's box
  (the analogue of the corpus's hand-drawn boxes), keep rule keypoint K / person P / minimum
  keypoints M (the v2 rule, ``THUNDER_RULE``);
* ``thunder-multipose K/P/M``: the same on MoveNet MultiPose's boxes (images without boxes);
* ``tinypose-boxes K/P/M``: what ``posecli label --teacher tinypose`` writes when the images have
  hand-drawn boxes: PP-TinyPose, flip-tested, on the annotated boxes and PicoDet's other boxes,
  keep rule K/P/M (``--keep-keypoint`` … or ``--sweep``), people who fail it kept as box people
  (``box_person_score``);
* ``tinypose-picodet K/P/M``: the same on PicoDet's boxes alone (images without boxes).

Columns: OKS AP and AP50 (posecli.evaluate, i.e. pycocotools; keypoints a method lacks are
placed at the centroid of its other keypoints, the same rule for every method), then the
precision of *kept* keypoints:
the fraction of kept keypoints within COCO-OKS-consistent distance of ground truth (per-keypoint
similarity ≥ 0.5 on the matched annotated person; a kept keypoint on a person matching nobody
is wrong unless it lies in an unannotated or crowd region), and the recall of annotated
keypoints. Raw passes keep keypoints with score ≥ 0.3 on people with score ≥ 0.2 (the usual
display thresholds); OpenPose keeps every keypoint it groups.

Top-down methods also get a table by person height (annotated box height at long side 384, the
bands of ``posecli eval --by-height``): annotated people, the share whose labels reach OKS ≥ 0.5
(``recall_by_height``), the share covered by a labelled person's box (IoU ≥ 0.5, people without
kept keypoints included: what a person mask or box head learns), and kept keypoints' precision
and recall (an unmatched person counts in the band of its kept keypoints' extent).

Run: ``.venv/bin/python bench/label_quality.py [--sets cocomini-train ...] [--limit N]``
``[--keep-keypoint K --confident-person P --min-keypoints M] [--sweep] [--no-flip]``
``[--no-bottom-up]`` (with posecli installed, or ``PYTHONPATH=.``); ``--sweep`` scores a grid of
TinyPose keep rules on the same teacher outputs. The eval sets are for measuring only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from posecli.config import LabelConfig
from posecli.evaluate import HEIGHT_BANDS, coco_keypoint_ap, load_annotations, recall_by_height
from posecli.io.sources import load_image
from posecli.pose import keypoint_similarity
from posecli.train.label.fusion import (
    Detection,
    PersonLabel,
    box_iou,
    fuse_teachers,
    select_labels,
)
from posecli.train.label.openpose import OPENPOSE_INPUT
from posecli.train.label.teachers import Teachers, check_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
EVAL_SETS = ("cocomini-train", "mmpose-coco", "mmpose-ochuman")
METHODS = ("movenet-384", "openpose", "fused-all", "fusion-labels")
#: Top-down teachers and the detector each uses where an image has no hand-drawn boxes.
DETECTORS = {"thunder": "multipose", "tinypose": "picodet"}
TOP_DOWN_METHODS = tuple(f"{t}-{b}" for t, d in DETECTORS.items() for b in ("boxes", d))
#: The keep rule of the labels v2 (teacher thunder; LabelConfig's defaults until tinypose).
THUNDER_RULE = {"keep_keypoint": 0.2, "confident_person": 0.1, "min_keypoints": 3}
BAND_SIDE = 384  # person heights are read at this long side (posecli eval --long-side 384)
BOX_IOU = 0.5  # a labelled person's box covers an annotated person at this IoU
#: The keep rule the corpus labels of the first four milestones were made with (then defaults).
FUSION_RULE = {"keep_keypoint": 0.25, "confident_person": 0.2, "min_keypoints": 5}
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
    # per height band (``band``): kept-keypoint counts, annotated people, people a box covers
    bands: np.ndarray = field(default_factory=lambda: np.zeros((len(HEIGHT_BANDS) + 1, 5)))
    found: dict[int, float] = field(default_factory=dict)  # band -> share found at OKS ≥ 0.5


#: Columns of ``Tally.bands``.
JUDGED, CORRECT, ANNOTATED, PEOPLE, COVERED = range(5)


def band_scale(height: int, width: int) -> float:
    """Resize factor of an image to long side ``BAND_SIDE``."""
    return BAND_SIDE / max(height, width)


def band(height: float) -> int:
    """Index of the height band (``HEIGHT_BANDS``, pixels at long side ``BAND_SIDE``)."""
    return int(np.searchsorted(HEIGHT_BANDS, height, side="right"))


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


def count_keypoints(
    tally: Tally, people: Sequence[Person], annotations: list[dict], scale: float = 1.0
) -> None:
    """Add one image's kept, judged and correct keypoints to ``tally`` (and to its height bands,
    heights × ``scale``)."""
    persons = [a for a in annotations if not a["iscrowd"] and a["num_keypoints"] > 0]
    regions = np.array(
        [a["bbox"] for a in annotations if a["iscrowd"] or a["num_keypoints"] == 0]
    ).reshape(-1, 4)
    truths = [np.array(a["keypoints"], dtype=np.float64).reshape(17, 3) for a in persons]
    tally.annotated += sum(int((t[:, 2] > 0).sum()) for t in truths)
    truth_bands = [band(a["bbox"][3] * scale) for a in persons]
    for truth, index in zip(truths, truth_bands, strict=True):
        tally.bands[index, ANNOTATED] += int((truth[:, 2] > 0).sum())
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
            judged = int((kept & (truths[best][:, 2] > 0)).sum())
            tally.judged += judged
            tally.correct += int(best_hits.sum())
            tally.bands[truth_bands[best], [JUDGED, CORRECT]] += [judged, int(best_hits.sum())]
        elif inside(person.keypoints[kept, :2], regions).mean() < IN_REGION_FRACTION:
            tally.judged += int(kept.sum())
            extent = np.ptp(person.keypoints[kept, 1]) * scale
            tally.bands[band(extent), JUDGED] += int(kept.sum())


@dataclass
class TopDownImage:
    """One image's top-down people, kept so that several keep rules can be scored."""

    image_id: int
    size: tuple[int, int]
    scale: float  # to long side BAND_SIDE
    annotations: list[dict]
    boxes: np.ndarray  # (B, 4) [x0, y0, x1, y1]: every annotated person's box
    people: dict[str, list[Detection]]  # by method: each teacher on those boxes, on its detector's


def annotated_boxes(annotations: list[dict]) -> np.ndarray:
    """``(B, 4)`` ``[x0, y0, x1, y1]`` boxes of the non-crowd annotated people (with or without
    keypoints: the analogue of hand-drawn boxes, which mark every person)."""
    boxes = np.array([a["bbox"] for a in annotations if not a["iscrowd"]], dtype=np.float64)
    boxes = boxes.reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def kept_labels(
    people: Sequence[Detection], boxes: np.ndarray, size: tuple[int, int], config: LabelConfig
) -> list[PersonLabel]:
    """What ``posecli label`` writes for these people, without the ignore regions."""
    return [label for label in select_labels(people, boxes, size, config) if not label.ignore]


def label_results(image_id: int, labels: Sequence[PersonLabel]) -> list[dict]:
    """AP results of the labels with kept keypoints (absent ones filled)."""
    return [
        result_record(image_id, filled(label.keypoints, kept), label.score)
        for label in labels
        if (kept := label.keypoints[:, 2] > 0).any()
    ]


def add_labels(tally: Tally, item: TopDownImage, labels: Sequence[PersonLabel]) -> None:
    """Score one image's labels: AP results (labels with kept keypoints, absent ones filled),
    kept keypoints, and annotated people (keypoints annotated) covered by a label's box."""
    tally.results += label_results(item.image_id, labels)
    people = [Person(label.keypoints, label.score) for label in labels]
    count_keypoints(tally, people, item.annotations, item.scale)
    persons = [a for a in item.annotations if not a["iscrowd"] and a["num_keypoints"] > 0]
    truth = annotated_boxes(persons)  # (P, 4)
    label_boxes = np.array([label.box for label in labels]).reshape(-1, 4)
    covered = box_iou(truth, label_boxes).max(axis=1, initial=0.0) >= BOX_IOU  # (P,)
    for person, hit in zip(persons, covered, strict=True):
        tally.bands[band(person["bbox"][3] * item.scale), [PEOPLE, COVERED]] += [1, int(hit)]


def bottom_up_image(
    tallies: dict[str, Tally], image_id: int, image: np.ndarray, annotations, fusion: Teachers
) -> None:
    """Add one image's raw passes and bottom-up fusion to ``tallies``."""
    passes = fusion.passes(image)
    fused = fuse_teachers(passes, fusion.config)
    movenet = passes[("movenet", 384, False)]
    openpose = passes[("openpose", OPENPOSE_INPUT[0], False)]
    tallies["movenet-384"].results += ap_results(image_id, movenet)
    tallies["openpose"].results += ap_results(image_id, openpose)
    tallies["fused-all"].results += ap_results(image_id, fused)
    count_keypoints(tallies["movenet-384"], raw_people(movenet, False), annotations)
    count_keypoints(tallies["openpose"], raw_people(openpose, True), annotations)
    labels = kept_labels(fused, np.zeros((0, 4)), image.shape[:2], fusion.config)
    tallies["fusion-labels"].results += label_results(image_id, labels)
    people = [Person(label.keypoints, label.score) for label in labels]
    count_keypoints(tallies["fusion-labels"], people, annotations)


def measure_set(
    folder: Path, fusion: Teachers | None, top_down: dict[str, Teachers], limit: int
) -> tuple[dict[str, Tally], list[TopDownImage], int, dict[str, float]]:
    """Tallies of the bottom-up methods (none without ``fusion``) on one eval set, its top-down
    people, the number of images and seconds per image of each kind of teacher."""
    ground_truth = load_annotations(folder / "person_keypoints.json")
    image_ids = sorted(ground_truth.getImgIds())[: limit or None]
    tallies = {method: Tally() for method in METHODS} if fusion is not None else {}
    cached = []
    seconds = dict.fromkeys(["bottom-up"] * (fusion is not None) + [*top_down], 0.0)
    for image_id in image_ids:
        info = ground_truth.loadImgs(image_id)[0]
        image = load_image(folder / "images" / info["file_name"])
        annotations = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=image_id, iscrowd=None))
        if fusion is not None:
            started = time.perf_counter()
            bottom_up_image(tallies, image_id, image, annotations, fusion)
            seconds["bottom-up"] += time.perf_counter() - started
        boxes = annotated_boxes(annotations)
        people = {}
        for teacher, labeller in top_down.items():
            started = time.perf_counter()
            people[f"{teacher}-boxes"] = labeller.people(image, boxes)
            people[f"{teacher}-{DETECTORS[teacher]}"] = labeller.people(image, None)
            seconds[teacher] += time.perf_counter() - started
        scale = band_scale(*image.shape[:2])
        cached.append(TopDownImage(image_id, image.shape[:2], scale, annotations, boxes, people))
    for tally in tallies.values():
        tally.ap = coco_keypoint_ap(folder / "person_keypoints.json", tally.results, image_ids)
    per_image = {kind: total / max(len(image_ids), 1) for kind, total in seconds.items()}
    return tallies, cached, len(image_ids), per_image


def score_top_down(
    folder: Path, images: Sequence[TopDownImage], rules: dict[str, LabelConfig]
) -> dict[str, Tally]:
    """Tallies of each top-down teacher's labels under its keep rule ``rules[teacher]``: on the
    annotated boxes (given as hand-drawn boxes) and on its detector's boxes alone."""
    tallies: dict[str, Tally] = {}
    for teacher, config in rules.items():
        for method, hand in (
            (f"{teacher}-boxes", True),
            (f"{teacher}-{DETECTORS[teacher]}", False),
        ):
            tally = tallies[method] = Tally()
            for item in images:
                boxes = item.boxes if hand else np.zeros((0, 4))
                add_labels(tally, item, kept_labels(item.people[method], boxes, item.size, config))
    image_ids = [item.image_id for item in images]
    annotations = folder / "person_keypoints.json"
    for tally in tallies.values():
        tally.ap = coco_keypoint_ap(annotations, tally.results, image_ids)
        if tally.results:
            found = recall_by_height(annotations, tally.results, band_scale)
            tally.found = {band(row["low"]): row["found50"] for row in found}
    return tallies


def print_row(name: str, method: str, tally: Tally) -> None:
    """One line of the table."""
    precision = tally.correct / tally.judged if tally.judged else float("nan")
    recall = tally.correct / tally.annotated if tally.annotated else float("nan")
    counted = method != "fused-all"
    kept = str(tally.kept) if counted else "-"
    precision_text = f"{precision:.3f}" if counted else "-"
    recall_text = f"{recall:.3f}" if counted else "-"
    print(
        f"{name:16} {method:30} {tally.ap['AP']:9.3f} {tally.ap['AP50']:9.3f} "
        f"{kept:>9} {precision_text:>9} {recall_text:>9}"
    )


def print_bands(name: str, method: str, tally: Tally) -> None:
    """The by-height lines of one top-down method (module docstring)."""
    edges = (0, *(int(edge) for edge in HEIGHT_BANDS), None)
    for index, row in enumerate(tally.bands):
        judged, correct, annotated, people, covered = row
        if not people:
            continue
        high = edges[index + 1]
        label = f"{edges[index]}-{high}" if high else f"{edges[index]}+"
        precision = correct / judged if judged else float("nan")
        recall = correct / annotated if annotated else float("nan")
        print(
            f"{name:16} {method:30} {label:>9} {int(people):9d} "
            f"{tally.found.get(index, 0.0):9.3f} {covered / people:9.3f} "
            f"{precision:9.3f} {recall:9.3f}"
        )


def keep_rules(args: argparse.Namespace) -> list[tuple[float, float, int]]:
    """The TinyPose keep rules to score: the one given, or the grid of ``--sweep``."""
    if not args.sweep:
        return [(args.keep_keypoint, args.confident_person, args.min_keypoints)]
    return [
        (keep, person, minimum)
        for keep in (0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
        for person in (0.05, 0.1, 0.2, 0.3)
        for minimum in (3, 5)
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(EVAL_SETS), choices=EVAL_SETS)
    parser.add_argument("--teachers", type=Path, default=SHARED / "teachers")
    parser.add_argument("--limit", type=int, default=0, help="images per set (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    defaults = LabelConfig(teacher="tinypose")
    parser.add_argument("--keep-keypoint", type=float, default=defaults.keep_keypoint)
    parser.add_argument("--confident-person", type=float, default=defaults.confident_person)
    parser.add_argument("--min-keypoints", type=int, default=defaults.min_keypoints)
    parser.add_argument("--box-person-score", type=float, default=defaults.box_person_score)
    parser.add_argument("--no-flip", action="store_true", help="top-down: no mirrored pass")
    parser.add_argument("--sweep", action="store_true", help="TinyPose: a grid of keep rules")
    parser.add_argument("--no-bottom-up", action="store_true", help="top-down teachers only")
    for name, value in FUSION_RULE.items():
        option = "--fusion-" + name.replace("_", "-")
        parser.add_argument(option, type=type(value), default=value)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    fusion_config = LabelConfig(
        teacher="both",
        threads=args.threads,
        keep_keypoint=args.fusion_keep_keypoint,
        confident_person=args.fusion_confident_person,
        min_keypoints=args.fusion_min_keypoints,
    )
    flip = not args.no_flip
    thunder_config = LabelConfig(teacher="thunder", threads=args.threads, flip=flip, **THUNDER_RULE)
    tinypose_config = LabelConfig(
        teacher="tinypose", threads=args.threads, flip=flip, box_person_score=args.box_person_score
    )
    for config in (fusion_config, thunder_config, tinypose_config):
        check_config(config)
    fusion = None if args.no_bottom_up else Teachers(args.teachers, fusion_config)
    top_down = {
        "thunder": Teachers(args.teachers, thunder_config),
        "tinypose": Teachers(args.teachers, tinypose_config),
    }
    columns = ("AP", "AP50", "kept kps", "precision", "recall")
    print(f"{'set':16} {'method':30} " + " ".join(f"{c:>9}" for c in columns))
    band_lines = []
    for name in args.sets:
        folder = SHARED / "data" / "eval" / name
        tallies, cached, count, seconds = measure_set(folder, fusion, top_down, args.limit)
        for method, tally in tallies.items():
            print_row(name, method, tally)
        for keep, person, minimum in keep_rules(args):
            rule = replace(
                tinypose_config, keep_keypoint=keep, confident_person=person, min_keypoints=minimum
            )
            check_config(rule)
            rules = {"thunder": thunder_config, "tinypose": rule}
            for method, tally in score_top_down(folder, cached, rules).items():
                config = rules[method.split("-")[0]]
                rule_text = f"{config.keep_keypoint:g}/{config.confident_person:g}/"
                print_row(name, f"{method} {rule_text}{config.min_keypoints}", tally)
                if not args.sweep:
                    band_lines.append((name, f"{method} {rule_text}{config.min_keypoints}", tally))
        timing = ", ".join(f"{kind} {value:.2f} s" for kind, value in seconds.items())
        print(f"{name:16} ({count} images; per image: {timing})")
    columns = ("height", "people", "found50", "box cover", "precision", "recall")
    print(
        f"\n{'set':16} {'method (by height at long side 384)':30} "
        + " ".join(f"{c:>9}" for c in columns)
    )
    for line in band_lines:
        print_bands(*line)


if __name__ == "__main__":
    main()
