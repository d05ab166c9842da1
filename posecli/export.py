"""``posecli export``: a model copied for shipping (checkpoint, ONNX), several averaged, or a
refiner quantised to int8 on calibration crops of real images.

torch-backed modules (loader, onnxfile, estimator, refine) are imported when an export runs,
so that importing the command line stays fast. Library code: errors are ``PoseCliError``
subclasses, progress goes through callbacks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from posecli.config import InferenceConfig
from posecli.errors import UsageError
from posecli.io.sources import ImageSource
from posecli.transforms import normalise

if TYPE_CHECKING:
    from posecli.io.sources import SourceFrame
    from posecli.networks import RefinerModel


#: What ``posecli export --format`` writes: a checkpoint, an ONNX file, an int8 ONNX refiner.
EXPORT_FORMATS = ("pt", "onnx", "onnx-int8")


#: Images an int8 export calibrates on at most, spread evenly over those it is given.
CALIBRATION_IMAGES = 120


def export_checkpoint(
    models: Sequence[str],
    out: Path,
    *,
    half: bool = True,
    file_format: str = "pt",
    calibration: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[str, Path]:
    """Copy checkpoint or model ``models[0]`` (an IMHN, a refiner or a PRN) to ``out`` for
    shipping, or with several ``models`` of one kind and config their weight average
    (``posecli.networks.average_models``): ``file_format`` ``"pt"``: a checkpoint, float16
    storage with ``half``, training state dropped; ``"onnx"``: an ``.onnx`` file
    (``posecli.onnxfile``, float32) that loads like a checkpoint; ``"onnx-int8"``: a refiner's
    ``.onnx`` file quantised to int8 (:func:`quantize_refiner`), calibrated on the images of
    ``calibration`` (files, folders, globs; they and the models' kinds checked before any
    model loads; ``progress(done, total)`` after each). Provenance kept.

    Returns:
        The source model's name and the path written.
    """
    from posecli.checkpoint import is_onnx, save_checkpoint
    from posecli.loader import checkpoint_kind, load
    from posecli.model import REFINER
    from posecli.networks import average_models
    from posecli.onnxfile import export_onnx

    if file_format not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {file_format!r}: use {', '.join(EXPORT_FORMATS)}")
    if is_onnx(out) != file_format.startswith("onnx"):
        raise UsageError(f"--format {file_format} and {out}: ONNX files, and only they, end .onnx")
    int8 = file_format == "onnx-int8"
    if int8 != bool(calibration):
        raise UsageError("--format onnx-int8 needs --calibration IMAGES, and only it takes them")
    frames = calibration_images(calibration) if int8 else None
    kinds = [checkpoint_kind(model) for model in models]  # CheckpointError for an ONNX file
    others = [model for model, kind in zip(models, kinds, strict=True) if kind is not REFINER]
    if int8 and others:
        raise UsageError(f"--format onnx-int8 quantises refiners, not {others[0]}")
    source = average_models(
        [load(model, kind.role) for model, kind in zip(models, kinds, strict=True)]
    )
    provenance = {**source.provenance, "exported_from": source.name}
    if frames is not None:
        source.provenance = provenance
        return source.name, quantize_refiner(source, out, frames, progress)
    if file_format == "onnx":
        source.provenance = provenance
        return source.name, export_onnx(source, out)
    provenance["half"] = half
    written = save_checkpoint(
        out, source.network, source.config, source.preprocessing, provenance, half=half
    )
    return source.name, written


def calibration_images(inputs: Sequence[str]) -> ImageSource:
    """At most :data:`CALIBRATION_IMAGES` of the images ``inputs`` name, evenly spread over
    their natural order; unreadable ones are skipped (InputError for a missing input)."""
    paths = ImageSource(inputs).paths
    step = max(1, len(paths) // CALIBRATION_IMAGES)
    return ImageSource(paths[::step][:CALIBRATION_IMAGES], skip_unreadable=True)


def quantize_refiner(
    refiner: RefinerModel,
    out: Path,
    frames: ImageSource,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``refiner`` (a network, not an ONNX file) to ``out`` as an int8 ONNX file
    (``posecli.onnxfile.quantize_onnx``), calibrated on the crops the refinement makes of the
    people the bundled default model finds in ``frames`` (default inference settings);
    ``progress(done, total)`` after each image."""
    from posecli.onnxfile import export_onnx, quantize_onnx

    note = (
        "int8 (static, QDQ; first and last convolution float), calibrated on the refiner crops "
        f"of the default model's people in {len(frames)} images"
    )
    with tempfile.TemporaryDirectory(prefix="posecli-export-") as folder:
        float_file = export_onnx(refiner, Path(folder) / "float.onnx")
        feeds = calibration_feeds(refiner, counted(frames, len(frames), progress))
        return quantize_onnx(float_file, out, feeds, note)


def counted(
    items: Iterable[Any], total: int, progress: Callable[[int, int], None] | None
) -> Iterator[Any]:
    """``items`` one by one, ``progress(done, total)`` called when the next one is asked for
    (the one before is done) and at the end."""
    done = 0
    for item in items:
        if progress is not None and done:
            progress(done, total)
        yield item
        done += 1
    if progress is not None:
        progress(done, total)


def calibration_feeds(
    refiner: RefinerModel, frames: Iterable[SourceFrame]
) -> Iterator[dict[str, np.ndarray]]:
    """One ONNX feed per image with people: ``crops`` float32 ``(B, 3, h, w)``, the
    normalised crops of its people (``posecli.refine.crop_boxes``, ``refiner_crops``) as the
    bundled default model finds them, and ``instances`` int64 ``(B,)`` (λ cycling) when the
    refiner has several."""
    from posecli.assemble import build_estimator
    from posecli.loader import load_model
    from posecli.onnxfile import graph_names
    from posecli.refine import crop_boxes, refiner_crops
    from posecli.registry import DEFAULT_MODEL

    config = InferenceConfig()
    estimator = build_estimator(load_model(DEFAULT_MODEL), config)
    names = graph_names(refiner.config)
    for frame in frames:
        poses = estimator.predict([frame.image])[0]
        boxes = [box for _, box in crop_boxes(poses, refiner, config)]
        if not boxes:
            continue
        _, crops = refiner_crops(frame.image, boxes, refiner)  # (B, h, w, 3) uint8
        inputs = (
            normalise(crops, refiner.preprocessing),  # (B, 3, h, w) float32
            np.arange(len(crops), dtype=np.int64) % refiner.config.instances,  # (B,) λ
        )
        yield dict(zip(names, inputs, strict=False))  # λ only where the graph takes it
