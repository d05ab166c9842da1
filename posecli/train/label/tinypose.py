"""PP-TinyPose 256×192 (top-down keypoints) and PicoDet-S-320 (person boxes), run with onnxruntime.

Both are PaddleDetection teachers (Apache-2.0) read from ``../shared/teachers`` (its README gives
their interfaces). :class:`TinyPose` is the one runner of the keypoint network: labelling calls
:meth:`TinyPose.keypoints` on an image and person boxes, the refiner's distillation calls
:meth:`TinyPose.heatmaps` on crops it made itself. :class:`TinyPoseTeacher` is the labelling
teacher ``tinypose``: TinyPose on hand-drawn boxes and PicoDet's.

Crop frame: a person box ``[x0, y0, x1, y1]`` is grown to width:height 3:4 around its centre,
scaled by ``crop_scale`` (1.25 measured best) and warped to 256×192 with zero padding; the box
centre lands on crop pixel ((192 - 1) / 2, (256 - 1) / 2). Pixel coordinates have integer values
at pixel centres (OpenCV's ``warpAffine`` convention). Heatmap cell ``(row, column)`` of the
64×48 output stands for crop pixel ``(x, y) = (4·column, 4·row)``: the network was trained with
targets at crop position / 4 (PaddleDetection's ``ToHeatmaps``). Measured on cocomini-train's
annotated boxes (flip-tested, DARK): OKS AP 0.573 so, 0.520 if the cells are read as centred on
``4·column + 1.5`` (posecli's own targets: ``grid_heatmaps`` converts); DARK 0.573, a quarter-cell
shift to the higher neighbour 0.565, the integer maximum 0.541; 0.532 without the flip test.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from posecli.config import LabelConfig
from posecli.spec import COCO_FLIP_ORDER, NUM_COCO_KEYPOINTS
from posecli.train.label.fusion import Detection, box_iou, oks_nms

TINYPOSE_FILE = "tinypose_256x192.onnx"
PICODET_FILE = "picodet_s_320_lcnet_pedestrian.onnx"

#: TinyPose's crop (height, width) and the stride of its heatmaps in crop pixels.
TINYPOSE_INPUT = (256, 192)
TINYPOSE_STRIDE = 4
#: PicoDet's square input side: the whole image is resized to it (no letterbox).
PICODET_INPUT = 320

#: ImageNet normalisation of both networks, RGB 0–255.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255

#: Side of the Gaussian that smooths heatmaps before DARK's Taylor step (PaddleDetection: 3).
DARK_KERNEL = 3


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(N, H, W, 3)`` as the networks' float32 ``(N, 3, H, W)`` ImageNet input."""
    scaled = (images.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD  # (N, H, W, 3)
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


def crop_affine(box: np.ndarray, crop_scale: float, size: tuple[int, int]) -> np.ndarray:
    """Affine ``(2, 3)`` from image pixels to the pixels of a crop of ``size`` (height, width).

    The crop shows ``box`` ``[x0, y0, x1, y1]`` grown to the crop's aspect ratio around its
    centre and scaled by ``crop_scale``; the box centre lands on the crop's centre
    ``((width - 1) / 2, (height - 1) / 2)``.
    """
    box = np.asarray(box, dtype=np.float64)
    centre = (box[:2] + box[2:]) / 2  # (2,) [x, y]
    width, height = np.maximum(box[2:] - box[:2], 1e-6)
    aspect = size[1] / size[0]  # width / height
    height = max(height, width / aspect)
    scale = size[0] / max(crop_scale * height, 1.0)
    offset = (np.array([size[1], size[0]]) - 1) / 2 - scale * centre  # (2,)
    return np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]]])


def unflip_heatmaps(maps: np.ndarray) -> np.ndarray:
    """Heatmaps ``(N, 17, H, W)`` of mirrored crops as heatmaps of the crops themselves.

    Left and right channels swap (``COCO_FLIP_ORDER``) and the columns mirror back; as in the
    published code (HRNet, PaddleDetection) the mirrored maps then move one column right, the
    first column keeping its own value.
    """
    mirrored = maps[:, list(COCO_FLIP_ORDER), :, ::-1]  # (N, 17, H, W)
    shifted = mirrored.copy()
    shifted[..., 1:] = mirrored[..., :-1]
    return shifted


def dark_decode(maps: np.ndarray) -> np.ndarray:
    """Sub-pixel maxima of heatmaps ``(N, K, H, W)`` by DARK (Zhang et al., CVPR 2020).

    Each map is smoothed by a ``DARK_KERNEL`` Gaussian (zero border, rescaled to its former
    maximum), taken to the log, and its integer maximum moved by one Newton step of the log's
    Taylor expansion (kept within one cell). Returns ``(N, K, 3)`` float64 ``[column, row,
    score]`` in heatmap cells, score = the raw map's maximum.
    """
    count, keypoints, height, width = maps.shape
    flat = maps.reshape(count * keypoints, height, width).astype(np.float64)  # (M, H, W)
    index = flat.reshape(len(flat), -1).argmax(axis=1)  # (M,)
    rows, columns = np.divmod(index, width)
    scores = flat.reshape(len(flat), -1).max(axis=1)  # (M,)
    log = np.log(np.maximum(_smoothed(flat), 1e-10))  # (M, H, W)
    padded = np.pad(log, ((0, 0), (2, 2), (2, 2)), mode="edge")  # (M, H + 4, W + 4)
    m, r, c = np.arange(len(flat)), rows + 2, columns + 2

    def at(dr: int, dc: int) -> np.ndarray:
        return padded[m, r + dr, c + dc]  # (M,)

    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dyy = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    determinant = dxx * dyy - dxy**2
    valid = (np.abs(determinant) > 1e-12) & (rows > 1) & (rows < height - 2)
    valid &= (columns > 1) & (columns < width - 2)
    safe = np.where(valid, determinant, 1.0)
    offset_x = np.where(valid, -(dyy * dx - dxy * dy) / safe, 0.0)
    offset_y = np.where(valid, -(dxx * dy - dxy * dx) / safe, 0.0)
    xy = np.column_stack([columns + np.clip(offset_x, -1, 1), rows + np.clip(offset_y, -1, 1)])
    return np.column_stack([xy, scores]).reshape(count, keypoints, 3)


def _smoothed(maps: np.ndarray) -> np.ndarray:
    """``(M, H, W)`` float64 maps blurred by a ``DARK_KERNEL`` Gaussian (zero outside the map),
    each rescaled to its former maximum."""
    kernel = (DARK_KERNEL, DARK_KERNEL)
    blurred = np.stack(
        [cv2.GaussianBlur(plane, kernel, 0, borderType=cv2.BORDER_CONSTANT) for plane in maps]
    )  # (M, H, W)
    peak = maps.reshape(len(maps), -1).max(axis=1)  # (M,)
    blurred_peak = np.maximum(blurred.reshape(len(maps), -1).max(axis=1), 1e-12)
    return blurred * (peak / blurred_peak)[:, None, None]


def grid_heatmaps(
    maps: np.ndarray, crop_size: tuple[int, int], rows: int, columns: int
) -> np.ndarray:
    """TinyPose heatmaps ``(N, 17, 64, 48)`` of crops of ``crop_size`` (height, width) resized
    to 256×192, resampled (bilinear, edge cells repeated) to ``(N, 17, rows, columns)`` float32 on
    the grid of posecli's own targets: cell ``(i, j)`` centred at crop pixel ``(s·j + (s - 1) / 2,
    t·i + (t - 1) / 2)``, ``s = width / columns``, ``t = height / rows``. TinyPose's cells sit at
    ``4·column`` instead (module docstring): read as posecli's, its maps are 1.5 crop pixels off
    (measured: AP 0.573 → 0.520 on cocomini-train's annotated boxes)."""
    weights = [
        _linear_weights(count, size, crop_side, input_side)
        for count, size, crop_side, input_side in zip(
            (rows, columns), maps.shape[2:], crop_size, TINYPOSE_INPUT, strict=True
        )
    ]  # (rows, 64), (columns, 48)
    return np.einsum("ry,nkyx,cx->nkrc", weights[0], maps, weights[1]).astype(np.float32)


def _linear_weights(count: int, size: int, crop_side: int, input_side: int) -> np.ndarray:
    """``(count, size)`` bilinear weights along one axis from TinyPose's ``size`` cells to
    ``count`` cells of a crop side of ``crop_side`` pixels resized to ``input_side``."""
    step = crop_side / count
    centres = step * np.arange(count) + (step - 1) / 2  # crop pixels
    resized = (centres + 0.5) * input_side / crop_side - 0.5  # pixels of TinyPose's input
    position = np.clip(resized / TINYPOSE_STRIDE, 0, size - 1)  # TinyPose's cells
    low = np.minimum(np.floor(position).astype(np.int64), size - 2)
    fraction = position - low
    weights = np.zeros((count, size))
    weights[np.arange(count), low] = 1 - fraction
    weights[np.arange(count), low + 1] = fraction
    return weights


class TinyPose:
    """PP-TinyPose 256×192: float32 ``(1, 3, 256, 192)`` ImageNet-normalised RGB crop in,
    ``(1, 17, 64, 48)`` COCO-17 heatmaps out (stride 4 of the crop, see the module docstring).

    ``session``: an onnxruntime session of ``tinypose_256x192.onnx``
    (``posecli.train.label.teachers.open_session``).
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def heatmaps(self, crops: np.ndarray, flip: bool = True) -> np.ndarray:
        """Heatmaps of uint8 RGB crops ``(N, 256, 192, 3)``: float32 ``(N, 17, 64, 48)``, COCO-17
        order, cell ``(row, column)`` at crop pixel ``(4·column, 4·row)``. With ``flip``, the
        average of the crops' maps and their mirror images' maps (``unflip_heatmaps``)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (*TINYPOSE_INPUT, 3):
            raise ValueError(f"TinyPose crops must be (N, 256, 192, 3), got {crops.shape}")
        maps = self._run(crops)  # (N, 17, 64, 48)
        if flip:
            maps = (maps + unflip_heatmaps(self._run(crops[:, :, ::-1]))) / 2
        return maps

    def _run(self, crops: np.ndarray) -> np.ndarray:
        """The network on each crop (its ONNX graph takes one at a time): ``(N, 17, 64, 48)``."""
        height, width = TINYPOSE_INPUT
        maps = np.empty(
            (len(crops), NUM_COCO_KEYPOINTS, height // TINYPOSE_STRIDE, width // TINYPOSE_STRIDE),
            dtype=np.float32,
        )
        for index, crop in enumerate(crops):
            batch = normalise(crop[None])  # (1, 3, 256, 192)
            maps[index] = self.session.run(None, {self.input_name: batch})[0][0]
        return maps

    def keypoints(
        self, image: np.ndarray, boxes: np.ndarray, crop_scale: float = 1.25, flip: bool = True
    ) -> np.ndarray:
        """The person of each box ``(B, 4)`` ``[x0, y0, x1, y1]`` (image pixels) of an RGB uint8
        ``(H, W, 3)`` image: ``(B, 17, 3)`` float64 ``[x, y, score]`` in image pixels, COCO-17
        order, DARK-decoded, score = heatmap maximum (about 0–1)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, NUM_COCO_KEYPOINTS, 3))
        height, width = TINYPOSE_INPUT
        image = np.ascontiguousarray(image)
        affines = [crop_affine(box, crop_scale, TINYPOSE_INPUT) for box in boxes]
        crops = np.stack(
            [cv2.warpAffine(image, a, (width, height), flags=cv2.INTER_LINEAR) for a in affines]
        )  # (B, 256, 192, 3)
        decoded = dark_decode(self.heatmaps(crops, flip))  # (B, 17, 3) cells
        crop_xy = decoded[..., :2] * TINYPOSE_STRIDE  # (B, 17, 2) crop pixels
        affine = np.stack(affines)  # (B, 2, 3)
        scale = affine[:, 0, 0][:, None, None]  # (B, 1, 1)
        image_xy = (crop_xy - affine[:, None, :, 2]) / scale  # (B, 17, 2)
        return np.concatenate([image_xy, decoded[..., 2:]], axis=-1)


class PicoDet:
    """PicoDet-S-320 pedestrian: float32 ``(1, 3, 320, 320)`` ImageNet-normalised RGB (the whole
    image resized, no letterbox) in; 2,125 person scores (after sigmoid) and boxes
    ``[x0, y0, x1, y1]`` in input pixels out, without non-maximum suppression."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def detect(
        self, image: np.ndarray, min_score: float, nms_iou: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """People in an RGB uint8 ``(H, W, 3)`` image: boxes ``(B, 4)`` float64 ``[x0, y0, x1,
        y1]`` in image pixels and their scores ``(B,)``, highest first, scores ≥ ``min_score``,
        no two with IoU above ``nms_iou``."""
        height, width = image.shape[:2]
        side = (PICODET_INPUT, PICODET_INPUT)
        method = cv2.INTER_AREA if min(height, width) > PICODET_INPUT else cv2.INTER_LINEAR
        resized = cv2.resize(np.ascontiguousarray(image), side, interpolation=method)
        scores, boxes = self.session.run(None, {self.input_name: normalise(resized[None])})
        scores = scores.reshape(-1).astype(np.float64)  # (2125,)
        boxes = boxes.reshape(-1, 4).astype(np.float64)  # (2125, 4) input pixels
        keep = scores >= min_score
        boxes = boxes[keep] * np.tile([width, height], 2) / PICODET_INPUT
        kept = box_nms(boxes, scores[keep], nms_iou)
        return boxes[kept], scores[keep][kept]


def box_nms(boxes: np.ndarray, scores: np.ndarray, max_iou: float) -> np.ndarray:
    """Indices of ``(B, 4)`` boxes kept by greedy non-maximum suppression, highest score first:
    a box whose IoU with a kept one is above ``max_iou`` is dropped."""
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes, boxes)  # (B, B)
    kept: list[int] = []
    for index in order:
        if all(iou[index, other] <= max_iou for other in kept):
            kept.append(int(index))
    return np.array(kept, dtype=np.int64)


def merge_boxes(
    hand_boxes: np.ndarray,
    detected: np.ndarray,
    detected_scores: np.ndarray,
    same_iou: float,
    same_inside: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The union of hand-drawn boxes ``(H, 4)`` (score 1) and detected boxes ``(D, 4)``: a
    detected box whose IoU with a hand-drawn one is ``same_iou`` or more, or which lies inside one
    by ``same_inside`` of its area or more, is that person (or a part of it) and is dropped.
    Returns boxes ``(B, 4)`` (hand-drawn first) and their scores ``(B,)``."""
    hand_boxes = np.asarray(hand_boxes, dtype=np.float64).reshape(-1, 4)
    detected = np.asarray(detected, dtype=np.float64).reshape(-1, 4)
    overlap = box_iou(detected, hand_boxes).max(axis=1, initial=0.0)  # (D,)
    inside = inside_fraction(detected, hand_boxes).max(axis=1, initial=0.0)  # (D,)
    new = (overlap < same_iou) & (inside < same_inside)
    boxes = np.concatenate([hand_boxes, detected[new]])
    scores = np.concatenate([np.ones(len(hand_boxes)), np.asarray(detected_scores)[new]])
    return boxes, scores


def inside_fraction(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``(A, B)``: the fraction of each of ``(A, 4)`` boxes' area inside each of ``(B, 4)`` boxes
    (``[x0, y0, x1, y1]``; 0 for an empty box)."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (A, B, 2)
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (A, B, 2)
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)  # (A, B)
    area = np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0, None).prod(axis=-1)  # (A,)
    return np.where(area[:, None] > 0, inter / np.maximum(area[:, None], 1e-9), 0.0)


class TinyPoseTeacher:
    """Teacher "tinypose": TinyPose (flip-tested with ``config.flip``) on the union of an
    image's hand-drawn boxes and PicoDet's (``merge_boxes``), duplicates removed by OKS."""

    def __init__(self, tinypose: TinyPose, picodet: PicoDet, config: LabelConfig) -> None:
        self.tinypose, self.picodet, self.config = tinypose, picodet, config

    def boxes(
        self, image: np.ndarray, hand_boxes: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes ``(B, 4)`` ``[x0, y0, x1, y1]`` of an RGB uint8 ``(H, W, 3)`` image and
        their scores ``(B,)``: the hand-drawn ones (score 1) and PicoDet's other people."""
        config = self.config
        detected, scores = self.picodet.detect(image, config.picodet_score, config.picodet_nms_iou)
        hand = np.zeros((0, 4)) if hand_boxes is None else hand_boxes
        return merge_boxes(
            hand, detected, scores, config.tinypose_same_iou, config.tinypose_same_inside
        )

    def people(self, image: np.ndarray, hand_boxes: np.ndarray | None = None) -> list[Detection]:
        """People of an RGB uint8 ``(H, W, 3)`` image, highest score first: one per box of
        :meth:`boxes` (its box and box score kept), person score = mean keypoint score × box
        score, those with OKS ≥ ``config.nms_oks`` to a better one dropped."""
        boxes, scores = self.boxes(image, hand_boxes)
        found = self.tinypose.keypoints(
            image, boxes, self.config.tinypose_crop_scale, self.config.flip
        )  # (B, 17, 3)
        people = [
            Detection(keypoints, box, float(keypoints[:, 2].mean() * score), 1, float(score))
            for keypoints, box, score in zip(found, boxes, scores, strict=True)
        ]
        return oks_nms(people, self.config.nms_oks, self.config)
