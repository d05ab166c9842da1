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
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from coco_synthetic import write_people_set
from tiny_model import save_tiny_checkpoint

from posecli import weights
from posecli.cli import run
from posecli.io import sinks

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    """``--threads`` sets torch's thread count for the process: restore it for other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


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

    monkeypatch.setattr(weights, "load_model", no_model)
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

    monkeypatch.setattr(sinks, "open", no_access, raising=False)
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
    lines = tracks.read_text().splitlines()
    assert 5 <= len(lines) < 200
    assert [json.loads(text)["frame"] for text in lines] == list(range(len(lines)))
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
    with pytest.raises(weights.CheckpointError, match="neither a posecli checkpoint"):
        weights.load_model(path)
