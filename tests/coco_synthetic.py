"""Small synthetic COCO keypoint sets written to a temporary folder (for the training tests)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

#: A standing person facing the camera, COCO-17 order, offsets in pixels from its centre.
PERSON_OFFSETS = np.array(
    [[0, -25], [3, -28], [-3, -28], [6, -26], [-6, -26], [10, -15], [-10, -15], [14, -3],
     [-14, -3], [16, 8], [-16, 8], [6, 8], [-6, 8], [7, 20], [-7, 20], [7, 32], [-7, 32]],
    dtype=np.float64,
)  # fmt: skip


def person_keypoints(centre: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """``(17, 3)`` COCO keypoints ``[x, y, 2]`` of the template person at ``centre``."""
    keypoints = np.full((17, 3), 2.0)
    keypoints[:, :2] = np.asarray(centre) + scale * PERSON_OFFSETS
    return keypoints


def person_annotation(
    annotation_id: int, image_id: int, keypoints: np.ndarray, scores: np.ndarray | None = None
) -> dict:
    """A COCO person annotation from ``(17, 3)`` keypoints (box around them, no segmentation)."""
    labelled = keypoints[keypoints[:, 2] > 0, :2]
    x0, y0 = labelled.min(axis=0) - 4
    x1, y1 = labelled.max(axis=0) + 4
    annotation = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "num_keypoints": int((keypoints[:, 2] > 0).sum()),
        "keypoints": keypoints.reshape(-1).tolist(),
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": float((x1 - x0) * (y1 - y0)),
        "segmentation": [],
    }
    if scores is not None:
        annotation["keypoint_scores"] = [float(s) for s in scores]
    return annotation


def region_annotation(
    annotation_id: int, image_id: int, box: tuple[float, float, float, float], crowd: bool
) -> dict:
    """A crowd region (``crowd``) or a person without keypoints, polygon over ``box`` (xywh)."""
    x, y, w, h = box
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": int(crowd),
        "num_keypoints": 0,
        "keypoints": [0] * 51,
        "bbox": [x, y, w, h],
        "area": w * h,
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
    }


def write_coco(
    root: Path, images: list[np.ndarray], annotations: list[dict], name: str = "keypoints.json"
) -> tuple[Path, Path]:
    """Write RGB uint8 images as PNG and a COCO keypoint file; returns (annotations, folder)."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for image_id, image in enumerate(images, start=1):
        file_name = f"{image_id:04d}.png"
        cv2.imwrite(str(folder / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        records.append({
            "id": image_id, "file_name": file_name,
            "height": image.shape[0], "width": image.shape[1],
        })  # fmt: skip
    coco = {
        "images": records,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": [], "skeleton": []}],
    }  # fmt: skip
    path = root / name
    path.write_text(json.dumps(coco))
    return path, folder


def noise_images(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` RGB uint8 images of smooth random colour."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(count, height // 8, width // 8, 3), dtype=np.uint8)
    return [cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for image in small]


def write_people_set(
    root: Path, count: int = 4, height: int = 96, width: int = 128
) -> tuple[Path, Path]:
    """``count`` noise images with one or two template people each."""
    images = noise_images(count, height, width)
    annotations = []
    for image_id in range(1, count + 1):
        centres = [(width / 2, height / 2)] if image_id % 2 else [(40, 50), (90, 48)]
        for centre in centres:
            keypoints = person_keypoints(centre, scale=0.9)
            annotations.append(person_annotation(len(annotations) + 1, image_id, keypoints))
    return write_coco(root, images, annotations)
