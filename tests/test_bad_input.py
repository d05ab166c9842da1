"""Every command on broken input (files made here): the promised exit code, one line, no traceback.

Each case builds its broken input in a fresh folder and runs the command in-process with the tiny
random model. For every case the test asserts:

* the exit code (1: the files named are wrong; 2: the command line alone is);
* stderr holds exactly one non-blank line, ``posecli: error: ...``, with the expected words, and
  no traceback;
* outputs that existed before (``precious``) are byte for byte intact;
* no output the failed run was asked for exists under its final name (``absent``), except the
  complete ones it is meant to keep (``check``), and no temporary file is left anywhere.
"""

from __future__ import annotations

import errno
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from coco_synthetic import write_people_set
from schema import track_frames
from tiny_model import TINY_CONFIG

from posecli.checkpoint import save_checkpoint
from posecli.cli import run
from posecli.config import Preprocessing
from posecli.io import files, sinks
from posecli.model import build_network


@dataclass
class Case:
    """A command line, what it must answer, and what it must leave alone."""

    args: list[str]
    code: int
    words: str
    absent: list[Path] = field(default_factory=list)
    precious: dict[Path, bytes] = field(default_factory=dict)
    check: Callable[[], None] | None = None


@dataclass
class Place:
    """A fresh folder with the shared test files at hand."""

    root: Path
    video: Path
    model: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def fast(self) -> list[str]:
        return ["--model", str(self.model), "--box-size", "64", "--device", "cpu", "-q"] + [
            "--threads", "1",
        ]  # fmt: skip

    def file(self, name: str, content: bytes | str = b"") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def precious(self, name: str) -> tuple[Path, dict[Path, bytes]]:
        path = self.file(name, b"precious: " + name.encode())
        return path, {path: path.read_bytes()}

    def photos(self, count: int = 2) -> Path:
        folder = self.root / "photos"
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        for number in range(1, count + 1):
            image = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / f"{number:012d}.jpg"), image)
        return folder

    def video_out(self, *extra: str) -> tuple[list[str], Path]:
        out = self.root / "out" / "clip.mp4"
        return ["video", str(self.video), "--out", str(out), *self.fast, *extra], out

    def people_set(self) -> tuple[Path, Path, dict]:
        annotations, images = write_people_set(self.root / "set")
        return annotations, images, json.loads(annotations.read_text())

    def eval_args(self, annotations: Path, images: Path) -> tuple[list[str], Path]:
        metrics = self.root / "metrics.json"
        args = ["eval", "--annotations", str(annotations), "--images", str(images)]
        return [*args, "--metrics", str(metrics), *self.fast], metrics

    def train_args(self, annotations: Path, images: Path) -> list[str]:
        return ["train", "--annotations", str(annotations), "--images", str(images)] + [
            "--preset", "imhn-tiny", "--max-steps", "1", "--batch-size", "2", "--input-size",
            "64", "--workers", "0", "--device", "cpu", "--threads", "1", "--quiet",
        ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# video: broken inputs


def video_of(content: bytes, name: str = "in.mp4") -> Callable[[Place], Case]:
    def build(place: Place) -> Case:
        source = place.file(name, content)
        out = place.root / "out.mp4"
        args = ["video", str(source), "--out", str(out), *place.fast]
        return Case(args, 1, "video", absent=[out])

    return build


def truncated_mp4(place: Place) -> Case:
    source = place.file("cut.mp4", place.video.read_bytes()[:300])
    out = place.root / "out.mp4"
    return Case(["video", str(source), "--out", str(out), *place.fast], 1, "cannot", [out])


def directory_as_video(place: Place) -> Case:
    (place.root / "folder.mp4").mkdir()
    out = place.root / "out.mp4"
    args = ["video", str(place.root / "folder.mp4"), "--out", str(out), *place.fast]
    return Case(args, 1, "folder.mp4", absent=[out])


def zero_frame_avi(place: Place) -> Case:
    from conftest import run_ffmpeg

    source = place.root / "empty.avi"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "0", "-c:v",
               "mjpeg", str(source))  # fmt: skip
    out = place.root / "out.mp4"
    args = ["video", str(source), "--out", str(out), *place.fast]
    return Case(args, 1, "empty.avi holds no video frames", absent=[out])


def proc_file_as_video(place: Place) -> Case:
    out = place.root / "out.mp4"
    args = ["video", "/proc/self/status", "--out", str(out), *place.fast]
    return Case(args, 1, "/proc/self/status is not a regular file", absent=[out])


def missing_video(place: Place) -> Case:
    out = place.root / "out.mp4"
    args = ["video", str(place.root / "nope.mp4"), "--out", str(out), *place.fast]
    return Case(args, 1, "not found", absent=[out])


# video: wrong option values (exit 2)


def bad_option(*extra: str, words: str) -> Callable[[Place], Case]:
    def build(place: Place) -> Case:
        args, out = place.video_out(*extra)
        return Case(args, 2, words, absent=[out])

    return build


def same_output_twice(place: Place) -> Case:
    args, out = place.video_out("--json", str(place.root / "out" / "clip.mp4"))
    return Case(args, 2, "same file", absent=[out])


def output_over_input(place: Place) -> Case:
    source = place.file("in.mp4", place.video.read_bytes())
    args = ["video", str(source), "--no-video", "--json", str(source), "--force", *place.fast]
    return Case(args, 2, "overwrite the input", precious={source: source.read_bytes()})


# video: outputs


def existing_video_output(place: Place) -> Case:
    out, precious = place.precious("out/clip.mp4")
    tracks = place.root / "tracks.jsonl"
    args = ["video", str(place.video), "--out", str(out), "--json", str(tracks), *place.fast]
    return Case(args, 1, "exists", absent=[tracks], precious=precious)


def existing_openpose_file(place: Place) -> Case:
    kept, precious = place.precious("out/clip_openpose/clip_000000000000_keypoints.json")
    args, out = place.video_out("--format", "openpose")
    return Case(args, 1, "exists", absent=[out], precious=precious)


def output_folder_is_a_file(place: Place) -> Case:
    blocker, precious = place.precious("blocker")
    tracks = blocker / "tracks.jsonl"
    args = ["video", str(place.video), "--no-video", "--json", str(tracks), *place.fast]
    return Case(args, 1, "cannot create directory", precious=precious)


def output_is_a_folder(place: Place) -> Case:
    (place.root / "tracks.jsonl").mkdir()
    args = ["video", str(place.video), "--no-video", "--json", str(place.root / "tracks.jsonl")]
    return Case([*args, *place.fast], 1, "is a directory")


def unwritable_output_folder(place: Place) -> Case:
    real_open = open

    def no_access(file, mode="r", *args, **kwargs):
        if "x" in mode or "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    place.monkeypatch.setattr(files, "open", no_access, raising=False)
    tracks = place.root / "tracks.jsonl"
    args = ["video", str(place.video), "--no-video", "--json", str(tracks), *place.fast]
    return Case(args, 1, "Permission denied", absent=[tracks])


class _FullDisk(io.RawIOBase):
    """A raw file that takes ``room`` bytes, then fails with ENOSPC."""

    def __init__(self, file: io.FileIO, room: int) -> None:
        super().__init__()
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = bytes(data)[: self.room]
        self.room -= len(taken)
        return self.file.write(taken)

    def truncate(self, size: int | None = None) -> int:
        return self.file.truncate(size)

    def close(self) -> None:
        self.file.close()
        super().close()


def full_disk(place: Place) -> Case:
    real_open = open

    def nearly_full(file, mode="r", buffering=-1, *args, **kwargs):
        if mode != "wb":
            return real_open(file, mode, buffering, *args, **kwargs)
        raw = _FullDisk(io.FileIO(file, "w"), room=1500)  # the header and a few lines
        return raw if buffering == 0 else io.BufferedWriter(raw)

    place.monkeypatch.setattr(sinks, "open", nearly_full, raising=False)
    tracks = place.root / "tracks.jsonl"
    args = ["video", str(place.video), "--no-video", "--json", str(tracks), *place.fast]

    def lines_kept() -> None:  # the complete lines before the disk filled stay, whole
        frames = [line["frame"] for line in track_frames(tracks.read_text())]
        assert frames and frames == list(range(len(frames)))

    return Case(args, 1, "No space left on device", check=lines_kept)


# video: models


def model_file(content: bytes, words: str) -> Callable[[Place], Case]:
    def build(place: Place) -> Case:
        model = place.file("model.pt", content)
        args, out = place.video_out("--model", str(model))
        return Case(args, 1, words, absent=[out])

    return build


def truncated_checkpoint(place: Place) -> Case:
    model = place.file("model.pt", place.model.read_bytes()[:2000])
    args, out = place.video_out("--model", str(model))
    return Case(args, 1, "cannot read checkpoint", absent=[out])


def nan_weights(place: Place) -> Case:
    network = build_network(TINY_CONFIG)
    with torch.no_grad():
        next(network.parameters()).view(-1)[0] = float("nan")
    model = save_checkpoint(place.root / "nan.pt", network, TINY_CONFIG, Preprocessing(), {})
    args, out = place.video_out("--model", str(model))
    return Case(args, 1, "NaN", absent=[out])


# ---------------------------------------------------------------------------------------------
# images


def broken_image_alone(content: bytes, words: str) -> Callable[[Place], Case]:
    def build(place: Place) -> Case:
        image = place.file("photo.jpg", content)
        poses = place.root / "poses.json"
        args = ["images", str(image), "--json", str(poses), *place.fast]
        return Case(args, 1, words, absent=[poses, place.root / "poses.images.json"])

    return build


def truncated_jpeg_strict(place: Place) -> Case:
    folder = place.photos()
    whole = (folder / "000000000001.jpg").read_bytes()
    (folder / "000000000003.jpg").write_bytes(whole[: len(whole) // 2])
    poses = place.root / "poses.json"
    annotated = place.root / "annotated"
    args = ["images", str(folder), "--json", str(poses), "--out-dir", str(annotated), "--strict"]
    return Case(
        [*args, *place.fast], 1, "000000000003.jpg", [poses, place.root / "poses.images.json"]
    )


def folder_without_images(place: Place) -> Case:
    place.file("notes/readme.txt", "no images here")
    poses = place.root / "poses.json"
    args = ["images", str(place.root / "notes"), "--json", str(poses), *place.fast]
    return Case(args, 1, "no images", absent=[poses])


def glob_without_matches(place: Place) -> Case:
    poses = place.root / "poses.json"
    args = ["images", str(place.root / "*.png"), "--json", str(poses), *place.fast]
    return Case(args, 1, "no files match", absent=[poses])


def existing_results(place: Place) -> Case:
    poses, precious = place.precious("poses.json")
    args = ["images", str(place.photos()), "--json", str(poses), *place.fast]
    return Case(args, 1, "exists", absent=[place.root / "poses.images.json"], precious=precious)


def existing_annotated_copy(place: Place) -> Case:
    copy, precious = place.precious("annotated/000000000002.jpg")
    poses = place.root / "poses.json"
    args = ["images", str(place.photos()), "--json", str(poses), "--out-dir", str(copy.parent)]
    return Case([*args, *place.fast], 1, "exists", absent=[poses], precious=precious)


def out_dir_is_a_file(place: Place) -> Case:
    blocker, precious = place.precious("annotated")
    poses = place.root / "poses.json"
    args = ["images", str(place.photos()), "--json", str(poses), "--out-dir", str(blocker)]
    return Case([*args, *place.fast], 1, "is a file", absent=[poses], precious=precious)


def copies_over_inputs(place: Place) -> Case:
    folder = place.photos()
    originals = {path: path.read_bytes() for path in folder.iterdir()}
    poses = place.root / "poses.json"
    args = ["images", str(folder), "--json", str(poses), "--out-dir", str(folder), "--force"]
    return Case([*args, *place.fast], 2, "--out-dir", absent=[poses], precious=originals)


# ---------------------------------------------------------------------------------------------
# eval


def annotation_text(text: str, words: str) -> Callable[[Place], Case]:
    def build(place: Place) -> Case:
        annotations = place.file("bad.json", text)
        args, metrics = place.eval_args(annotations, place.photos())
        return Case(args, 1, words, absent=[metrics])

    return build


def annotation_edit(edit: Callable[[dict], None], words: str) -> Callable[[Place], Case]:
    def build(place: Place) -> Case:
        annotations, images, dataset = place.people_set()
        edit(dataset)
        annotations.write_text(json.dumps(dataset))
        args, metrics = place.eval_args(annotations, images)
        return Case(args, 1, words, absent=[metrics])

    return build


def _drop_id(dataset: dict) -> None:
    del dataset["annotations"][0]["id"]


def _short_keypoints(dataset: dict) -> None:
    dataset["annotations"][0]["keypoints"] = [1, 2, 2] * 3 + [0]


def missing_annotated_image(place: Place) -> Case:
    annotations, images, _ = place.people_set()
    (images / "0002.png").unlink()
    args, metrics = place.eval_args(annotations, images)
    return Case(args, 1, "not found", absent=[metrics])


def existing_metrics(place: Place) -> Case:
    annotations, images, _ = place.people_set()
    args, metrics = place.eval_args(annotations, images)
    metrics.write_bytes(b"precious")
    detections = place.root / "metrics.detections.json"
    return Case(args, 1, "exists", absent=[detections], precious={metrics: b"precious"})


# ---------------------------------------------------------------------------------------------
# export, train, webcam, the command line itself


def existing_export(place: Place) -> Case:
    out, precious = place.precious("shipped.pt")
    args = ["export", "--model", str(place.model), "--out", str(out), "--quiet"]
    return Case(args, 1, "exists", precious=precious)


def export_of_text(place: Place) -> Case:
    model = place.file("notes.txt", "just some text\n")
    out = place.root / "shipped.pt"
    args = ["export", "--model", str(model), "--out", str(out), "--quiet"]
    return Case(args, 1, "not a posecli or PyTorch checkpoint", absent=[out])


def export_into_a_file(place: Place) -> Case:
    blocker, precious = place.precious("blocker")
    args = ["export", "--model", str(place.model), "--out", str(blocker / "x.pt"), "--quiet"]
    return Case(args, 1, "cannot create directory", precious=precious)


def train_preset_with_init(place: Place) -> Case:
    annotations, images, _ = place.people_set()
    run_dir = place.root / "run"
    args = [*place.train_args(annotations, images), "--init", str(place.model)]
    return Case([*args, "--out", str(run_dir)], 2, "exclude each other", absent=[run_dir])


def train_init_crop_not_a_size(place: Place) -> Case:
    annotations, images, _ = place.people_set()
    run_dir = place.root / "run"
    args = [*place.train_args(annotations, images), "--init-crop", "256by192"]
    return Case([*args, "--out", str(run_dir)], 2, "HEIGHTxWIDTH", absent=[run_dir])


def train_resume_nothing(place: Place) -> Case:
    annotations, images, _ = place.people_set()
    (place.root / "run").mkdir()
    args = [*place.train_args(annotations, images), "--out", str(place.root / "run"), "--resume"]
    return Case(args, 1, "holds no training run")


def train_bad_json(place: Place) -> Case:
    annotations = place.file("labels.json", '{"images": [')
    run_dir = place.root / "run"
    args = [*place.train_args(annotations, place.photos()), "--out", str(run_dir)]
    return Case(args, 1, "cannot read annotations", absent=[run_dir / "checkpoint-last.pt"])


def train_bad_mosaic(place: Place) -> Case:
    annotations, images, _ = place.people_set()
    args = [*place.train_args(annotations, images), "--mosaic", "2", "--out", str(place.root)]
    return Case(args, 2, "--mosaic")


def webcam_nothing_to_write(place: Place) -> Case:
    return Case(["webcam", "--camera", str(place.video), "--no-display", *place.fast], 2, "nothing")


def webcam_that_does_not_open(place: Place) -> Case:
    tracks = place.root / "live.jsonl"
    args = ["webcam", "--camera", str(place.root / "no-camera"), "--json", str(tracks)]
    return Case([*args, "--no-display", *place.fast], 1, "camera", absent=[tracks])


def command_line(*args: str, words: str) -> Callable[[Place], Case]:
    return lambda place: Case(list(args), 2, words)


CASES: dict[str, Callable[[Place], Case]] = {
    "video: zero-byte MP4": video_of(b""),
    "video: text as video": video_of(b"this is not a video\n" * 20),
    "video: random bytes as AVI": video_of(bytes(range(256)) * 16, "noise.avi"),
    "video: MP4 truncated to its header": truncated_mp4,
    "video: folder as input": directory_as_video,
    "video: AVI with no frames": zero_frame_avi,
    "video: /proc pseudo-file": proc_file_as_video,
    "video: missing input": missing_video,
    "video: --scales abc": bad_option("--scales", "abc", words="--scales"),
    "video: --scales inf": bad_option("--scales", "inf", words="--scales"),
    "video: --every 0": bad_option("--every", "0", words="--every"),
    "video: --start -1": bad_option("--start", "-1", words="--start"),
    "video: --end before --start": bad_option("--start", "1", "--end", "0.5", words="--end"),
    "video: --box-size 0": bad_option("--box-size", "0", words="--box-size"),
    "video: --min-score 2": bad_option("--min-score", "2", words="--min-score"),
    "video: --peak-threshold nan": bad_option("--peak-threshold", "nan", words="--peak"),
    "video: --device tpu": bad_option("--device", "tpu", words="device"),
    "video: --format xml": bad_option("--format", "xml", words="--format"),
    "video: --out and --json the same file": same_output_twice,
    "video: output over the input": output_over_input,
    "video: existing output": existing_video_output,
    "video: existing OpenPose file": existing_openpose_file,
    "video: output folder is a file": output_folder_is_a_file,
    "video: output is a folder": output_is_a_folder,
    "video: unwritable output folder": unwritable_output_folder,
    "video: disk full during --json": full_disk,
    "model: text file": model_file(b"hello\n", "not a posecli or PyTorch checkpoint"),
    "model: empty file": model_file(b"", "not a posecli or PyTorch checkpoint"),
    "model: plain pickle": model_file(b"\x80\x04K\x01.", "not a posecli or PyTorch checkpoint"),
    "model: truncated checkpoint": truncated_checkpoint,
    "model: NaN weights": nan_weights,
    "images: truncated JPEG alone": broken_image_alone(b"\xff\xd8\xff\xe0\x00\x10JFIF", "decode"),
    "images: zero-byte image": broken_image_alone(b"", "empty"),
    "images: text as image": broken_image_alone(b"not a picture", "decode"),
    "images: truncated JPEG with --strict": truncated_jpeg_strict,
    "images: folder without images": folder_without_images,
    "images: glob without matches": glob_without_matches,
    "images: existing results": existing_results,
    "images: existing annotated copy": existing_annotated_copy,
    "images: --out-dir is a file": out_dir_is_a_file,
    "images: copies over their inputs": copies_over_inputs,
    "eval: truncated JSON": annotation_text('{"images": [{"id": 1', "cannot read annotations"),
    "eval: JSON that is not COCO": annotation_text("[1, 2, 3]", "not a COCO annotation file"),
    "eval: annotation without id": annotation_edit(_drop_id, "has no 'id'"),
    "eval: keypoints of the wrong length": annotation_edit(_short_keypoints, "10 keypoint"),
    "eval: missing annotated image": missing_annotated_image,
    "eval: existing metrics": existing_metrics,
    "export: existing output": existing_export,
    "export: text as model": export_of_text,
    "export: folder is a file": export_into_a_file,
    "train: --preset with --init": train_preset_with_init,
    "train: --init-crop not a size": train_init_crop_not_a_size,
    "train: --resume of nothing": train_resume_nothing,
    "train: truncated JSON": train_bad_json,
    "train: --mosaic 2": train_bad_mosaic,
    "webcam: nothing to write": webcam_nothing_to_write,
    "webcam: camera that does not open": webcam_that_does_not_open,
    "cli: unknown command": command_line("frobnicate", words="frobnicate"),
    "cli: unknown option": command_line("video", "x.mp4", "--frobnicate", words="--frobnicate"),
    "cli: missing argument": command_line("images", "--json", "p.json", words="Missing"),
}


def _leftovers(root: Path) -> list[Path]:
    """Hidden temporary files anywhere under ``root``."""
    return [path for path in root.rglob(".*") if path.is_file()]


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_input(
    name: str,
    plain_video: Path,
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    case = CASES[name](Place(tmp_path, plain_video, checkpoint, monkeypatch))
    code = run(case.args)
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("posecli: error: "), stderr
    assert case.words in lines[0], lines[0]
    assert code == case.code, lines[0]
    for path, content in case.precious.items():
        assert path.read_bytes() == content, f"{path} was changed"
    for path in case.absent:
        assert not path.exists(), f"{path} was written by a failed run"
    assert _leftovers(tmp_path) == []
    if case.check is not None:
        case.check()


def test_there_are_at_least_thirty_kinds_of_broken_input() -> None:
    assert len(CASES) >= 30
    assert {name.split(":")[0] for name in CASES} >= {"video", "images", "eval", "train"}
