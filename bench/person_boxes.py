"""How well posecli finds people, as boxes: COCO box AP and AR beside a detector's (issue 37).

For an eval set of ../shared/data/eval, the people posecli reports (``posecli eval --metrics
M.json`` writes them to ``M.detections.json``: each person's ``bbox`` is the extent of the
keypoints found) and the boxes of PicoDet-S-320 (``../shared/teachers``, the detector of the
labels v3) on the same images are scored against the annotated person boxes with pycocotools
(``iouType="bbox"``, every annotated person, crowds ignored as COCO does), in one table:

* ``posecli keypoint extent``: the boxes as posecli reports them;
* ``posecli extent x S``: the same boxes widened by ``--scale`` about their centre (a keypoint
  extent misses the head top, the hands and the feet that an annotated box holds);
* ``picodet``: PicoDet's boxes (score >= 0.05, NMS IoU 0.6), scored by its person scores.

Run (with posecli installed, or ``PYTHONPATH=.``)::

    posecli eval --annotations ../shared/data/eval/cocomini-train/person_keypoints.json \\
        --images ../shared/data/eval/cocomini-train/images --long-side 384 --metrics m.json
    python bench/person_boxes.py --detections m.detections.json --set cocomini-train

The eval sets are for measuring only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from posecli.evaluate import coco_box_ap
from posecli.io.sources import load_image
from posecli.onnxfile import session
from posecli.train.label.tinypose import PICODET_FILE, PicoDet

EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
TEACHERS = Path(__file__).resolve().parents[2] / "shared" / "teachers"
#: The figures the table shows (of ``posecli.evaluate.BOX_SUMMARY_KEYS``).
SHOWN = ("AP", "AP50", "AP75", "APS", "APM", "APL", "AR100")


def widened(boxes: list[dict], scale: float) -> list[dict]:
    """``boxes`` with width and height × ``scale`` about their centres."""
    out = []
    for box in boxes:
        x, y, w, h = box["bbox"]
        grown = [x - (scale - 1) * w / 2, y - (scale - 1) * h / 2, w * scale, h * scale]
        out.append({**box, "bbox": grown})
    return out


def picodet_boxes(annotations: Path, images: Path, teachers: Path) -> list[dict]:
    """PicoDet's person boxes on every image of the set, as COCO results."""
    detector = PicoDet(session(teachers / PICODET_FILE, threads=0))
    listing = json.loads(annotations.read_text())["images"]
    results = []
    for entry in listing:
        image = load_image(images / entry["file_name"])
        found, scores = detector.detect(image, 0.05, 0.6)
        for (x0, y0, x1, y1), score in zip(found, scores, strict=True):
            box = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            results.append({"image_id": entry["id"], "category_id": 1, "bbox": box,
                            "score": float(score)})  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=Path, required=True, help="posecli eval's people")
    parser.add_argument("--set", default="cocomini-train", help="eval set under shared/data/eval")
    parser.add_argument("--scale", type=float, default=1.25, help="widening of posecli's boxes")
    parser.add_argument("--teachers", type=Path, default=TEACHERS)
    args = parser.parse_args()
    annotations = EVAL / args.set / "person_keypoints.json"
    ours = json.loads(args.detections.read_text())  # COCO results with their "bbox"
    rows = {
        "posecli keypoint extent": coco_box_ap(annotations, ours),
        f"posecli extent x {args.scale:g}": coco_box_ap(annotations, widened(ours, args.scale)),
        "picodet": coco_box_ap(
            annotations, picodet_boxes(annotations, EVAL / args.set / "images", args.teachers)
        ),  # fmt: skip
    }
    print(f"{args.set}: person boxes against the annotated ones (pycocotools bbox)")
    print(f"{'method':<28}" + "".join(f"{key:>7}" for key in SHOWN))
    for name, scores in rows.items():
        print(f"{name:<28}" + "".join(f"{scores[key]:7.3f}" for key in SHOWN))
    print(f"posecli people reported: {len(ours)}")


if __name__ == "__main__":
    main()
