"""The run logic every command shares: outputs checked, the model loaded, sources through the
pipeline into sinks, and evaluation.

``posecli.cli`` parses options into these calls and shows their progress; the trainer's
validation and the benchmarks evaluate through :func:`evaluate_model` too, so there is one
evaluation path. Library code: errors are ``PoseCliError`` subclasses, progress goes through
callbacks, nothing is printed.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from posecli.config import DecodeConfig, InferenceConfig
from posecli.errors import InputError, PoseCliError, UsageError
from posecli.io.files import check_output, write_atomically

if TYPE_CHECKING:
    from posecli.estimator import Estimator
    from posecli.io.ffmpeg import VideoInfo
    from posecli.io.sources import ImageSource, SourceFrame, VideoSource
    from posecli.pipeline import FrameSink, PipelineProgress, PipelineStats
    from posecli.weights import RefinerModel

logger = logging.getLogger(__name__)

#: Smallest ``long_side`` (other than 0, off), pixels.
MIN_INPUT_SIZE = 16

#: File suffixes an annotated video may be written to.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")

ProgressCallback = Callable[["PipelineProgress"], None]


@dataclass(frozen=True)
class InferenceOptions:
    """The model and the inference/decoding settings common to every inference command."""

    model: str = "default"
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        """UsageError for settings no run can use (the CLI names the option)."""
        decode, inference = self.decode, self.inference
        if not 0 < decode.peak_threshold < math.inf:
            raise UsageError(f"--peak-threshold must be a number > 0, got {decode.peak_threshold}")
        numbers = {
            "--part-threshold": decode.part_threshold,
            "--min-part-score": decode.min_mean_part_score,
            "--min-score": decode.min_person_score,
        }
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise UsageError(f"{name} must be a number, got {value}")
        if 0 < inference.long_side < MIN_INPUT_SIZE:
            low = f"at least {MIN_INPUT_SIZE}"
            raise UsageError(f"--long-side must be 0 (off) or {low}, got {inference.long_side}")
        if inference.refiner and not inference.refine:
            raise UsageError("--refiner is used only with --refine")
        if inference.prn and decode.grouping != "prn":
            raise UsageError("--prn is used only with --grouping prn")


def load_estimator(options: InferenceOptions) -> Estimator:
    """Load the model (ModelNotFoundError / CheckpointError) and build the Estimator (which
    applies ``inference.backend`` and ``inference.threads``)."""
    from posecli.estimator import Estimator
    from posecli.weights import load_model

    model = load_model(options.model, device=options.inference.device)
    return Estimator(model, options.inference, options.decode)


def check_outputs(
    outputs: Sequence[Path | None], force: bool, directories: Sequence[Path | None] = ()
) -> None:
    """OutputError for an output that exists without ``force`` (before any model loads)."""
    for path in outputs:
        if path is not None:
            check_output(path, force=force)
    for path in directories:
        if path is not None:
            check_output(path, force=force, directory=True)


def same_file(a: Path | str, b: Path | None) -> bool:
    """Whether ``a`` (a path, or a URL: never) and ``b`` name the same file."""
    return b is not None and "://" not in str(a) and Path(a).resolve() == b.resolve()


def openpose_folder(explicit: Path | None, beside: Path) -> Path:
    """``explicit``, else ``NAME_openpose/`` next to the main output ``beside``."""
    return explicit if explicit is not None else beside.with_name(f"{beside.stem}_openpose")


def write_json_atomically(path: Path, data: Any, *, force: bool) -> Path:
    """Write ``data`` as indented JSON, whole or not at all (OutputError)."""
    check_output(path, force=force)
    return write_atomically(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


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
) -> tuple[str, Path]:
    """Copy checkpoint or model ``models[0]`` (an IMHN, a refiner or a PRN) to ``out`` for
    shipping, or with several ``models`` of one kind and config their weight average
    (``posecli.weights.average_models``): ``file_format`` ``"pt"``: a checkpoint, float16
    storage with ``half``, training state dropped; ``"onnx"``: an ``.onnx`` file
    (``posecli.onnxfile``, float32) that loads like a checkpoint; ``"onnx-int8"``: a refiner's
    ``.onnx`` file quantised to int8 (:func:`quantize_refiner`), calibrated on the images of
    ``calibration`` (files, folders, globs; they and the models' kinds checked before any
    model loads). Provenance kept.

    Returns:
        The source model's name and the path written.
    """
    from posecli.onnxfile import export_onnx
    from posecli.weights import (
        average_models,
        checkpoint_kind,
        is_onnx,
        load_model,
        load_prn,
        load_refiner,
        save_checkpoint,
    )

    if file_format not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {file_format!r}: use {', '.join(EXPORT_FORMATS)}")
    if is_onnx(out) != file_format.startswith("onnx"):
        raise UsageError(f"--format {file_format} and {out}: ONNX files, and only they, end .onnx")
    int8 = file_format == "onnx-int8"
    if int8 != bool(calibration):
        raise UsageError("--format onnx-int8 needs --calibration IMAGES, and only it takes them")
    frames = calibration_images(calibration) if int8 else None
    kinds = [checkpoint_kind(model) for model in models]  # CheckpointError for an ONNX file
    others = [model for model, kind in zip(models, kinds, strict=True) if kind != "refiner"]
    if int8 and others:
        raise UsageError(f"--format onnx-int8 quantises refiners, not {others[0]}")
    loaders = {"refiner": load_refiner, "prn": load_prn}
    source = average_models(
        [loaders.get(kind, load_model)(model) for model, kind in zip(models, kinds, strict=True)]
    )
    provenance = {**source.provenance, "exported_from": source.name}
    if frames is not None:
        source.provenance = provenance
        return source.name, quantize_refiner(source, out, frames)
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
    from posecli.io.sources import ImageSource

    paths = ImageSource(inputs).paths
    step = max(1, len(paths) // CALIBRATION_IMAGES)
    return ImageSource(paths[::step][:CALIBRATION_IMAGES], skip_unreadable=True)


def quantize_refiner(refiner: RefinerModel, out: Path, frames: ImageSource) -> Path:
    """Write ``refiner`` (a network, not an ONNX file) to ``out`` as an int8 ONNX file
    (``posecli.onnxfile.quantize_onnx``), calibrated on the crops the refinement makes of the
    people the bundled default model finds in ``frames`` (default inference settings)."""
    import tempfile

    from posecli.onnxfile import export_onnx, quantize_onnx

    note = (
        "int8 (static, QDQ; first and last convolution float), calibrated on the refiner crops "
        f"of the default model's people in {len(frames)} images"
    )
    with tempfile.TemporaryDirectory(prefix="posecli-export-") as folder:
        float_file = export_onnx(refiner, Path(folder) / "float.onnx")
        return quantize_onnx(float_file, out, calibration_feeds(refiner, frames), note)


def calibration_feeds(
    refiner: RefinerModel, frames: Iterable[SourceFrame]
) -> Iterator[dict[str, np.ndarray]]:
    """One ONNX feed per image with people: ``crops`` float32 ``(B, 3, h, w)``, the
    normalised crops of its people (``posecli.refine.crop_boxes``, ``refiner_crops``) as the
    bundled default model finds them, and ``instances`` int64 ``(B,)`` (λ cycling) when the
    refiner has several."""
    from posecli.estimator import Estimator
    from posecli.onnxfile import graph_names
    from posecli.refine import crop_boxes, refiner_crops
    from posecli.transforms import normalise
    from posecli.weights import DEFAULT_MODEL, load_model

    config = InferenceConfig()
    estimator = Estimator(load_model(DEFAULT_MODEL), config)
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


def installation_report() -> list[str]:
    """What ``posecli info`` says: versions, device, native decoder, known models, presets."""
    import platform
    import sys

    import numpy
    import torch

    from posecli import __version__
    from posecli.config import MODEL_PRESETS, PRN_PRESETS, REFINER_PRESETS
    from posecli.decode import native_available
    from posecli.device import resolve_device
    from posecli.weights import list_models

    cuda = torch.cuda.is_available()
    cuda_note = f"{torch.cuda.device_count()} CUDA device(s)" if cuda else "CUDA not available"
    native = "built" if native_available() else "NOT built (slow NumPy)"
    lines = [
        f"posecli {__version__}",
        f"python  {platform.python_version()} ({sys.executable})",
        f"torch   {torch.__version__}, numpy {numpy.__version__}",
        f"device  {resolve_device('auto')} (auto; {cuda_note})",
        f"native decoder  {native}",
        "models:",
    ]
    for entry in list_models():
        state = "present" if entry.present else "missing"
        lines.append(f"  {entry.name:<20} {state:<8} {entry.path}  ({entry.description})")
    lines.append(f"presets (for train --preset): {', '.join(MODEL_PRESETS)}")
    lines.append(f"refiner presets (train --preset): {', '.join(REFINER_PRESETS)}")
    lines.append(f"PRN presets (train --preset): {', '.join(PRN_PRESETS)}")
    return lines


def written(*paths: Path | None) -> str:
    """The outputs of a run, for its summary line."""
    return ", ".join(str(path) for path in paths if path is not None)


# ---------------------------------------------------------------------------------------------
# video and camera streams


@dataclass(frozen=True)
class StreamOutputs:
    """What a video or camera run writes: annotated MP4, JSON-lines tracks, OpenPose folder."""

    video: Path | None = None
    tracks: Path | None = None
    openpose: Path | None = None

    def paths(self) -> tuple[Path | None, ...]:
        return (self.video, self.tracks, self.openpose)


def video_outputs(
    source: str,
    out: Path | None,
    tracks: Path | None,
    *,
    no_video: bool,
    openpose: bool,
    openpose_dir: Path | None,
) -> StreamOutputs:
    """The outputs of ``posecli video`` from its options; UsageError for a bad combination."""
    if no_video and out is not None:
        raise UsageError("--out and --no-video exclude each other")
    if not no_video and out is None:
        raise UsageError("--out OUT.mp4 is required (or --no-video with --json)")
    openpose = openpose or openpose_dir is not None
    main_output = out or tracks
    if main_output is None and not openpose:
        raise UsageError("nothing to write: give --json or --format openpose with --no-video")
    check_video_suffix(out)
    if same_file(source, out) or same_file(source, tracks):
        raise UsageError("an output would overwrite the input")
    if out is not None and same_file(out, tracks):
        raise UsageError("--out and --json name the same file")
    if not openpose:
        return StreamOutputs(out, tracks)
    if openpose_dir is None and main_output is None:
        raise UsageError("--format openpose with --no-video needs --openpose-dir or --json")
    return StreamOutputs(out, tracks, openpose_folder(openpose_dir, main_output))  # type: ignore[arg-type]


def check_video_suffix(out: Path | None) -> None:
    """UsageError unless ``out`` (if any) names an MP4 file."""
    if out is not None and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"--out must name an .mp4 file, got {out}")


def webcam_outputs(
    out: Path | None, tracks: Path | None, *, no_display: bool
) -> tuple[StreamOutputs, bool]:
    """The outputs of ``posecli webcam`` and whether it shows a window (a display is there and
    not declined); UsageError when there is nothing to show or write."""
    from posecli.io import display

    check_video_suffix(out)
    show = not no_display and display.available()
    if not no_display and not show:
        logger.warning("no display available: running without a window")
    if not show and out is None and tracks is None:
        raise UsageError("no display and nothing to write: give --out or --json")
    return StreamOutputs(out, tracks), show


def camera_summary(stats: PipelineStats, camera_dropped: int) -> str:
    """The summary of a camera run, each frame captured counted once: processed, or dropped
    (by the camera's grabber, by the pipeline as stale, or on its way when the run stopped).

    ``camera_dropped``: the closed camera source's ``dropped``.
    """
    captured, dropped = stats.read + camera_dropped, stats.dropped + camera_dropped
    return f"{captured} frames captured, {stats.frames} processed at {stats.fps:.1f} fps, " + (
        f"{dropped} dropped to stay live"
    )


def expected_frames(frames: VideoSource) -> int | None:
    """Frames the video should yield, for progress; ``None`` when it cannot tell."""
    try:
        return frames.expected_frames()
    except PoseCliError as error:  # decoding will tell what is wrong, if anything
        logger.debug("frame count unknown: %s", error)
        return None


def check_stream_outputs(outputs: StreamOutputs, force: bool) -> None:
    """OutputError for an output of a stream that exists without ``force``, OpenPose files
    already in its folder included (before any model loads)."""
    from posecli.io.sinks import OpenPoseSink

    check_outputs([outputs.video, outputs.tracks], force, [outputs.openpose])
    if outputs.openpose is not None:
        OpenPoseSink.check(outputs.openpose, force=force)


def track_stream(
    frames: Iterable[SourceFrame],
    estimator: Estimator,
    outputs: StreamOutputs,
    *,
    smooth: bool = False,
    force: bool = False,
    video_info: VideoInfo | None = None,
    latency_first: bool = False,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    window: FrameSink | None = None,
    stop: threading.Event | None = None,
    header: Mapping[str, Any] | None = None,
) -> PipelineStats:
    """Open the sinks of a video or camera run, track and draw, and run the pipeline.

    ``video_info`` describes the source video (frame rate, timescale, audio), ``None`` for a
    camera. ``window`` shows the annotated frames and sets ``stop`` when the user quits.
    ``header`` (see :func:`tracks_header`) is the first line of the JSON-lines tracks.
    Leaving the sinks' ``with`` blocks on an exception (Ctrl-C included) finalises them with the
    frames done: a playable MP4, complete JSON lines.
    """
    from posecli.config import TrackerConfig
    from posecli.io.draw import draw_poses
    from posecli.pipeline import run_pipeline
    from posecli.track import Tracker

    with ExitStack() as stack:
        sinks = _stream_sinks(stack, outputs, force, video_info, header)
        if window is not None:
            sinks.append(window)
        drawing = outputs.video is not None or window is not None
        return run_pipeline(
            frames,
            estimator,
            sinks,
            tracker=Tracker(TrackerConfig(smooth=smooth)),
            draw=draw_poses if drawing else None,
            latency_first=latency_first,
            total=total,
            progress=progress,
            stop=stop,
        )


def _stream_sinks(
    stack: ExitStack,
    outputs: StreamOutputs,
    force: bool,
    video_info: VideoInfo | None,
    header: Mapping[str, Any] | None,
) -> list[FrameSink]:
    """The opened sinks of a stream's outputs (closed by ``stack``)."""
    from posecli.io.sinks import JsonLinesSink, OpenPoseSink, VideoSink

    sinks: list[FrameSink] = []
    if outputs.video is not None:
        rate = video_info.frame_rate if video_info is not None else Fraction(30)
        audio = video_info.source if video_info is not None and video_info.has_audio else None
        video = VideoSink(
            outputs.video, rate, audio_source=audio, timescale=timescale(video_info), force=force
        )
        sinks.append(stack.enter_context(video))
    if outputs.tracks is not None:
        tracks = JsonLinesSink(outputs.tracks, force=force, header=header)
        sinks.append(stack.enter_context(tracks))
    if outputs.openpose is not None:
        prefix = (outputs.video or outputs.tracks or outputs.openpose).stem
        openpose = OpenPoseSink(outputs.openpose, prefix=prefix, force=force)
        sinks.append(stack.enter_context(openpose))
    return sinks


def tracks_header(
    command: str,
    source: str,
    video_info: VideoInfo | None,
    estimator: Estimator,
    options: InferenceOptions,
    **settings: Any,
) -> dict[str, Any]:
    """The header record of a track file: what made it (``posecli report`` shows it).

    ``settings`` are the command's own options (``start``, ``every``, ``smooth``…).
    """
    from posecli import __version__

    rate = video_info.frame_rate if video_info is not None else None
    return {
        "format": "posecli-tracks",
        "version": 1,
        "posecli": __version__,
        "command": command,
        "source": source,
        "fps": float(rate) if rate else None,
        "model": options.model,
        "model_name": estimator.model.name,
        "options": {
            **settings,
            **options.inference.to_dict(),
            **options.decode.to_dict(),
        },
    }


def timescale(video_info: VideoInfo | None) -> int | None:
    """MP4 ticks per second of the source stream, so that variable timestamps stay exact."""
    if video_info is None or not video_info.time_base:
        return None
    return round(1 / video_info.time_base)


# ---------------------------------------------------------------------------------------------
# still images


@dataclass(frozen=True)
class ImageOutputs:
    """What an image run writes: COCO results (+ listing), annotated copies, OpenPose folder."""

    results: Path | None = None
    annotated: Path | None = None
    openpose: Path | None = None
    list_images: bool = True  # write the listing beside the results

    @property
    def listing(self) -> Path | None:
        """``POSES.images.json`` beside ``POSES.json``: every image's id, with its file name."""
        if self.results is None or not self.list_images:
            return None
        return self.results.with_name(f"{self.results.stem}.images.json")


def check_image_outputs(paths: Sequence[Path], outputs: ImageOutputs, force: bool) -> None:
    """Fail before the model loads on an output that would replace an input image, and on
    outputs, annotated copies or OpenPose files that exist already (without ``force``)."""
    from posecli.io.sinks import OpenPoseSink, check_directory_files

    folders = {path.resolve().parent for path in paths}
    out_dir = outputs.annotated
    if out_dir is not None and out_dir.resolve() in folders:
        raise UsageError(f"--out-dir {out_dir} holds the input images: copies would replace them")
    files = [outputs.results, outputs.listing]
    if any(same_file(path, output) for path in paths for output in files):
        raise UsageError("an output would overwrite an input image")
    check_outputs(files, force, [out_dir, outputs.openpose])
    if out_dir is not None:
        check_directory_files(out_dir, [path.name for path in paths], force=force)
    if outputs.openpose is not None:
        OpenPoseSink.check(outputs.openpose, force=force)


def detect_images(
    frames: ImageSource,
    estimator: Estimator,
    outputs: ImageOutputs = ImageOutputs(),
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> tuple[list[dict[str, Any]], PipelineStats]:
    """Run still images through the pipeline into COCO results, written to ``outputs`` too.

    ``frames.ids`` give the images' ids. With ``outputs.listing``, the listing of the images
    done is written too, also when the run is interrupted.

    Returns:
        The COCO results (COCO-17 keypoints in image pixels) and the pipeline stats.
    """
    done: list[int] = []
    try:
        found = _detect(frames, estimator, outputs, done, force, progress)
    except KeyboardInterrupt:  # the results of the images done are saved: list them too
        if done:
            _write_listing(outputs, frames, done, force)
        raise
    _write_listing(outputs, frames, done, force)
    return found


def _write_listing(
    outputs: ImageOutputs, frames: ImageSource, done: Sequence[int], force: bool
) -> None:
    """Write the listing of the images done, when the outputs have one."""
    if outputs.listing is not None:
        write_json_atomically(outputs.listing, image_listing(frames, done), force=force)


def _detect(
    frames: ImageSource,
    estimator: Estimator,
    outputs: ImageOutputs,
    done: list[int],
    force: bool,
    progress: ProgressCallback | None,
) -> tuple[list[dict[str, Any]], PipelineStats]:
    """:func:`detect_images` without the listing; ``done`` receives each image's index."""
    from posecli.io.draw import draw_poses
    from posecli.io.sinks import CocoResultsSink, ImageDirectorySink, OpenPoseSink
    from posecli.pipeline import run_pipeline

    with frames, ExitStack() as stack:
        coco = stack.enter_context(CocoResultsSink(outputs.results, force=force))
        sinks: list[FrameSink] = [coco]
        if outputs.annotated is not None:
            sinks.append(stack.enter_context(ImageDirectorySink(outputs.annotated, force=force)))
        if outputs.openpose is not None:
            sinks.append(stack.enter_context(OpenPoseSink(outputs.openpose, force=force)))
        sinks.append(lambda frame, image: done.append(frame.index))
        stats = run_pipeline(
            frames,
            estimator,
            sinks,
            draw=draw_poses if outputs.annotated is not None else None,
            total=len(frames),
            progress=progress,
        )
    return coco.results, stats


def image_listing(frames: ImageSource, done: Sequence[int]) -> list[dict[str, Any]]:
    """``{"id", "file_name"}`` of the images done, in order; a skipped one adds ``"error"``."""
    errors = dict(frames.skipped)
    listing = []
    for index in sorted({*done, *errors}):
        image_id, name = frames.ids[index]
        entry: dict[str, Any] = {"id": image_id, "file_name": name}
        if index in errors:
            entry["error"] = errors[index]
        listing.append(entry)
    return listing


# ---------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_model` measured: COCO keypoint metrics, the detections, the run."""

    scores: dict[str, Any]
    results: list[dict[str, Any]]
    stats: PipelineStats

    def lines(self) -> list[str]:
        """The metrics as ``posecli eval`` prints them: one per key, then one per height band."""
        from posecli.evaluate import SUMMARY_KEYS

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
    annotations: str | Path, images_dir: str | Path, *, sizes: bool = False
) -> ImageSource:
    """The images of an annotation file, with its image ids, every entry and file checked
    (before the model loads): InputError for a bad entry or a missing image."""
    from posecli.evaluate import check_images, load_annotations
    from posecli.io.sources import ImageSource

    ground_truth = load_annotations(annotations)
    check_images(ground_truth, annotations, sizes=sizes)
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
    from posecli.evaluate import coco_keypoint_ap, recall_by_height

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
