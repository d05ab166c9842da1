"""Teacher models for pseudo-labels, run with onnxruntime on the CPU (the ``train`` extra).

MoveNet MultiPose (bottom-up, RGB), OpenPose MobileNet-thin (bottom-up, BGR: converted here from
the RGB images every teacher is given) and MoveNet SinglePose Thunder (top-down on person
boxes, RGB). :class:`Teachers` runs the ones ``LabelConfig.teacher`` names with their
test-time augmentation (sizes, mirror image) and fuses them (``posecli.train.label.fusion``).
Images are RGB uint8 ``(H, W, 3)`` as ``posecli.io.sources.load_image`` reads them: upright,
alpha composited on white, so teachers see the pixels the student is trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posecli.config import LabelConfig
from posecli.errors import (
    InputError,
    MissingDependencyError,
    UsageError,
)
from posecli.spec import (
    COCO_FLIP_ORDER,
    NUM_COCO_KEYPOINTS,
    network_to_coco,
)
from posecli.train.label.fusion import (
    Detection,
    PassKey,
    fuse_person,
    fuse_teachers,
    keypoint_box,
    oks_nms,
    unflip_detection,
)
from posecli.train.label.openpose import OPENPOSE_INPUT, group_openpose
from posecli.train.label.tinypose import (
    PICODET_FILE,
    TINYPOSE_FILE,
    PicoDet,
    TinyPose,
    TinyPoseTeacher,
    crop_affine,
)

MOVENET_FILE = "movenet-multipose.onnx"

OPENPOSE_FILE = "openpose_mobilenet_thin.onnx"

THUNDER_FILE = "movenet-thunder.onnx"

#: "tinypose", "thunder": top-down on person boxes (PP-TinyPose, MoveNet Thunder); the others:
#: bottom-up teacher fusion.
TEACHER_CHOICES = ("tinypose", "thunder", "movenet", "openpose", "both")

#: Square crop side (pixels) of MoveNet Thunder's fixed input.
THUNDER_INPUT = 256


def letterbox(
    image: np.ndarray, scale: float, canvas: tuple[int, int]
) -> tuple[np.ndarray, float, float]:
    """Resize ``image`` (H, W, 3) by ``scale`` into the top-left of a zero canvas (height, width).

    Returns the canvas (same dtype and colour order as the image) and the per-axis scales
    ``(sx, sy)``: an input pixel ``u`` shows image pixel ``(u + 0.5) / s - 0.5``.
    """
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    new_width = min(max(round(width * scale), 1), canvas[1])
    new_height = min(max(round(height * scale), 1), canvas[0])
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_width, new_height), interpolation=method)
    out = np.zeros((canvas[0], canvas[1], image.shape[2]), dtype=image.dtype)  # (h, w, 3)
    out[:new_height, :new_width] = resized
    return out, new_width / width, new_height / height


def _to_image(points: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Map ``(..., 2)`` input-pixel positions ``(u, v)`` back to image pixels (see letterbox)."""
    scale = np.array([sx, sy])
    return (points + 0.5) / scale - 0.5


def _onnxruntime() -> Any:
    """Import onnxruntime, which only labelling needs (the ``train`` extra)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise MissingDependencyError(
            "labelling needs onnxruntime, which is not installed: pip install 'posecli[train]'"
        ) from error
    return onnxruntime


def open_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session of the ONNX file ``path`` with ``threads`` intra-op threads."""
    onnxruntime = _onnxruntime()
    if not path.is_file():
        raise InputError(f"teacher model not found: {path}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped exceptions
        raise InputError(f"cannot load teacher model {path}: {error}") from error


class MoveNet:
    """MoveNet MultiPose: int32 ``(1, H, W, 3)`` RGB 0–255 in, ``(1, 6, 56)`` people out."""

    def __init__(self, session: Any, config: LabelConfig) -> None:
        self.session = session
        self.config = config
        self.input_name = session.get_inputs()[0].name

    def detect(
        self,
        image: np.ndarray,
        long_side: int,
        flip: bool = False,
        min_score: float | None = None,
    ) -> list[Detection]:
        """People in an RGB uint8 ``(H, W, 3)`` image, run with long side ``long_side`` (a
        multiple of 32; the image is letterboxed, not distorted), optionally on its mirror image;
        those scored below ``min_score`` (default ``config.movenet_min_score``) are dropped.
        """
        min_score = self.config.movenet_min_score if min_score is None else min_score
        height, width = image.shape[:2]
        view = image[:, ::-1] if flip else image
        scale = long_side / max(height, width)
        canvas_height = -(-round(height * scale) // 32) * 32
        canvas_width = -(-round(width * scale) // 32) * 32
        canvas, sx, sy = letterbox(view, scale, (canvas_height, canvas_width))
        batch = canvas[None].astype(np.int32)  # (1, h, w, 3) RGB
        people = self.session.run(None, {self.input_name: batch})[0][0]  # (6, 56)
        canvas_size = np.array([canvas_width, canvas_height], dtype=np.float64)
        detections = []
        for row in people.astype(np.float64):
            if row[55] < min_score:
                continue
            yx = row[:51].reshape(NUM_COCO_KEYPOINTS, 3)  # (17, 3) [y, x, score], normalised
            xy = _to_image(yx[:, 1::-1] * canvas_size - 0.5, sx, sy)  # (17, 2) image pixels
            corners = row[51:55].reshape(2, 2)[:, ::-1] * canvas_size - 0.5  # (2, 2) [x, y]
            box = _to_image(corners, sx, sy).reshape(4)
            detection = Detection(np.column_stack([xy, yx[:, 2]]), box, float(row[55]))
            detections.append(unflip_detection(detection, width) if flip else detection)
        return detections


class OpenPose:
    """OpenPose MobileNet-thin: float ``(1, 368, 432, 3)`` BGR 0–255 in, ``(1, 46, 54, 57)``
    out (18 CMU keypoint heatmaps + background, 38 part affinity fields, stride 8)."""

    def __init__(self, session: Any, config: LabelConfig) -> None:
        self.session = session
        self.config = config
        self.input_name = session.get_inputs()[0].name

    def detect(self, image: np.ndarray, flip: bool = False) -> list[Detection]:
        """People in an RGB uint8 ``(H, W, 3)`` image (letterboxed into 368×432), optionally
        run on its mirror image."""
        height, width = image.shape[:2]
        view = image[:, ::-1, ::-1] if flip else image[:, :, ::-1]  # BGR
        scale = min(OPENPOSE_INPUT[0] / height, OPENPOSE_INPUT[1] / width)
        canvas, sx, sy = letterbox(view, scale, OPENPOSE_INPUT)
        batch = canvas[None].astype(np.float32)  # (1, 368, 432, 3) BGR
        maps = self.session.run(None, {self.input_name: batch})[0][0]  # (46, 54, 57)
        people, scores = group_openpose(maps, self.config)
        detections = []
        for person, score in zip(people, scores, strict=True):
            coco = network_to_coco(person).copy()  # (17, 3) [u, v, score] input pixels
            coco[:, :2] = _to_image(coco[:, :2], sx, sy)
            coco[coco[:, 2] <= 0] = 0.0
            box = keypoint_box(coco, self.config.box_margin)
            detection = Detection(coco, box, float(score))
            detections.append(unflip_detection(detection, width) if flip else detection)
        return detections


def square_crop(box: np.ndarray, crop_scale: float, size: int) -> np.ndarray:
    """Affine ``(2, 3)`` from image pixels to the pixels of a ``size × size`` crop: a square of
    side ``crop_scale × max(width, height)`` of ``box`` ``[x0, y0, x1, y1]``, centred on it."""
    return crop_affine(box, crop_scale, (size, size))


class Thunder:
    """MoveNet SinglePose Thunder, top-down: int32 ``(1, 256, 256, 3)`` RGB crop in,
    ``(1, 1, 17, 3)`` ``[y, x, score]`` normalised to the crop out. It always returns one
    person: the crop decides who."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def detect(
        self, image: np.ndarray, box: np.ndarray, crop_scale: float, flip: bool = False
    ) -> np.ndarray:
        """The person of ``box`` ``[x0, y0, x1, y1]`` (image pixels) in an RGB uint8
        ``(H, W, 3)`` image, from a square crop (zero padding) optionally mirrored: ``(17, 3)``
        float64 ``[x, y, score]`` in image pixels, COCO order."""
        affine = square_crop(np.asarray(box, dtype=np.float64), crop_scale, THUNDER_INPUT)
        shape = (THUNDER_INPUT, THUNDER_INPUT)
        crop = cv2.warpAffine(np.ascontiguousarray(image), affine, shape, flags=cv2.INTER_LINEAR)
        if flip:
            crop = crop[:, ::-1]
        batch = np.ascontiguousarray(crop[None]).astype(np.int32)  # (1, 256, 256, 3) RGB
        output = self.session.run(None, {self.input_name: batch})[0]
        yx = np.asarray(output, dtype=np.float64).reshape(NUM_COCO_KEYPOINTS, 3)
        uv = yx[:, 1::-1] * THUNDER_INPUT - 0.5  # (17, 2) crop pixels [u, v]
        scores = yx[:, 2]
        if flip:
            uv[:, 0] = THUNDER_INPUT - 1 - uv[:, 0]
            uv, scores = uv[list(COCO_FLIP_ORDER)], scores[list(COCO_FLIP_ORDER)]
        xy = (uv - affine[:, 2]) / np.diag(affine[:, :2])  # (17, 2) image pixels
        return np.column_stack([xy, scores])


class Teachers:
    """The teachers chosen by ``config.teacher``, loaded from ``teachers_dir``."""

    def __init__(self, teachers_dir: Path, config: LabelConfig) -> None:
        check_config(config)
        self.config = config
        self.movenet: MoveNet | None = None
        self.openpose: OpenPose | None = None
        self.thunder: Thunder | None = None
        self.tinypose: TinyPoseTeacher | None = None
        if config.teacher == "tinypose":
            self.tinypose = TinyPoseTeacher(
                TinyPose(open_session(teachers_dir / TINYPOSE_FILE, config.threads)),
                PicoDet(open_session(teachers_dir / PICODET_FILE, config.threads)),
                config,
            )
        if config.teacher == "thunder":
            self.thunder = Thunder(open_session(teachers_dir / THUNDER_FILE, config.threads))
        if config.teacher in ("thunder", "movenet", "both"):
            self.movenet = MoveNet(
                open_session(teachers_dir / MOVENET_FILE, config.threads), config
            )
        if config.teacher in ("openpose", "both"):
            session = open_session(teachers_dir / OPENPOSE_FILE, config.threads)
            self.openpose = OpenPose(session, config)

    def passes(self, image: np.ndarray) -> dict[PassKey, list[Detection]]:
        """Every test-time-augmentation pass over an RGB uint8 ``(H, W, 3)`` image."""
        flips = (False, True) if self.config.flip else (False,)
        results: dict[PassKey, list[Detection]] = {}
        if self.movenet is not None:
            for size in self.config.movenet_sizes:
                for flip in flips:
                    results[("movenet", size, flip)] = self.movenet.detect(image, size, flip)
        if self.openpose is not None:
            for flip in flips:
                results[("openpose", OPENPOSE_INPUT[0], flip)] = self.openpose.detect(image, flip)
        return results

    def people(self, image: np.ndarray, hand_boxes: np.ndarray | None = None) -> list[Detection]:
        """People of an RGB uint8 ``(H, W, 3)`` image, highest score first: top-down on the
        ``(B, 4)`` ``[x0, y0, x1, y1]`` hand-drawn boxes (else on MoveNet MultiPose's) for the
        teacher "thunder", on their union with PicoDet's boxes for "tinypose"
        (``TinyPoseTeacher``), fused over the passes of the bottom-up teachers otherwise."""
        if self.tinypose is not None:
            return self.tinypose.people(image, hand_boxes)
        if self.thunder is None:
            return fuse_teachers(self.passes(image), self.config)
        if hand_boxes is not None and len(hand_boxes):
            boxes = np.asarray(hand_boxes, dtype=np.float64).reshape(-1, 4)
            box_scores, crop_scale = np.ones(len(boxes)), self.config.thunder_crop_scale
        else:
            found = self.movenet.detect(
                image, self.config.thunder_box_size, min_score=self.config.thunder_box_score
            )
            boxes = np.array([d.box for d in found]).reshape(-1, 4)
            box_scores = np.array([d.score for d in found])
            crop_scale = self.config.thunder_detected_crop_scale
        people = [
            self.top_down_person(image, box, float(score), crop_scale)
            for box, score in zip(boxes, box_scores, strict=True)
        ]
        return oks_nms(people, self.config.nms_oks, self.config)

    def top_down_person(
        self, image: np.ndarray, box: np.ndarray, box_score: float, crop_scale: float
    ) -> Detection:
        """Thunder's person in ``box`` (and its mirrored pass, fused, with ``config.flip``);
        person score = mean keypoint score × ``box_score``."""
        flips = (False, True) if self.config.flip else (False,)
        passes = []
        for flip in flips:
            keypoints = self.thunder.detect(image, box, crop_scale, flip)  # (17, 3)
            passes.append(Detection(keypoints, box, float(keypoints[:, 2].mean()) * box_score))
        if len(passes) == 1:
            return passes[0]
        return fuse_person(passes, len(passes), self.config)


def check_config(config: LabelConfig) -> None:
    """Raise UsageError for settings that cannot work."""
    if config.teacher not in TEACHER_CHOICES:
        raise UsageError(f"unknown teacher {config.teacher!r}: choose from {TEACHER_CHOICES}")
    if not config.movenet_sizes or any(s <= 0 or s % 32 for s in config.movenet_sizes):
        raise UsageError(f"MoveNet sizes must be positive multiples of 32: {config.movenet_sizes}")
    if config.chunk_size < 1 or config.threads < 1:
        raise UsageError("chunk_size and threads must be at least 1")
    if not (0 <= config.keep_keypoint <= 1 and 0 <= config.confident_person <= 1):
        raise UsageError("--keep-keypoint and --confident-person must lie in 0–1")
    if not 1 <= config.min_keypoints <= NUM_COCO_KEYPOINTS:
        raise UsageError(f"--min-keypoints must lie in 1–{NUM_COCO_KEYPOINTS}")
