"""COCO keypoint files of pseudo-labels, written atomically and resumably.

:func:`label_images` runs the teachers over images and writes what :func:`select_labels` keeps;
:func:`run_labelling` writes any labeller's people: a ``.partial`` file of finished images is
saved after every chunk (``posecli.io.files.write_atomically``) and a restart with the same
settings continues from it. Hand-drawn person boxes come from ``person_boxes.json`` files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from posecli.config import LabelConfig
from posecli.errors import (
    InputError,
    OutputError,
    ResumableInterruptError,
    UsageError,
)
from posecli.io.files import check_output, error_reason, write_atomically
from posecli.io.sources import load_image
from posecli.spec import (
    COCO_KEYPOINTS,
    COCO_SKELETON,
)
from posecli.train.label.fusion import PersonLabel, select_labels
from posecli.train.label.teachers import Teachers, check_config

logger = logging.getLogger(__name__)


PERSON_BOXES_FILE = "person_boxes.json"

#: LabelConfig fields that do not change labels (a resumed run may change them).
RUNTIME_FIELDS = ("threads", "chunk_size")


def label_settings(config: LabelConfig) -> dict[str, Any]:
    """The settings that determine labels, as JSON values (used to check a resumed run)."""
    settings = {k: v for k, v in asdict(config).items() if k not in RUNTIME_FIELDS}
    return json.loads(json.dumps(settings))


def annotation_record(label: PersonLabel, area_per_box: float) -> dict[str, Any]:
    """COCO annotation fields of a label (without ids), rounded for a compact file. ``area``
    is the box area for ignore regions and ``area_per_box`` × box area for people."""
    x0, y0, x1, y1 = (round(float(v), 2) for v in label.box)
    width, height = round(x1 - x0, 2), round(y1 - y0, 2)
    record: dict[str, Any] = {
        "category_id": 1,
        "iscrowd": int(label.ignore),
        "bbox": [x0, y0, width, height],
        "num_keypoints": int((label.keypoints[:, 2] > 0).sum()),
        "keypoints": [
            round(float(v), 2) if i % 3 < 2 else int(v)
            for i, v in enumerate(label.keypoints.reshape(-1))
        ],
        "keypoint_scores": [round(float(s), 3) for s in label.keypoint_scores],
        "score": round(float(label.score), 3),
    }
    if label.ignore:
        record["area"] = round(width * height, 2)
        record["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    else:
        record["area"] = round(area_per_box * width * height, 2)
    return record


def coco_categories() -> list[dict[str, Any]]:
    """The COCO person category with its keypoint names and 1-based skeleton."""
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(COCO_KEYPOINTS),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON],
        }
    ]


def write_json_atomic(path: Path, document: Any) -> None:
    """Write ``document`` as compact JSON to ``path`` (``posecli.io.files.write_atomically``),
    creating its folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error_reason(error)}") from error
    write_atomically(path, json.dumps(document, separators=(",", ":")).encode())


def partial_path(out: Path) -> Path:
    """The file of finished images that an interrupted run of ``out`` continues from."""
    return out.with_name(out.name + ".partial")


def check_label_output(out: Path, force: bool) -> None:
    """OutputError for an existing label file without ``force``, unless its run is being
    resumed (its ``.partial`` file is there); for a folder that takes no files and an output
    that is not a regular file (the ``.partial`` file goes beside it), before teachers load."""
    if out.exists() and not partial_path(out).exists() and not force:
        raise OutputError(f"{out} exists (use --force to overwrite)")
    check_output(out, force=True, regular=True)


def _load_partial(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Finished image records of a partial file, by file name; empty if there is none."""
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        records = {record["file_name"]: record for record in document["images"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OutputError(f"unreadable partial labels {path}: {error}; delete it") from error
    if document.get("settings") != settings:
        raise OutputError(
            f"{path} was made with other label settings; delete it or use the same settings"
        )
    logger.info("resuming from %s: %d images already labelled", path, len(records))
    return records


def _images_root(images: Sequence[Path]) -> Path:
    """The deepest folder containing every image."""
    return Path(os.path.commonpath([str(path.resolve().parent) for path in images]))


def load_person_boxes(images: Sequence[Path]) -> dict[Path, np.ndarray]:
    """Hand-drawn boxes from the person_boxes.json in each image's folder or its parent.

    Each file holds ``{"person_boxes": {relative path: [[x, y, w, h], ...]}}`` with paths
    relative to its folder, so one run over several labelled folders finds each folder's boxes.
    Returns ``(B, 4)`` ``[x0, y0, x1, y1]`` boxes by resolved image path.
    """
    files = {_person_boxes_file(folder) for folder in {path.resolve().parent for path in images}}
    boxes: dict[Path, np.ndarray] = {}
    for path in sorted(file for file in files if file is not None):
        boxes.update(read_person_boxes(path))
    return boxes


def _person_boxes_file(folder: Path) -> Path | None:
    """The person_boxes.json in ``folder`` or its parent, if any."""
    for candidate in (folder / PERSON_BOXES_FILE, folder.parent / PERSON_BOXES_FILE):
        if candidate.is_file():
            return candidate
    return None


def read_person_boxes(path: Path) -> dict[Path, np.ndarray]:
    """One person_boxes.json: ``(B, 4)`` ``[x0, y0, x1, y1]`` boxes by resolved image path."""
    try:
        listing = json.loads(path.read_text(encoding="utf-8"))["person_boxes"]
        boxes = {}
        for name, xywh in listing.items():
            array = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)  # (B, 4) [x, y, w, h]
            array[:, 2:] += array[:, :2]
            boxes[(path.parent / name).resolve()] = array
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(f"malformed person boxes {path}: {error}") from error
    logger.info("using %d images' hand-drawn person boxes from %s", len(boxes), path)
    return boxes


#: Labels one image: (path, RGB uint8 (H, W, 3) image) -> people to write.
ImageLabeller = Callable[[Path, np.ndarray], Sequence[PersonLabel]]


def run_labelling(
    images: Sequence[Path],
    label_image: ImageLabeller,
    out: Path,
    config: LabelConfig,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Label ``images`` with ``label_image`` into the COCO keypoint file ``out``.

    Images are labelled in chunks of ``config.chunk_size``; after each chunk the finished
    images are saved to ``out.partial``, from which a restart with the same settings continues
    (the final file is the same as that of an uninterrupted run). Ctrl-C saves every finished
    image there too, then raises ``ResumableInterruptError``. ``progress(done, total)`` is
    called after every image. Image ids follow the order of ``images``; ``file_name`` is
    relative to the deepest folder holding all images, which ``info.images_root`` records.
    """
    check_config(config)
    if not images:
        raise UsageError("no images to label")
    root = _images_root(images)
    names = [path.resolve().relative_to(root).as_posix() for path in images]
    settings = label_settings(config)
    partial = partial_path(out)
    finished = _load_partial(partial, settings)
    todo = [index for index, name in enumerate(names) if name not in finished]
    done = len(images) - len(todo)

    def save_partial() -> None:
        write_json_atomic(partial, {"settings": settings, "images": list(finished.values())})

    try:
        for start in range(0, len(todo), config.chunk_size):
            for index in todo[start : start + config.chunk_size]:
                image = load_image(images[index])  # RGB uint8 (H, W, 3), upright
                people = label_image(images[index], image)
                finished[names[index]] = {
                    "file_name": names[index],
                    "height": int(image.shape[0]),
                    "width": int(image.shape[1]),
                    "annotations": [
                        annotation_record(person, config.area_per_box) for person in people
                    ],
                }
                done += 1
                if progress is not None:
                    progress(done, len(images))
            save_partial()
    except KeyboardInterrupt:
        save_partial()
        raise ResumableInterruptError(
            f"labelling interrupted after {done} of {len(images)} images; saved {partial}, "
            "run the same command again to continue"
        ) from None
    write_json_atomic(out, _coco_document(names, finished, root, settings))
    partial.unlink(missing_ok=True)
    return out


def _coco_document(
    names: Sequence[str], records: Mapping[str, dict[str, Any]], root: Path, settings: dict
) -> dict[str, Any]:
    """The COCO keypoint document of the images ``names`` (ids 1… in that order)."""
    images, annotations = [], []
    for image_id, name in enumerate(names, start=1):
        record = records[name]
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "height": record["height"],
                "width": record["width"],
            }
        )
        for annotation in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
    info = {
        "description": "posecli pseudo-labels (teacher fusion)",
        "images_root": str(root),
        "label_settings": settings,
    }
    return {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }


def label_images(
    images: Sequence[Path],
    teachers_dir: Path,
    out: Path,
    config: LabelConfig,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Pseudo-label ``images`` with the teachers in ``teachers_dir`` into COCO keypoint JSON.

    Each annotation carries ``keypoints`` 17 × ``[x, y, v]`` (image pixels, v = 2 kept, 0
    dropped), ``keypoint_scores`` (17 fused confidences), ``num_keypoints``, ``bbox`` (xywh),
    ``area``, ``score`` and ``iscrowd``; uncertain people are ``iscrowd = 1`` ignore regions
    with a box-shaped ``segmentation`` polygon. Resumable: see :func:`run_labelling`.
    Returns ``out``.
    """
    check_config(config)  # before loading the teachers
    teachers = Teachers(Path(teachers_dir), config)
    hand_boxes = load_person_boxes(images) if config.use_person_boxes else {}
    no_boxes = np.zeros((0, 4))

    def label_image(path: Path, image: np.ndarray) -> list[PersonLabel]:
        boxes = hand_boxes.get(path.resolve(), no_boxes)
        return select_labels(teachers.people(image, boxes), boxes, image.shape[:2], config)

    return run_labelling(images, label_image, Path(out), config, progress)
