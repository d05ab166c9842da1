"""Issue 18: every failure is one line with the right exit code, and no output is lost or faked.

Commands run in-process through ``posecli.cli.run`` with the tiny random model, except where a
real process matters (SIGTERM).
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from coco_synthetic import write_people_set
from schema import track_frames

from posecli import loader
from posecli.checkpoint import save_checkpoint
from posecli.cli import run
from posecli.errors import CheckpointError
from posecli.io import files, sinks
from posecli.io.sources import VideoSource

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fast(checkpoint: Path) -> list[str]:
    """The tiny model, small input, CPU, one thread, no progress."""
    return ["--model", str(checkpoint), "--box-size", "64", "--device", "cpu", "--quiet"] + [
        "--threads", "1",
    ]  # fmt: skip


def one_error_line(stderr: str) -> str:
    """The single ``posecli: error: ...`` line of ``stderr`` (blank lines aside)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("posecli: error: "), stderr
    return lines[0]


def hidden(folder: Path) -> list[str]:
    """Temporary files (``.name.part``…) left in ``folder``."""
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        image = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / name), image)


# ---------------------------------------------------------------------------------------------
# A. Crashes with a traceback


@pytest.mark.parametrize("scales", ["inf", "1,inf", "-inf", "nan", "1e300"])
def test_infinite_or_huge_scales_are_a_usage_error(
    scales: str, plain_video: Path, fast: list[str], tmp_path: Path, capsys
) -> None:
    args = ["video", str(plain_video), "--out", str(tmp_path / "out.mp4"), *fast]
    assert run([*args, "--scales", scales]) == 2
    assert "--scales" in one_error_line(capsys.readouterr().err)
    assert os.listdir(tmp_path) == []


def _annotation_file(tmp_path: Path, breakage: str) -> tuple[Path, Path]:
    annotations, images = write_people_set(tmp_path / "set")
    dataset = json.loads(annotations.read_text())
    entry = dataset["annotations"][1]
    if breakage == "no id":
        del entry["id"]
    elif breakage == "short keypoints":
        entry["keypoints"] = entry["keypoints"][:10]
    elif breakage == "keypoints not numbers":
        entry["keypoints"] = ["x"] * 51
    elif breakage == "unknown image":
        entry["image_id"] = 999
    elif breakage == "no bbox":
        del entry["bbox"]
    elif breakage == "image without file name":
        del dataset["images"][0]["file_name"]
    elif breakage == "duplicate ids":
        entry["id"] = dataset["annotations"][0]["id"]
    elif breakage == "annotation not an object":
        dataset["annotations"][1] = 7
    annotations.write_text(json.dumps(dataset))
    return annotations, images


@pytest.mark.parametrize(
    ("breakage", "words"),
    [
        ("no id", "annotations[1] has no 'id'"),
        ("short keypoints", "has 10 keypoint values, expected 51"),
        ("keypoints not numbers", "keypoints"),
        ("unknown image", "image 999"),
        ("no bbox", "'bbox'"),
        ("image without file name", "images[0] has no 'file_name'"),
        ("duplicate ids", "duplicate"),
        ("annotation not an object", "annotations[1] is not an object"),
    ],
)
def test_eval_validates_the_annotation_file_before_loading_the_model(
    breakage: str, words: str, fast: list[str], tmp_path: Path, monkeypatch, capsys
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the annotations were checked")

    monkeypatch.setattr(loader, "load_model", no_model)
    annotations, images = _annotation_file(tmp_path, breakage)
    metrics = tmp_path / "metrics.json"
    args = ["eval", "--annotations", str(annotations), "--images", str(images)]
    assert run([*args, "--metrics", str(metrics), *fast]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert words in line and str(annotations) in line
    assert not metrics.exists()


def test_export_onto_a_read_only_file_system_is_one_line(
    checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(torch, "save", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    out = tmp_path / "shipped.pt"
    assert run(["export", "--model", str(checkpoint), "--out", str(out), "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "Read-only file system" in line and str(out) in line
    assert not out.exists()


def test_export_into_an_unwritable_folder_is_one_line(
    checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    real_open = open

    def no_access(file, mode="r", *args, **kwargs):
        if "x" in mode or "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", no_access, raising=False)
    out = tmp_path / "shipped.pt"
    assert run(["export", "--model", str(checkpoint), "--out", str(out), "--quiet"]) == 1
    assert "Permission denied" in one_error_line(capsys.readouterr().err)
    assert not out.exists() and hidden(tmp_path) == []


class FullDisk(io.RawIOBase):
    """A raw file that takes ``room`` more bytes, then fails with ENOSPC (a partial write first)."""

    def __init__(self, file: io.FileIO, room: int) -> None:
        super().__init__()
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = data[: self.room]
        self.room -= len(taken)
        return self.file.write(taken)

    def seek(self, *args: int) -> int:
        return self.file.seek(*args)

    def tell(self) -> int:
        return self.file.tell()

    def truncate(self, size: int | None = None) -> int:
        return self.file.truncate(size)

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.file.close()
        super().close()


def nearly_full_disk(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Files the sinks open for writing (``"wb"``) hold ``room`` bytes before ENOSPC."""
    real_open = open

    def opening(file, mode="r", buffering=-1, *args, **kwargs):
        if mode != "wb":
            return real_open(file, mode, buffering, *args, **kwargs)
        raw = FullDisk(io.FileIO(file, "w"), room)
        return raw if buffering == 0 else io.BufferedWriter(raw)

    monkeypatch.setattr(sinks, "open", opening, raising=False)


@pytest.mark.parametrize("quiet", [True, False])
def test_full_disk_during_json_is_one_line_and_keeps_the_lines_written(
    quiet: bool, long_video: Path, fast: list[str], tmp_path: Path, monkeypatch, capsys
) -> None:
    nearly_full_disk(monkeypatch, room=3000)
    tracks = tmp_path / "tracks.jsonl"
    options = fast if quiet else [option for option in fast if option != "--quiet"]
    args = ["video", str(long_video), "--no-video", "--json", str(tracks), *options]
    assert run(args) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "tracks.jsonl" in line
    lines = track_frames(tracks.read_text())
    assert 5 <= len(lines) < 200
    assert [line["frame"] for line in lines] == list(range(len(lines)))
    assert len(tracks.read_bytes()) <= 3000
    assert hidden(tmp_path) == []


def test_json_lines_abort_on_a_full_disk_keeps_what_was_flushed(
    tmp_path: Path, monkeypatch
) -> None:
    """The abort after ENOSPC must not re-flush (which fails again) and delete the file."""
    from posecli.pose import Frame

    nearly_full_disk(monkeypatch, room=150)
    out = tmp_path / "tracks.jsonl"
    sink = sinks.JsonLinesSink(out)
    written = 0
    with pytest.raises(sinks.OutputError, match="No space left"):
        for index in range(100):
            sink.write(Frame(index, index / 10, 64, 48))
            written += 1
    assert sink.abort() == out
    assert len(out.read_text().splitlines()) == written >= 1
    assert hidden(tmp_path) == []


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"hello, I am a text file\n", "text"),
        (pickle.dumps({"a": 1}, protocol=4), "pickle"),
        (pickle.dumps([1, 2, 3], protocol=2), "pickle"),
        (pickle.dumps({"a": 1}, protocol=0), "pickle"),
        (b"", "empty"),
        (bytes(range(256)) * 4, "binary"),
    ],
)
@pytest.mark.parametrize("quiet", [True, False])
def test_a_file_that_is_no_checkpoint_says_so_without_warnings(
    content: bytes, kind: str, quiet: bool, plain_video: Path, tmp_path: Path, capsys
) -> None:
    model = tmp_path / f"model.{kind}"
    model.write_bytes(content)
    args = ["video", str(plain_video), "--out", str(tmp_path / "out.mp4"), "--model", str(model)]
    assert run([*args, "--box-size", "64", *(["-q"] if quiet else [])]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "not a posecli or PyTorch checkpoint" in line
    assert not (tmp_path / "out.mp4").exists()


def test_a_legacy_torch_file_is_still_read_as_a_checkpoint(tmp_path: Path) -> None:
    """Old torch.save files (no zip) are PyTorch checkpoints: their content decides."""
    path = tmp_path / "legacy.pth"
    torch.save({"something": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="neither a posecli checkpoint"):
        loader.load_model(path)


# ---------------------------------------------------------------------------------------------
# B. Lost outputs


def _dead_pid() -> int:
    """A process id that no process has (above the kernel's maximum)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_sigterm_finalises_the_outputs_and_exits_143(
    long_video: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """SIGTERM while frames are being written: like Ctrl-C, with exit code 143 and one line."""
    out, tracks = tmp_path / "out.mp4", tmp_path / "tracks.jsonl"
    command = [
        sys.executable, "-m", "posecli", "video", str(long_video), "--out", str(out),
        "--json", str(tracks), "--model", str(checkpoint), "--box-size", "64", "--quiet",
        "--threads", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        partial = [tmp_path / name for name in hidden(tmp_path) if "tracks.jsonl" in name]
        if partial and partial[0].exists() and partial[0].read_text().count("\n") >= 4:  # + header
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "terminated" in lines[0], stderr
    frames = [line["frame"] for line in track_frames(tracks.read_text())]
    assert 3 <= len(frames) < 200 and frames == list(range(len(frames)))
    assert len(list(VideoSource(out))) == len(frames)
    assert hidden(tmp_path) == []


def test_sigterm_calls_the_interrupt_handler_in_force(monkeypatch) -> None:
    """The trainer defers Ctrl-C to the end of a step: SIGTERM goes through the same handler."""
    from posecli.signals import Termination

    calls = []
    monkeypatch.setattr(signal, "getsignal", lambda number: lambda *args: calls.append(number))
    termination = Termination()
    termination(signal.SIGTERM, None)
    assert calls == [signal.SIGINT] and termination.received


def test_stale_temporaries_of_dead_processes_are_removed(
    plain_video: Path, fast: list[str], tmp_path: Path
) -> None:
    dead, alive = _dead_pid(), os.getppid()
    stale = [
        tmp_path / f".tracks.jsonl.{dead}-0123abcd.part",
        tmp_path / f".clip.mp4.{dead}-89abcdef.mp4",
        tmp_path / "clip_openpose" / f".clip_000000000003_keypoints.json.{dead}-00000000.part",
    ]
    kept = [
        tmp_path / f".tracks.jsonl.{alive}-0123abcd.part",  # its process still runs
        tmp_path / f".other.jsonl.{dead}-0123abcd.part",  # not an output of this run
        tmp_path / ".tracks.jsonl.notes",  # not posecli's
    ]
    (tmp_path / "clip_openpose").mkdir()
    for path in stale + kept:
        path.write_bytes(b"left behind")
    args = ["video", str(plain_video), "-o", str(tmp_path / "clip.mp4"), "--format", "openpose"]
    assert run([*args, "--json", str(tmp_path / "tracks.jsonl"), *fast]) == 0
    assert [path.exists() for path in stale] == [False] * 3
    assert [path.exists() for path in kept] == [True] * 3


def test_save_checkpoint_removes_its_stale_temporaries(checkpoint: Path, tmp_path: Path) -> None:
    stale = tmp_path / f".shipped.pt.{_dead_pid()}.tmp"
    stale.write_bytes(b"half a checkpoint")
    out = tmp_path / "shipped.pt"
    assert run(["export", "--model", str(checkpoint), "--out", str(out), "--quiet"]) == 0
    assert out.is_file() and not stale.exists()


def _photos_with_a_bad_one(folder: Path) -> None:
    write_images(folder, ["000000000001.png", "000000000002.png", "000000000004.png"])
    good = (folder / "000000000001.png").read_bytes()
    (folder / "000000000003.png").write_bytes(good[: len(good) // 3])  # truncated


def test_images_skip_an_unreadable_image_and_say_so(fast: list[str], tmp_path: Path, capsys):
    _photos_with_a_bad_one(tmp_path / "photos")
    results, annotated = tmp_path / "poses.json", tmp_path / "annotated"
    args = ["images", str(tmp_path / "photos"), "--json", str(results), "--out-dir", str(annotated)]
    loud = [option for option in fast if option != "--quiet"]
    assert run([*args, *loud]) == 0
    err = "".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "000000000003.png" in err and "skipped" in err and "Traceback" not in err
    json.loads(results.read_text())
    listing = json.loads((tmp_path / "poses.images.json").read_text())
    assert [entry["id"] for entry in listing] == [1, 2, 3, 4]
    assert "error" in listing[2] and all("error" not in listing[i] for i in (0, 1, 3))
    assert sorted(path.name for path in annotated.iterdir()) == [
        "000000000001.png", "000000000002.png", "000000000004.png",
    ]  # fmt: skip


def test_images_strict_stops_at_an_unreadable_image_and_writes_nothing(
    fast: list[str], tmp_path: Path, capsys
) -> None:
    _photos_with_a_bad_one(tmp_path / "photos")
    results = tmp_path / "poses.json"
    args = ["images", str(tmp_path / "photos"), "--json", str(results), "--strict", *fast]
    assert run(args) == 1
    assert "000000000003.png" in one_error_line(capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == ["photos"]  # no results, no listing, no temporary


def test_images_where_no_image_is_readable_fail(fast: list[str], tmp_path: Path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"not an image")
    args = ["images", str(folder), "--json", str(tmp_path / "poses.json"), *fast]
    assert run(args) == 1
    assert "none of the 2 images" in one_error_line(capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == ["photos"]


def test_interrupted_images_run_writes_results_and_listing_of_the_images_done(
    fast: list[str], tmp_path: Path, monkeypatch, capsys
) -> None:
    from posecli.io.sources import ImageSource

    write_images(tmp_path / "photos", [f"{n:012d}.png" for n in range(1, 6)])
    frames = ImageSource.__iter__

    def interrupted(self):
        for frame in frames(self):
            if frame.index == 3:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(ImageSource, "__iter__", interrupted)
    results = tmp_path / "poses.json"
    assert run(["images", str(tmp_path / "photos"), "--json", str(results), *fast]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert {entry["image_id"] for entry in json.loads(results.read_text())} <= {1, 2, 3}
    listing = json.loads((tmp_path / "poses.images.json").read_text())
    assert [entry["id"] for entry in listing] == [1, 2, 3]
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("case", ["annotated copy", "openpose file", "missing input"])
def test_images_check_outputs_and_inputs_before_the_model_loads(
    case: str, fast: list[str], tmp_path: Path, monkeypatch, capsys
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(loader, "load_model", no_model)
    write_images(tmp_path / "photos", ["a.png", "b.png"])
    annotated, openpose = tmp_path / "annotated", tmp_path / "poses_openpose"
    annotated.mkdir()
    openpose.mkdir()
    (annotated / "b.png").write_bytes(b"precious")
    (openpose / "a_keypoints.json").write_bytes(b"precious")
    args = ["images", str(tmp_path / "photos"), "--json", str(tmp_path / "poses.json")]
    extra = {
        "annotated copy": ["--out-dir", str(annotated)],
        "openpose file": ["--format", "openpose"],
        "missing input": [str(tmp_path / "nowhere.png")],
    }[case]
    assert run([*args, *extra, *fast]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert ("not found" if case == "missing input" else "exists") in line
    assert (annotated / "b.png").read_bytes() == b"precious"
    assert (openpose / "a_keypoints.json").read_bytes() == b"precious"
    assert not (tmp_path / "poses.json").exists()


def test_images_refuse_to_write_copies_over_their_inputs(fast: list[str], tmp_path: Path, capsys):
    write_images(tmp_path / "photos", ["a.png"])
    before = (tmp_path / "photos" / "a.png").read_bytes()
    args = ["images", str(tmp_path / "photos"), "--json", str(tmp_path / "poses.json")]
    assert run([*args, "--out-dir", str(tmp_path / "photos"), "--force", *fast]) == 2
    assert "--out-dir" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "photos" / "a.png").read_bytes() == before


def test_eval_checks_its_images_before_the_model_loads(
    fast: list[str], tmp_path: Path, monkeypatch, capsys
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the images were checked")

    monkeypatch.setattr(loader, "load_model", no_model)
    annotations, images = write_people_set(tmp_path / "set")
    next(images.iterdir()).unlink()
    assert run(["eval", "--annotations", str(annotations), "--images", str(images), *fast]) == 1
    assert "not found" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# C. Silently wrong


def _train_args(tmp_path: Path) -> list[str]:
    annotations, images = write_people_set(tmp_path / "set")
    return ["train", "--annotations", str(annotations), "--images", str(images)] + [
        "--max-steps", "1", "--batch-size", "2", "--input-size", "64", "--workers", "0",
        "--device", "cpu", "--threads", "1", "--quiet",
    ]  # fmt: skip


def test_train_refuses_a_preset_with_init_and_records_no_preset_for_init(
    checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from posecli.train import trainer

    args = _train_args(tmp_path)
    init = ["--init", str(checkpoint), "--out", str(tmp_path / "run")]
    assert run([*args, *init, "--preset", "imhn-cpu"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--preset" in line and "--init" in line
    configs = []
    monkeypatch.setattr(trainer, "train", lambda config, progress: configs.append(config) or "x")
    assert run([*args, *init]) == 0
    assert configs[0].preset == "" and configs[0].init == str(checkpoint)
    assert run([*args, "--out", str(tmp_path / "scratch")]) == 0
    assert configs[1].preset == "imhn-official"


def test_train_resume_of_a_folder_without_a_run_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert run([*_train_args(tmp_path), "--out", str(tmp_path / "empty"), "--resume"]) == 1
    assert "holds no training run" in one_error_line(capsys.readouterr().err)
    assert os.listdir(tmp_path / "empty") == []


def test_train_into_a_folder_holding_a_run_is_an_existing_output(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train-state.pt").write_bytes(b"a run")
    assert run([*_train_args(tmp_path), "--out", str(tmp_path / "run")]) == 1
    assert "already holds a training run" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "run" / "train-state.pt").read_bytes() == b"a run"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_checkpoints_with_non_finite_weights_are_refused(
    bad: float, plain_video: Path, tmp_path: Path, capsys
) -> None:
    from tiny_model import TINY_CONFIG

    from posecli.config import Preprocessing
    from posecli.model import build_network

    network = build_network(TINY_CONFIG)
    with torch.no_grad():
        next(network.parameters()).view(-1)[3] = bad
    model = save_checkpoint(tmp_path / "bad.pt", network, TINY_CONFIG, Preprocessing(), {})
    out = tmp_path / "out.mp4"
    args = ["video", str(plain_video), "--out", str(out), "--model", str(model), "-q"]
    assert run([*args, "--box-size", "64"]) == 1
    assert "NaN or infinite" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def _decoded_people(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder finds three people scored 0.95, 0.5 and 0.2, keypoint peaks up to 1.0995."""
    from posecli import estimator
    from posecli.decode import DecodedPoses

    keypoints = np.zeros((3, 17, 3), dtype=np.float32)
    keypoints[:, :, 0], keypoints[:, :, 1] = 5.0, np.arange(17) % 10
    keypoints[:, :, 2] = np.linspace(0.5, 1.0995, 17)
    scores = np.array([0.95, 0.5, 0.2], dtype=np.float32)
    monkeypatch.setattr(
        estimator, "decode", lambda *args, **kwargs: DecodedPoses(keypoints.copy(), scores)
    )


def test_min_score_filters_the_person_score_and_confidences_stay_in_0_1(
    fast: list[str], tmp_path: Path, monkeypatch
) -> None:
    _decoded_people(monkeypatch)
    write_images(tmp_path / "photos", ["000000000001.png"])
    results = tmp_path / "poses.json"
    fast = [*fast, "--no-refine"]  # the decoder's people, as injected
    args = ["images", str(tmp_path / "photos"), "--json", str(results), *fast]
    assert run([*args, "--min-score", "0.45"]) == 0
    entries = json.loads(results.read_text())
    assert [entry["score"] for entry in entries] == [0.95, 0.5]
    assert max(value for entry in entries for value in entry["keypoints"][2::3]) == 1.0
    assert run([*args, "--force"]) == 0  # default: every person the decoder keeps
    assert len(json.loads(results.read_text())) == 3
    tracks = tmp_path / "tracks.jsonl"
    assert run(["video", str(tmp_path / "photos" / "000000000001.png")] + [
        "--no-video", "--json", str(tracks), "--min-score", "0.9", *fast,
    ]) == 0  # fmt: skip
    (line,) = track_frames(tracks.read_text())
    assert [person["score"] for person in line["people"]] == [0.95]
    assert all(0 <= point[2] <= 1 for point in line["people"][0]["keypoints"])


def test_min_score_is_a_score_between_0_and_1(plain_video: Path, fast: list[str], capsys):
    args = ["video", str(plain_video), "--no-video", "--json", "x.jsonl", *fast]
    assert run([*args, "--min-score", "1.5"]) == 2
    assert "--min-score" in one_error_line(capsys.readouterr().err)


def test_nothing_to_write_is_a_usage_error_everywhere(
    plain_video: Path, fast: list[str], capsys
) -> None:
    assert run(["webcam", "--camera", str(plain_video), "--no-display", *fast]) == 2
    assert "nothing to write" in one_error_line(capsys.readouterr().err)
    assert run(["video", str(plain_video), "--no-video", *fast]) == 2
    assert "nothing to write" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# F. Inputs that say what happened, and every frame counted


def test_a_video_cut_short_warns_and_keeps_its_frames(
    media: Path, plain_video: Path, fast: list[str], tmp_path: Path, capsys
) -> None:
    from conftest import run_ffmpeg

    whole = tmp_path / "whole.mp4"  # 100 frames, 10 s, the index at the front
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=10", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(whole))  # fmt: skip
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    loud = [option for option in fast if option != "--quiet"]
    tracks = tmp_path / "cut.jsonl"
    assert run(["video", str(cut), "--no-video", "--json", str(tracks), *loud]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "cut short" in err and "10.0 s (about 100 frames)" in err and "Traceback" not in err
    kept = track_frames(tracks.read_text())
    assert 0 < len(kept) < 100 and f"after {len(kept)} frames" in err
    complete = tmp_path / "plain.jsonl"
    assert run(["video", str(plain_video), "--no-video", "--json", str(complete), *loud]) == 0
    assert "cut short" not in capsys.readouterr().err  # a whole file says nothing
    assert len(track_frames(complete.read_text())) == 12


def test_a_proc_self_path_names_this_process_file(
    plain_video: Path, fast: list[str], tmp_path: Path
) -> None:
    tracks = tmp_path / "t.jsonl"
    with plain_video.open("rb") as opened:  # ffmpeg's own /proc/self has no such descriptor
        source = f"/proc/self/fd/{opened.fileno()}"
        assert run(["video", source, "--no-video", "--json", str(tracks), *fast]) == 0
    assert len(track_frames(tracks.read_text())) == 12


def test_a_camera_that_does_not_open_is_one_line_without_opencv_logging(
    fast: list[str], tmp_path: Path, capfd
) -> None:
    for camera, words in [("97", "camera 97 could not be opened"),
                          (str(tmp_path / "nocam"), "no such device or file")]:  # fmt: skip
        args = ["webcam", "--camera", camera, "--json", str(tmp_path / "t.jsonl"), "--no-display"]
        assert run([*args, *fast]) == 1
        assert words in one_error_line(capfd.readouterr().err)  # no [ WARN…] / [ERROR…] lines


def test_webcam_on_a_video_file_counts_every_frame(
    long_video: Path, fast: list[str], tmp_path: Path, capsys
) -> None:
    loud = [option for option in fast if option != "--quiet"]
    tracks = tmp_path / "live.jsonl"
    args = ["webcam", "--camera", str(long_video), "--json", str(tracks), "--no-display", *loud]
    assert run(args) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    counts = r"(\d+) frames captured, (\d+) processed at [\d.]+ fps, (\d+) dropped"
    match = re.search(counts, summary)
    assert match is not None, summary
    captured, processed, dropped = (int(number) for number in match.groups())
    assert captured == 200 and processed + dropped == 200
    assert processed == len(track_frames(tracks.read_text()))


def test_the_camera_source_accounts_for_every_frame_it_captured(long_video: Path) -> None:
    from posecli.io.cameras import CameraSource

    camera = CameraSource(str(long_video))
    frames = iter(camera)
    taken = [next(frames) for _ in range(3)]
    time.sleep(0.5)  # the grabber reads all 200 frames; the newest waits, never taken
    camera.close()
    assert len(taken) + camera.dropped == 200
