"""The command line end to end on small generated videos and images with a tiny random model.

Commands run in-process through ``posecli.cli.run`` (exit code returned, messages on stderr),
except where a real process matters (``python -m posecli``, a real Ctrl-C).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from coco_synthetic import write_people_set
from schema import (
    COCO_RESULT_SCHEMA,
    OPENPOSE_SCHEMA,
    TRACK_LINE_SCHEMA,
    track_frames,
    validate_json,
)

from posecli import inference
from posecli.assemble import build_estimator
from posecli.cli import run
from posecli.config import MODEL_PRESETS, InferenceConfig
from posecli.estimator import Estimator
from posecli.evaluate import SUMMARY_KEYS
from posecli.io import cameras, display
from posecli.io.ffmpeg import probe_video
from posecli.io.sources import SourceFrame, VideoSource
from posecli.loader import load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fast(checkpoint: Path) -> list[str]:
    """Inference options for a quick run: the tiny model, small input, CPU, no progress.

    One torch thread: with test runs sharing the cores, more threads only contend.
    """
    return ["--model", str(checkpoint), "--box-size", "64", "--device", "cpu", "--quiet"] + [
        "--threads", "1",
    ]  # fmt: skip


def _lines(path: Path) -> list[dict]:
    lines = track_frames(path.read_text())
    for line in lines:
        validate_json(line, TRACK_LINE_SCHEMA)
    return lines


def _hidden(folder: Path) -> list[str]:
    """Temporary files (``.name.part``) left behind."""
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("posecli: error: ")
    return lines[0]


# ---------------------------------------------------------------------------------------------
# video


@pytest.mark.parametrize("has_audio", [False, True])
def test_video_keeps_frames_rate_size_and_audio(
    has_audio: bool, plain_video: Path, audio_video: Path, fast: list[str], tmp_path: Path
) -> None:
    source = audio_video if has_audio else plain_video
    out, tracks = tmp_path / "out.mp4", tmp_path / "tracks.jsonl"
    assert run(["video", str(source), "--out", str(out), "--json", str(tracks), *fast]) == 0
    info = probe_video(out)
    assert (info.codec, info.width, info.height, info.frame_rate) == ("h264", 64, 48, 10)
    assert info.has_audio == has_audio
    assert len(list(VideoSource(out))) == 12
    lines = _lines(tracks)
    assert [line["frame"] for line in lines] == list(range(12))
    assert [line["time"] for line in lines] == pytest.approx([i / 10 for i in range(12)])
    assert {(line["width"], line["height"]) for line in lines} == {(64, 48)}
    assert _hidden(tmp_path) == []


def test_video_rotation_and_variable_frame_rate(
    rotated_video: Path, vfr_video: Path, vfr_times: list[float], fast: list[str], tmp_path: Path
) -> None:
    upright, tracks = tmp_path / "upright.mp4", tmp_path / "vfr.jsonl"
    assert run(["video", str(rotated_video), "--out", str(upright), *fast]) == 0
    info = probe_video(upright)
    assert (info.width, info.height, info.rotation) == (48, 64, 0)
    assert (
        run(
            ["video", str(vfr_video), "-o", str(tmp_path / "vfr.mp4"), "--json", str(tracks), *fast]
        )
        == 0
    )
    assert [line["time"] for line in _lines(tracks)] == pytest.approx(vfr_times, abs=1e-3)
    assert [f.time for f in VideoSource(tmp_path / "vfr.mp4")] == pytest.approx(vfr_times, abs=2e-3)


def test_video_json_only_every_second_frame(
    plain_video: Path, fast: list[str], tmp_path: Path
) -> None:
    tracks = tmp_path / "tracks.jsonl"
    args = ["video", str(plain_video), "--no-video", "--json", str(tracks), "--every", "2"]
    assert run([*args, *fast]) == 0
    assert [line["frame"] for line in _lines(tracks)] == [0, 2, 4, 6, 8, 10]
    assert sorted(os.listdir(tmp_path)) == ["tracks.jsonl"]


def test_video_start_end_and_openpose_format(
    plain_video: Path, fast: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "clip.mp4"
    args = ["video", str(plain_video), "-o", str(out), "--start", "0.3", "--end", "0.8"]
    assert run([*args, "--format", "openpose", *fast]) == 0
    assert [round(f.time, 3) for f in VideoSource(out)] == [0.0, 0.1, 0.2, 0.3, 0.4]
    files = sorted((tmp_path / "clip_openpose").iterdir())
    assert [f.name for f in files] == [f"clip_{i:012d}_keypoints.json" for i in range(3, 8)]
    for file in files:
        validate_json(json.loads(file.read_text()), OPENPOSE_SCHEMA)


def test_existing_output_needs_force(
    plain_video: Path, fast: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    assert run(["video", str(plain_video), "--out", str(out), *fast]) == 1
    assert "exists" in _one_error_line(capsys.readouterr().err)
    assert out.read_bytes() == b"precious"
    assert run(["video", str(plain_video), "--out", str(out), "--force", *fast]) == 0
    assert len(list(VideoSource(out))) == 12


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("missing input", 1, "not found"),
        ("corrupt input", 1, "cannot read video"),
        ("empty input", 1, "empty"),
        ("unknown model", 1, "unknown model"),
        ("bad scales", 2, "--scales"),
        ("every zero", 2, "--every"),
        ("unknown option", 2, "--frobnicate"),
        ("no output", 2, "--out"),
        ("bad device", 2, "device"),
        ("negative long side", 2, "--long-side"),
        ("long side too small", 2, "--long-side"),
        ("end before start", 2, "--end"),
        ("unknown backend", 2, "--backend: must be one of auto, torch, onnxruntime, got 'tf'"),
        ("unknown grouping", 2, "--grouping: must be one of greedy, prn, got 'mst'"),
    ],
)
def test_errors_exit_with_their_code_and_one_line(
    case: str,
    code: int,
    words: str,
    plain_video: Path,
    fast: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(plain_video.read_bytes()[:300])  # header only, no frames
    empty = tmp_path / "empty.mp4"
    empty.touch()
    out = ["--out", str(tmp_path / "out.mp4")]
    args = {
        "missing input": ["video", str(tmp_path / "nope.mp4"), *out, *fast],
        "corrupt input": ["video", str(corrupt), *out, *fast],
        "empty input": ["video", str(empty), *out, *fast],
        "unknown model": ["video", str(plain_video), *out, *fast, "--model", "no-such-model"],
        "bad scales": ["video", str(plain_video), *out, *fast, "--scales", "abc"],
        "every zero": ["video", str(plain_video), *out, *fast, "--every", "0"],
        "unknown option": ["video", str(plain_video), *out, *fast, "--frobnicate"],
        "no output": ["video", str(plain_video), *fast],
        "bad device": ["video", str(plain_video), *out, *fast, "--device", "tpu"],
        "negative long side": ["video", str(plain_video), *out, *fast, "--long-side", "-1"],
        "long side too small": ["video", str(plain_video), *out, *fast, "--long-side", "8"],
        "end before start": ["video", str(plain_video), *out, *fast, "--start", "1", "--end", "1"],
        "unknown backend": ["video", str(plain_video), *out, *fast, "--backend", "tf"],
        "unknown grouping": ["video", str(plain_video), *out, *fast, "--grouping", "mst"],
    }[case]
    assert run(args) == code
    assert words in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.mp4").exists()
    assert _hidden(tmp_path) == []


def test_interrupted_run_leaves_valid_files_and_exits_130(
    plain_video: Path,
    fast: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A Ctrl-C raised by the source after 5 frames: those 5 frames are finished and kept."""
    frames = VideoSource.__iter__

    def interrupted(self):
        for frame in frames(self):
            if frame.index == 5:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(VideoSource, "__iter__", interrupted)
    out, tracks = tmp_path / "out.mp4", tmp_path / "tracks.jsonl"
    assert run(["video", str(plain_video), "--out", str(out), "--json", str(tracks), *fast]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert [line["frame"] for line in _lines(tracks)] == [0, 1, 2, 3, 4]
    assert len(list(VideoSource(out))) == 5
    assert _hidden(tmp_path) == []


def test_ctrl_c_in_a_real_process(long_video: Path, checkpoint: Path, tmp_path: Path) -> None:
    """SIGINT while frames are being written: exit 130, a playable MP4 and whole JSON lines."""
    out, tracks = tmp_path / "out.mp4", tmp_path / "tracks.jsonl"
    command = [
        sys.executable, "-m", "posecli", "video", str(long_video), "--out", str(out),
        "--json", str(tracks), "--model", str(checkpoint), "--box-size", "64", "--quiet",
        "--threads", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        partial = [tmp_path / name for name in _hidden(tmp_path) if "tracks.jsonl" in name]
        if partial and partial[0].exists() and partial[0].read_text().count("\n") >= 4:  # + header
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = _lines(tracks)
    assert 3 <= len(lines) < 200
    assert [line["frame"] for line in lines] == list(range(len(lines)))
    assert len(list(VideoSource(out))) == len(lines)
    assert _hidden(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# webcam (a video file stands in for the camera: OpenCV opens both)


def test_webcam_without_display_records_tracks(
    plain_video: Path, fast: list[str], tmp_path: Path
) -> None:
    tracks = tmp_path / "live.jsonl"
    args = ["webcam", "--camera", str(plain_video), "--no-display", "--json", str(tracks)]
    assert run([*args, *fast]) == 0
    lines = _lines(tracks)
    assert 1 <= len(lines) <= 12  # stale frames may be dropped: latency first
    indices = [line["frame"] for line in lines]
    assert indices == sorted(set(indices))


class PacedCamera:
    """Stands in for a camera: the frames of a video, one every 30 ms, none dropped."""

    dropped = 0

    def __init__(self, camera: str) -> None:
        self.frames = list(VideoSource(camera))

    def __enter__(self) -> PacedCamera:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.frames = []

    def __iter__(self) -> Iterator[SourceFrame]:
        for frame in self.frames:
            time.sleep(0.03)
            yield frame


def test_webcam_window_quits_on_q(
    plain_video: Path, fast: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a (stand-in) display, frames are shown with their FPS until q is pressed."""
    shown: list[np.ndarray] = []
    monkeypatch.setattr(cameras, "CameraSource", PacedCamera)
    monkeypatch.setattr(display, "available", lambda: True)
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append(image))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q") if len(shown) == 2 else -1)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda title, prop: 1.0)
    tracks = tmp_path / "live.jsonl"
    assert run(["webcam", "--camera", str(plain_video), "--json", str(tracks), *fast]) == 0
    assert 2 <= len(shown) <= 2 + 6  # q stops reading; the few frames in flight finish
    assert shown[0].shape == (48, 64, 3)
    assert len(_lines(tracks)) == len(shown)


def test_webcam_window_that_cannot_open(
    plain_video: Path, fast: list[str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_gui(title: str, image: np.ndarray) -> None:
        raise cv2.error("The function is not implemented. Rebuild the library with GUI support")

    monkeypatch.setattr(display, "available", lambda: True)
    monkeypatch.setattr(cv2, "imshow", no_gui)
    assert run(["webcam", "--camera", str(plain_video), *fast]) == 1
    assert "--no-display" in _one_error_line(capsys.readouterr().err)


def test_webcam_with_nothing_to_do_is_an_error(
    plain_video: Path, fast: list[str], capsys: pytest.CaptureFixture
) -> None:
    assert run(["webcam", "--camera", str(plain_video), "--no-display", *fast]) == 2
    assert "nothing to write" in _one_error_line(capsys.readouterr().err)


def test_webcam_that_does_not_open(fast: list[str], tmp_path: Path, capsys) -> None:
    args = ["webcam", "--camera", str(tmp_path / "no-camera"), "--json", str(tmp_path / "x.jsonl")]
    assert run([*args, "--no-display", *fast]) == 1
    assert "camera" in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# images and eval


def _write_images(folder: Path) -> list[str]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = ["000000000139.jpg", "000000000785.png", "000000001000.png"]
    for number, name in enumerate(names):
        image = rng.integers(0, 256, size=(40 + 8 * number, 56, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / name), image)
    return names


def test_images_write_coco_results_listing_and_annotated_copies(
    fast: list[str], tmp_path: Path
) -> None:
    names = _write_images(tmp_path / "photos")
    results, annotated = tmp_path / "poses.json", tmp_path / "annotated"
    args = ["images", str(tmp_path / "photos"), "--json", str(results), "--out-dir", str(annotated)]
    assert run([*args, "--format", "openpose", *fast]) == 0
    for entry in json.loads(results.read_text()):
        validate_json(entry, COCO_RESULT_SCHEMA)
    listing = json.loads((tmp_path / "poses.images.json").read_text())
    assert listing == [
        {"id": 139, "file_name": names[0]},
        {"id": 785, "file_name": names[1]},
        {"id": 1000, "file_name": names[2]},
    ]
    assert sorted(p.name for p in annotated.iterdir()) == names
    shapes = [cv2.imread(str(annotated / name)).shape for name in names]
    assert shapes == [(40, 56, 3), (48, 56, 3), (56, 56, 3)]
    openpose = sorted((tmp_path / "poses_openpose").iterdir())
    assert [p.name for p in openpose] == [f"{Path(n).stem}_keypoints.json" for n in names]
    for file in openpose:
        validate_json(json.loads(file.read_text()), OPENPOSE_SCHEMA)


def test_images_with_a_glob_and_ids_by_position(fast: list[str], tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("b.png", "a.png", "skip.txt"):
        (folder / name).write_bytes(cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1])
    results = tmp_path / "poses.json"
    assert run(["images", str(folder / "*.png"), "--json", str(results), *fast]) == 0
    listing = json.loads((tmp_path / "poses.images.json").read_text())
    assert listing == [{"id": 0, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]


@pytest.fixture
def estimators(monkeypatch: pytest.MonkeyPatch) -> list[Estimator]:
    """Every Estimator the commands load in the test, in order."""
    load_estimator, loaded = inference.load_estimator, []

    def recording(options: inference.InferenceOptions) -> Estimator:
        loaded.append(load_estimator(options))
        return loaded[-1]

    monkeypatch.setattr(inference, "load_estimator", recording)
    return loaded


def test_long_side_reaches_the_estimator(
    fast: list[str], tmp_path: Path, estimators: list[Estimator]
) -> None:
    _write_images(tmp_path / "photos")
    args = ["images", str(tmp_path / "photos"), "--json", str(tmp_path / "poses.json"), *fast]
    assert run([*args, "--long-side", "96"]) == 0
    assert [estimator.config.long_side for estimator in estimators] == [96]


def test_streams_default_to_no_refiner_flip_test_and_its_int8_file(
    fast: list[str], plain_video: Path, tmp_path: Path, estimators: list[Estimator]
) -> None:
    _write_images(tmp_path / "photos")
    fast = [*fast, "--no-refine"]
    images = ["images", str(tmp_path / "photos"), "--json", str(tmp_path / "poses.json"), *fast]
    video = ["video", str(plain_video), "--no-video", "--json", str(tmp_path / "t.jsonl"), *fast]
    assert run(images) == 0 and run(video) == 0
    assert run([*video, "--force", "--refine-flip"]) == 0
    assert run([*video, "--force", "--no-refine-int8"]) == 0
    defaults = [(each.config.refine_flip, each.config.refine_int8) for each in estimators]
    assert defaults == [(True, False), (False, True), (True, True), (False, False)]


def test_images_missing_input(fast: list[str], tmp_path: Path, capsys) -> None:
    assert run(["images", str(tmp_path / "none"), "--json", str(tmp_path / "p.json"), *fast]) == 1
    assert "not found" in _one_error_line(capsys.readouterr().err)


def test_eval_prints_and_writes_metrics_and_detections(
    fast: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    annotations, images = write_people_set(tmp_path / "set")
    metrics = tmp_path / "metrics.json"
    args = ["eval", "--annotations", str(annotations), "--images", str(images)]
    assert run([*args, "--metrics", str(metrics), *fast]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0::2] == list(SUMMARY_KEYS)
    scores = json.loads(metrics.read_text())
    assert list(scores) == list(SUMMARY_KEYS)
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    detections = json.loads((tmp_path / "metrics.detections.json").read_text())
    assert {entry["image_id"] for entry in detections} <= {1, 2, 3, 4}


def test_eval_by_height_prints_and_writes_the_bands(
    fast: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    annotations, images = write_people_set(tmp_path / "set")
    metrics = tmp_path / "metrics.json"
    args = ["eval", "--annotations", str(annotations), "--images", str(images), "--by-height"]
    assert run([*args, "--metrics", str(metrics), *fast]) == 0
    bands = json.loads(metrics.read_text())["by_height"]
    assert sum(band["people"] for band in bands) == 6  # write_people_set: 1 + 2 + 1 + 2 people
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("height")]
    assert len(printed) == len(bands) and all("found" in line for line in printed)


def test_eval_with_missing_images_fails(fast: list[str], tmp_path: Path, capsys) -> None:
    annotations, _ = write_people_set(tmp_path / "set")
    args = ["eval", "--annotations", str(annotations), "--images", str(tmp_path / "elsewhere")]
    assert run([*args, *fast]) == 1
    assert "not found" in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# info, python -m posecli


def test_info(capsys: pytest.CaptureFixture) -> None:
    assert run(["info"]) == 0
    out = capsys.readouterr().out
    for words in ("posecli 0.1.0", "torch", "device", "native decoder", "default", "imhn-cpu"):
        assert words in out


def test_python_dash_m_posecli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "posecli", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "posecli 0.1.0")
    usage = subprocess.run(
        [sys.executable, "-m", "posecli", "video"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert usage.returncode == 2
    assert _one_error_line(usage.stderr).startswith("posecli: error: Missing argument")


# ---------------------------------------------------------------------------------------------
# train → eval


def _small_training(tmp_path: Path, max_steps: int) -> tuple[list[str], list[str]]:
    """``posecli train`` data and settings options for a tiny CPU run on a synthetic set."""
    annotations, images = write_people_set(tmp_path / "set")
    data = ["--annotations", str(annotations), "--images", str(images)]
    settings = ["--max-steps", str(max_steps), "--batch-size", "2", "--input-size", "64"]
    settings += ["--workers", "0", "--device", "cpu", "--threads", "1"]
    return data, settings


def test_train_then_eval_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, settings = _small_training(tmp_path, max_steps=2)
    settings += ["--preset", "imhn-tiny"]
    run_dir = tmp_path / "run"
    zoom = ["--scale-min", "0.4", "--scale-max", "0.9", "--mosaic", "0.5"]
    labels = ["--min-keypoint-score", "0.15"]
    assert run(["train", *data, *settings, *zoom, *labels, "--out", str(run_dir)]) == 0
    checkpoint = run_dir / "checkpoint-last.pt"
    assert checkpoint.is_file()
    recorded = json.loads((run_dir / "config.json").read_text())
    assert recorded["min_keypoint_score"] == 0.15
    augment = recorded["augment"]
    assert (augment["scale_min"], augment["scale_max"], augment["mosaic_probability"]) == (
        0.4,
        0.9,
        0.5,
    )
    assert (
        run(["eval", *data, "--model", str(checkpoint), "--box-size", "64", "--threads", "1"]) == 0
    )
    assert capsys.readouterr().out.split()[0::2] == list(SUMMARY_KEYS)
    assert run(["train", *data, *settings, "--out", str(run_dir)]) == 1  # a run is there already
    assert "resume" in _one_error_line(capsys.readouterr().err)
    reversed_zoom = ["--scale-min", "1.2", "--scale-max", "0.8"]
    assert run(["train", *data, *settings, *reversed_zoom, "--out", str(tmp_path / "r2")]) == 2
    assert "--scale-min" in _one_error_line(capsys.readouterr().err)
    assert run(["train", *data, *settings, "--mosaic", "1.5", "--out", str(tmp_path / "r3")]) == 2
    assert "--mosaic" in _one_error_line(capsys.readouterr().err)
    too_high = ["--min-keypoint-score", "1.5", "--out", str(tmp_path / "r4")]
    assert run(["train", *data, *settings, *too_high]) == 2
    assert "--min-keypoint-score" in _one_error_line(capsys.readouterr().err)


def test_train_joins_several_sets_given_in_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, settings = _small_training(tmp_path, max_steps=1)
    more_annotations, more_images = write_people_set(tmp_path / "more", count=2)
    more = ["--annotations", str(more_annotations), "--images", str(more_images)]
    settings += ["--preset", "imhn-tiny"]
    run_dir = tmp_path / "run"
    assert run(["train", *data, *more, *settings, "--out", str(run_dir)]) == 0
    recorded = json.loads((run_dir / "config.json").read_text())
    assert recorded["more_datasets"] == [[str(more_annotations), str(more_images)]]
    capsys.readouterr()
    unpaired = ["--annotations", str(more_annotations), "--out", str(tmp_path / "unpaired")]
    assert run(["train", *data, *unpaired, *settings]) == 2
    assert "one image folder per annotation file" in _one_error_line(capsys.readouterr().err)


def test_train_grows_the_init_network_to_more_stacks(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, settings = _small_training(tmp_path, max_steps=1)
    one_stack = tmp_path / "one" / "checkpoint-last.pt"
    assert (
        run(["train", *data, *settings, "--preset", "imhn-tiny", "--out", str(tmp_path / "one")])
        == 0
    )
    grow = ["--init", str(one_stack), "--init-stacks", "2"]
    assert run(["train", *data, *settings, *grow, "--out", str(tmp_path / "two")]) == 0
    assert load_model(str(tmp_path / "two" / "checkpoint-last.pt")).config.stacks == 2
    assert run(["train", *data, *settings, *grow, "--out", str(tmp_path / "two"), "--resume"]) == 0
    capsys.readouterr()
    shrink = ["--init", str(tmp_path / "two" / "checkpoint-last.pt"), "--init-stacks", "1"]
    assert run(["train", *data, *settings, *shrink, "--out", str(tmp_path / "r1")]) == 2
    assert "--init-stacks" in _one_error_line(capsys.readouterr().err)
    no_init = ["--init-stacks", "2", "--out", str(tmp_path / "r2")]
    assert run(["train", *data, *settings, *no_init]) == 2
    assert "--init-stacks" in _one_error_line(capsys.readouterr().err)


def test_label_writes_coco_keypoints_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    teachers = REPO.parent / "shared" / "teachers"
    images = REPO.parent / "shared" / "data" / "eval" / "mmpose-coco" / "images"
    if not (teachers / "movenet-multipose.onnx").exists() or not images.is_dir():
        pytest.skip("../shared/teachers or ../shared/data/eval is absent")
    pytest.importorskip("onnxruntime", reason="onnxruntime (the [train] extra) is not installed")
    image = sorted(images.iterdir())[0]
    out = tmp_path / "labels.json"
    command = ["label", "--images", str(image), "--out", str(out), "--teachers", str(teachers)]
    recall = ["--keep-keypoint", "0.15", "--confident-person", "0.1", "--min-keypoints", "3"]
    assert run([*command, "--teacher", "movenet", *recall, "--quiet"]) == 0
    labels = json.loads(out.read_text())
    settings = labels["info"]["label_settings"]
    assert (settings["keep_keypoint"], settings["confident_person"], settings["min_keypoints"]) == (
        0.15,
        0.1,
        3,
    )
    assert [entry["file_name"] for entry in labels["images"]] == [image.name]
    people = [a for a in labels["annotations"] if not a["iscrowd"]]
    assert people and all(len(a["keypoints"]) == 51 for a in people)
    assert run([*command, "--quiet"]) == 1
    assert "exists" in capsys.readouterr().err
    assert run([*command, "--min-keypoints", "0", "--force", "--quiet"]) == 2
    assert "--min-keypoints" in _one_error_line(capsys.readouterr().err)


def test_export_stores_half_precision_and_refuses_to_overwrite(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "shipped.pt"
    assert run(["export", "--model", str(checkpoint), "--out", str(out), "--quiet"]) == 0
    stored = torch.load(out, weights_only=True)
    floats = [t for t in stored["state_dict"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    assert stored["provenance"]["exported_from"] == "tiny"
    torch.set_num_threads(1)
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    config = InferenceConfig(box_size=64)
    full = build_estimator(load_model(checkpoint), config).heatmaps([image])[0].maps
    half = build_estimator(load_model(out), config).heatmaps([image])[0].maps
    assert np.abs(full - half).max() < 1e-2
    assert run(["export", "--model", str(checkpoint), "--out", str(out), "--quiet"]) == 1
    assert "exists" in capsys.readouterr().err


def test_bundled_default_model_finds_the_person_of_a_real_photo() -> None:
    """The shipped weights (not a stand-in) put the best person on the one annotated person."""
    folder = REPO.parent / "shared" / "data" / "eval" / "mmpose-coco"
    if not folder.is_dir():
        pytest.skip("../shared/data/eval is absent")
    model = load_model("default")
    assert model.config == MODEL_PRESETS["imhn-cpu-lite0"]
    truth = json.loads((folder / "person_keypoints.json").read_text())
    entry = next(e for e in truth["images"] if e["file_name"] == "000000000785.jpg")
    (person,) = [a for a in truth["annotations"] if a["image_id"] == entry["id"]]
    image = cv2.imread(str(folder / "images" / entry["file_name"]))[:, :, ::-1]
    torch.set_num_threads(1)
    best = build_estimator(model, InferenceConfig(long_side=384)).predict([image])[0][0]
    x, y, w, h = person["bbox"]
    found = best.keypoints[best.keypoints[:, 2] > 0]
    inside = (
        (found[:, 0] >= x) & (found[:, 0] <= x + w) & (found[:, 1] >= y) & (found[:, 1] <= y + h)
    )
    assert len(found) >= 10 and inside.mean() >= 0.9, found
