"""Planning a batch job: inputs classified, outputs named and checked, inputs done skipped.

A plan is made before any model loads: every error in it (a missing input, an output that
exists only in part, bad video settings) is a one-line error before any work. Inputs whose
outputs are all there are skipped (resume); images that failed in an earlier run, or that are
new, are run again and added to the earlier results.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from posecli.errors import InputError, OutputError, UsageError
from posecli.images import ImageOutputs
from posecli.io.draw import DEFAULT_DRAW_THRESHOLD
from posecli.io.files import check_output
from posecli.outputs import openpose_folder
from posecli.streams import StreamOutputs

#: File suffixes of a folder's entries taken as videos (lower case); any other file given by
#: name that is not an image is taken as a video too.
VIDEO_INPUT_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}
)

#: Hidden folder in ``DIR`` holding the outputs of inputs in progress.
STAGING_NAME = ".posecli-batch"

#: The stem of the images' outputs: ``DIR/images.json``, ``DIR/images.images.json``.
IMAGES_STEM = "images"


@dataclass(frozen=True)
class BatchOutputs:
    """What a job writes besides the tracks of each video and the COCO results of the images:
    ``mp4`` each video annotated (``DIR/STEM.mp4``); ``openpose`` OpenPose JSON per frame
    (``DIR/STEM_openpose/``) and per image (``DIR/images_openpose/``), as ``posecli video
    --format openpose`` and ``posecli images --format openpose`` write them; ``table`` CSV
    tables (``DIR/STEM.csv``, ``DIR/images.csv``) as ``--csv`` writes them."""

    mp4: bool = False
    openpose: bool = False
    table: bool = False


@dataclass(frozen=True)
class VideoSettings:
    """The ``video`` command's own settings, for every video of a job: ``start`` and ``end``
    (seconds, ``None``: the whole video), one frame in ``every``, One-Euro ``smooth``-ing, the
    keypoint score above which ``--mp4`` draws a keypoint (``draw_threshold``)."""

    start: float | None = None
    end: float | None = None
    every: int = 1
    smooth: bool = False
    draw_threshold: float = DEFAULT_DRAW_THRESHOLD

    def __post_init__(self) -> None:
        """UsageError for a range no video can have (the ``video`` command's checks)."""
        from posecli.io.sources import check_frame_range

        check_frame_range(self.start, self.end, self.every)

    def header(self) -> dict[str, Any]:
        """The settings as ``streams.tracks_header`` records them."""
        return {"start": self.start, "end": self.end, "every": self.every, "smooth": self.smooth,
                "draw_threshold": self.draw_threshold}  # fmt: skip


@dataclass(frozen=True)
class VideoJob:
    """One video and its outputs in ``DIR``: tracks (JSON lines), and on request the annotated
    MP4, the OpenPose folder and the CSV table."""

    source: Path
    tracks: Path
    video: Path | None = None
    openpose: Path | None = None
    table: Path | None = None

    def outputs(self) -> tuple[Path, ...]:
        """The output paths in the order they are renamed into place (tracks last)."""
        return tuple(path for _, path in self._named() if path is not None)

    def staged(self, folder: Path) -> StreamOutputs:
        """The outputs under their own names in ``folder`` (a staging folder)."""
        return StreamOutputs(
            **{name: folder / path.name for name, path in self._named() if path is not None}
        )

    def _named(self) -> tuple[tuple[str, Path | None], ...]:
        """``StreamOutputs`` field and path of each output, tracks last."""
        return (("video", self.video), ("openpose", self.openpose), ("table", self.table),
                ("tracks", self.tracks))  # fmt: skip


@dataclass(frozen=True)
class ImageJob:
    """The images of a job (natural order, ``(image_id, file name)`` as ``posecli images``
    gives them) and their COCO results file; the listing goes beside it, the OpenPose folder
    and the CSV table on request. ``todo``: the positions of the images to run (the others were
    done before; :func:`plan_batch` sets it)."""

    paths: tuple[Path, ...]
    ids: tuple[tuple[int, str], ...]
    results: Path
    openpose: Path | None = None
    table: Path | None = None
    todo: tuple[int, ...] = ()

    @property
    def listing(self) -> Path:
        return ImageOutputs(self.results).listing  # type: ignore[return-value]

    def outputs(self) -> tuple[Path, ...]:
        """The output paths in the order they are written (the listing last)."""
        outputs = (self.openpose, self.table, self.results, self.listing)
        return tuple(path for path in outputs if path is not None)

    def done_before(self) -> tuple[int, ...]:
        """Positions of the images an earlier run did: listed without an error.

        Raises:
            OutputError: the listing is unreadable, or lists images this job does not have
                under the same ids (images removed, or new ones that renumber the others).
        """
        try:
            listed = json.loads(self.listing.read_text())
            entries = {(entry["id"], entry["file_name"]): "error" in entry for entry in listed}
            json.loads(self.results.read_text())  # kept and added to: readable
        except (OSError, ValueError, TypeError, KeyError) as error:
            message = f"cannot read the outputs of {self.results}: {error} (use --force)"
            raise OutputError(message) from None
        positions = {image: index for index, image in enumerate(self.ids)}
        if not set(entries) <= set(positions):
            raise OutputError(
                f"{self.results} holds other images than the inputs (use --force to redo them)"
            )
        return tuple(sorted(positions[image] for image, failed in entries.items() if not failed))


@dataclass(frozen=True)
class BatchPlan:
    """What a job does: the videos and images to run, and the inputs skipped as done."""

    out_dir: Path
    videos: tuple[VideoJob, ...] = ()
    images: ImageJob | None = None
    skipped: tuple[str, ...] = ()
    settings: VideoSettings = VideoSettings()

    @property
    def staging(self) -> Path:
        return self.out_dir / STAGING_NAME

    @property
    def total(self) -> int:
        """Inputs to run: videos plus images."""
        return len(self.videos) + (len(self.images.todo) if self.images is not None else 0)

    def inputs(self) -> list[str]:
        """The inputs to run, in the order of the plan."""
        images = self.images.paths if self.images is not None else ()
        todo = self.images.todo if self.images is not None else ()
        return [str(images[index]) for index in todo] + [str(job.source) for job in self.videos]


def plan_batch(
    inputs: Sequence[str | Path],
    out_dir: Path,
    *,
    outputs: BatchOutputs = BatchOutputs(),
    settings: VideoSettings = VideoSettings(),
    force: bool = False,
) -> BatchPlan:
    """The plan of a job (before any model loads): videos and images of ``inputs`` (files,
    folders, globs; folders give their videos and images), their outputs in ``out_dir``.

    Raises:
        InputError: an input is missing or holds no videos or images.
        OutputError / UsageError: an output exists only in part (without ``force``: its input
            was not done by this command), or an output would replace an input.
    """
    from posecli.io.sources import image_ids

    videos, images = split_inputs(inputs)
    out_dir = out_dir.resolve()
    check_output(out_dir, force=force, directory=True)
    reserved = {IMAGES_STEM} if images and outputs.openpose else set()
    video_jobs = [
        video_job(path, out_dir / stem, outputs)
        for path, stem in zip(videos, unique_stems(videos, reserved), strict=True)
    ]
    image_job = None
    if images:
        results = out_dir / f"{IMAGES_STEM}.json"
        openpose = openpose_folder(None, results) if outputs.openpose else None
        table = out_dir / f"{IMAGES_STEM}.csv" if outputs.table else None
        paths, ids = tuple(images), tuple(image_ids(images))
        image_job = ImageJob(paths, ids, results, openpose, table, _all(paths))
    check_not_inputs([*video_jobs, *([image_job] if image_job else [])], [*videos, *images])
    todo = [job for job in video_jobs if force or not is_complete(job)]
    skipped = [str(job.source) for job in video_jobs if job not in todo]
    if image_job is not None and not force and is_complete(image_job):
        done = image_job.done_before()
        skipped = [str(image_job.paths[index]) for index in done] + skipped
        left = tuple(index for index in image_job.todo if index not in done)
        image_job = replace(image_job, todo=left) if left else None
    return BatchPlan(out_dir, tuple(todo), image_job, tuple(skipped), settings)


def video_job(source: Path, stem: Path, outputs: BatchOutputs) -> VideoJob:
    """The job of video ``source`` whose outputs are named ``stem`` + suffix."""
    tracks = stem.with_name(f"{stem.name}.jsonl")
    video = stem.with_name(f"{stem.name}.mp4") if outputs.mp4 else None
    openpose = openpose_folder(None, tracks) if outputs.openpose else None
    table = stem.with_name(f"{stem.name}.csv") if outputs.table else None
    return VideoJob(source, tracks, video, openpose, table)


def _all(paths: Sequence[Path]) -> tuple[int, ...]:
    return tuple(range(len(paths)))


def split_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """Absolute paths of the videos and of the images of ``inputs``, each list de-duplicated
    and in natural order. Images are told by suffix (``sources.IMAGE_SUFFIXES``); a folder
    gives its videos by :data:`VIDEO_INPUT_SUFFIXES`, a file or glob match any other file.

    Raises:
        InputError: no inputs, a missing input, a glob or folder without videos or images.
    """
    from posecli.io.sources import IMAGE_SUFFIXES, natural_key

    if not inputs:
        raise InputError("no inputs given")
    videos: set[Path] = set()
    images: set[Path] = set()
    for item in inputs:
        for path in _expand(str(item)):
            (images if path.suffix.lower() in IMAGE_SUFFIXES else videos).add(path.resolve())
    return sorted(videos, key=natural_key), sorted(images, key=natural_key)


def _expand(item: str) -> list[Path]:
    """The files of one input: itself, a folder's videos and images, a glob's files."""
    from posecli.io.sources import IMAGE_SUFFIXES

    path = Path(item)
    if path.is_file():
        return [path]
    if path.is_dir():
        known = VIDEO_INPUT_SUFFIXES | IMAGE_SUFFIXES
        found = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in known]
        if not found:
            raise InputError(f"no videos or images in directory {item}")
        return found
    if glob.has_magic(item):
        found = [Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file()]
        if not found:
            raise InputError(f"no files match {item}")
        return found
    raise InputError(f"input not found: {item}")


def unique_stems(videos: Sequence[Path], reserved: Collection[str] = ()) -> list[str]:
    """Output names of ``videos`` (in their order): the stem, ``STEM-2``, ``STEM-3``… for the
    second and later videos of one stem (``a/x.mp4``, ``b/x.mov`` → ``x``, ``x-2``), and for
    a stem of ``reserved`` (names the images' outputs take)."""
    taken = set(reserved)
    stems = []
    for path in videos:
        stem, number = path.stem, 1
        while stem in taken:
            number += 1
            stem = f"{path.stem}-{number}"
        taken.add(stem)
        stems.append(stem)
    return stems


def check_not_inputs(jobs: Sequence[VideoJob | ImageJob], inputs: Sequence[Path]) -> None:
    """UsageError when an output of ``jobs`` is one of ``inputs``."""
    sources = {path.resolve() for path in inputs}
    for job in jobs:
        for output in job.outputs():
            if output.resolve() in sources:
                raise UsageError(f"output {output} would overwrite an input")


def is_complete(job: VideoJob | ImageJob) -> bool:
    """Whether every output of ``job`` exists (done by an earlier run): resume skips it.

    Raises:
        OutputError: some outputs exist and others not (use --force to redo the input).
    """
    present = [path.exists() for path in job.outputs()]
    if any(present) and not all(present):
        found = next(path for path, there in zip(job.outputs(), present, strict=True) if there)
        raise OutputError(f"{found} exists but not every output of its input (use --force)")
    return all(present)
