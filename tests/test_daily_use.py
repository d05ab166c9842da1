"""Daily use (issue 39): progress without a terminal, CSV export, ``--json -`` on standard
output, ``--draw-threshold``, and help without ``<bool>`` placeholders.

Commands run in-process through ``posecli.cli.run`` on small generated videos and images with
a tiny random model, except where a real process and pipe matter (``--json - | head -3``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posecli.cli import progress, run
from posecli.io.sources import VideoSource
from posecli.pose import CSV_COLUMNS
from posecli.spec import COCO_KEYPOINTS

REPO = Path(__file__).resolve().parents[1]

#: Decoder settings under which the tiny random model finds people (their scores are tiny).
PEOPLE = ["--no-refine", "--peak-threshold", "0.001", "--part-threshold", "0"]
PEOPLE += ["--min-part-score", "0"]


@pytest.fixture
def model(checkpoint: Path) -> list[str]:
    """The tiny model, small input, CPU, one thread."""
    return ["--model", str(checkpoint), "--box-size", "64", "--device", "cpu", "--threads", "1"]


@pytest.fixture
def fast(model: list[str]) -> list[str]:
    return [*model, "--quiet"]


@pytest.fixture
def every_update_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain progress lines at every update instead of every 10 s."""
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_SECONDS", 0.0)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV export, its first line checked to be :data:`CSV_COLUMNS`."""
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return rows


def _track_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]  # header first


def _progress_lines(stderr: str, description: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{description}: ")]


# ---------------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("command", [[], ["video"], ["report"], ["batch"], ["export"]])
def test_help_shows_no_bool_placeholder(command: list[str], capsys) -> None:
    assert run([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "<bool>" not in text
    assert "--version" in text if not command else "--quiet" in text  # flags still listed
    if command == ["video"]:
        assert "<float range>" in text  # options that take a value keep their type


# ---------------------------------------------------------------------------------------------
# progress when stderr is not a terminal


def test_plain_progress_line_counts_speed_and_eta() -> None:
    lines: list[str] = []

    class Console:
        def print(self, text: str, **_: object) -> None:
            lines.append(text)

    now = [0.0]
    plain = progress.PlainProgress(Console(), "video", "frames", interval=10, clock=lambda: now[0])
    for second in range(1, 26):
        now[0] = float(second)
        plain.update(completed=5 * second, total=500, fps=5.0)
    assert lines == [
        "video: 50/500 frames (10%), 5.0 fps, elapsed 0:00:10, ETA 0:01:30",
        "video: 100/500 frames (20%), 5.0 fps, elapsed 0:00:20, ETA 0:01:20",
    ]
    counted = progress.PlainProgress(Console(), "batch", "inputs", interval=0, clock=lambda: 4.0)
    counted.started = 0.0
    counted.update(completed=2)  # no total (a camera, a URL): no share, no ETA
    assert lines[-1] == "batch: 2 inputs, 0.50 inputs/s, elapsed 0:00:04"


def test_video_progress_lines_without_a_terminal(
    plain_video: Path, model: list[str], tmp_path: Path, capsys, every_update_a_line
) -> None:
    tracks = tmp_path / "tracks.jsonl"
    assert run(["video", str(plain_video), "--no-video", "--json", str(tracks), *model]) == 0
    lines = _progress_lines(capsys.readouterr().err, "video")
    pattern = r"video: \d+/12 frames \(\d+%\), \d+\.\d fps, elapsed \d:\d\d:\d\d, ETA \d:\d\d:\d\d"
    assert len(lines) >= 12 and all(re.fullmatch(pattern, line) for line in lines), lines
    assert lines[-1].startswith("video: 12/12 frames (100%)")


def test_progress_counts_skipped_images_and_ends_at_the_total(
    model: list[str], tmp_path: Path, capsys, every_update_a_line
) -> None:
    """Two of five images cannot be read: the count still ends at 5/5, not 3/5."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(5):
        path = folder / f"{index}.png"
        if index in (1, 3):
            path.write_bytes(b"not an image")
        else:
            cv2.imwrite(str(path), np.full((32, 40, 3), 60 * index, np.uint8))
    assert run(["images", str(folder), "--json", str(tmp_path / "poses.json"), *model]) == 0
    err = capsys.readouterr().err
    assert "2 unreadable skipped" in err
    assert _progress_lines(err, "images")[-1].startswith("images: 5/5 images (100%)")


def test_report_and_batch_show_progress(
    plain_video: Path, model: list[str], fast: list[str], tmp_path: Path, capsys,
    every_update_a_line,
) -> None:  # fmt: skip
    pytest.importorskip("matplotlib")
    tracks = tmp_path / "tracks.jsonl"
    args = ["video", str(plain_video), "--no-video", "--json", str(tracks), "--end", "0.5"]
    assert run([*args, *fast, *PEOPLE]) == 0
    assert run(["report", str(tracks), "--png", str(tmp_path / "png"), "--frames", "2"]) == 0
    lines = _progress_lines(capsys.readouterr().err, "report")
    figures = len(list((tmp_path / "png").iterdir()))
    assert lines[-1].startswith(f"report: {figures + 2}/{figures + 2} figures (100%)")
    assert run(["batch", str(plain_video), "--out", str(tmp_path / "out"), *model]) == 0
    assert _progress_lines(capsys.readouterr().err, "batch")[-1].startswith("batch: 1/1 inputs")


def test_progress_of_calibration_images_counts_each() -> None:
    from posecli.export import counted

    calls: list[tuple[int, int]] = []
    items = counted(iter("abc"), 3, lambda done, total: calls.append((done, total)))
    assert next(items) == "a" and calls == []  # reported when done, not when handed out
    assert list(items) == ["b", "c"]
    assert calls == [(1, 3), (2, 3), (3, 3)]


# ---------------------------------------------------------------------------------------------
# --json - : JSON lines on standard output


def test_json_dash_streams_json_lines_to_standard_output(
    plain_video: Path, model: list[str], tmp_path: Path, capfd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["video", str(plain_video), "--no-video", "--json", "-", *model]) == 0
    out, err = capfd.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["header"]["format"] == "posecli-tracks"
    assert [record["frame"] for record in records[1:]] == list(range(12))
    assert "12 frames at" in err and "standard output" in err  # logs stay on stderr
    assert os.listdir(tmp_path) == []  # no file named "-", no temporary


def test_json_dash_into_head_prints_three_lines_and_exits_quietly(
    long_video: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """``posecli video IN --no-video --json - | head -3``: three JSON lines, no traceback, exit
    141 (128 + SIGPIPE) like any tool whose reader left; the other outputs finalised."""
    table = tmp_path / "people.csv"
    posecli = [
        sys.executable, "-m", "posecli", "video", str(long_video), "--no-video", "--json", "-",
        "--csv", str(table), "--model", str(checkpoint), "--box-size", "64", "--threads", "1",
    ]  # fmt: skip
    shell = " ".join(f"'{arg}'" for arg in posecli) + ' | head -3; exit "${PIPESTATUS[0]}"'
    done = subprocess.run(
        ["bash", "-c", shell], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and [json.loads(line) for line in lines][1]["frame"] == 0
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "error" not in done.stderr, done.stderr
    assert len(_csv_rows(table)) == 0  # complete, under its final name (no one found)
    assert sorted(os.listdir(tmp_path)) == ["people.csv"]


def test_one_standard_output_only(plain_video: Path, fast: list[str], capsys) -> None:
    args = ["video", str(plain_video), "--no-video", "--json", "-", "--csv", "-", *fast]
    assert run(args) == 2
    assert "only one output can be standard output" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# --csv


def test_video_csv_has_a_row_per_person_per_frame(
    plain_video: Path, fast: list[str], tmp_path: Path
) -> None:
    tracks, table = tmp_path / "tracks.jsonl", tmp_path / "people.csv"
    args = ["video", str(plain_video), "--no-video", "--json", str(tracks), "--csv", str(table)]
    assert run([*args, "--end", "0.3", *fast, *PEOPLE]) == 0
    rows = _csv_rows(table)
    people = [(line, person) for line in _track_lines(tracks) for person in line["people"]]
    assert len(rows) == len(people) > 0
    for row, (line, person) in zip(rows, people, strict=True):
        assert int(row["frame"]) == line["frame"]
        assert float(row["time"]) == pytest.approx(line["time"])
        assert row["track_id"] == ("" if person["id"] is None else str(person["id"]))
        assert float(row["score"]) == pytest.approx(person["score"])
        assert row["image_id"] == row["file_name"] == ""
        for name, keypoint in zip(COCO_KEYPOINTS, person["keypoints"], strict=True):
            values = [float(row[f"{name}_{v}"]) for v in ("x", "y", "score")]
            assert values == pytest.approx(keypoint)
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(table)
    assert tuple(frame.columns) == CSV_COLUMNS and len(frame) == len(rows)


def test_csv_alone_is_enough_to_write(
    plain_video: Path, fast: list[str], tmp_path: Path, capsys
) -> None:
    table = tmp_path / "people.csv"
    assert run(["video", str(plain_video), "--no-video", "--csv", str(table), *fast]) == 0
    assert table.exists() and sorted(os.listdir(tmp_path)) == ["people.csv"]
    assert run(["webcam", "--camera", str(plain_video), "--no-display", *fast]) == 2
    assert "--csv" in capsys.readouterr().err  # named among what can be written


def test_webcam_csv(plain_video: Path, fast: list[str], tmp_path: Path) -> None:
    table = tmp_path / "live.csv"
    args = ["webcam", "--camera", str(plain_video), "--no-display", "--csv", str(table)]
    assert run([*args, *fast, *PEOPLE]) == 0
    rows = _csv_rows(table)
    assert rows and {row["file_name"] for row in rows} == {""}
    frames = [int(row["frame"]) for row in rows]
    assert frames == sorted(frames)


def test_interrupted_video_keeps_the_csv_rows_done(
    plain_video: Path, fast: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = VideoSource.__iter__

    def interrupted(self):
        for frame in frames(self):
            if frame.index == 3:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(VideoSource, "__iter__", interrupted)
    table = tmp_path / "people.csv"
    args = ["video", str(plain_video), "--no-video", "--csv", str(table)]
    assert run([*args, *fast, *PEOPLE]) == 130
    assert {int(row["frame"]) for row in _csv_rows(table)} == {0, 1, 2}
    assert sorted(os.listdir(tmp_path)) == ["people.csv"]  # no temporary left


def test_images_and_batch_write_the_same_csv(
    plain_video: Path, fast: list[str], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["000000000139.png", "000000000785.png"]
    for number, name in enumerate(names):
        rng = np.random.default_rng(number)
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    table = tmp_path / "images.csv"
    args = ["images", str(folder), "--json", str(tmp_path / "poses.json"), "--csv", str(table)]
    assert run([*args, *fast, *PEOPLE]) == 0
    rows = _csv_rows(table)
    assert rows and {(row["image_id"], row["file_name"]) for row in rows} <= {
        ("139", names[0]), ("785", names[1]),
    }  # fmt: skip
    assert {row["time"] for row in rows} == {"0.0"} and {row["track_id"] for row in rows} == {""}
    video_table = tmp_path / "plain.csv"
    args = ["video", str(plain_video), "--no-video", "--csv", str(video_table)]
    assert run([*args, *fast, *PEOPLE]) == 0
    out = tmp_path / "batch"
    args = ["batch", str(folder), str(plain_video), "--out", str(out), "--csv"]
    assert run([*args, *fast, *PEOPLE]) == 0
    assert (out / "images.csv").read_bytes() == table.read_bytes()
    assert (out / "plain.csv").read_bytes() == video_table.read_bytes()


# ---------------------------------------------------------------------------------------------
# --draw-threshold


def test_draw_threshold_decides_what_is_drawn_and_is_recorded(
    plain_video: Path, fast: list[str], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    image = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "photo.png"), image)
    drawn = {}
    for threshold in ("0", "1"):
        copies = tmp_path / f"drawn-{threshold}"
        args = ["images", str(folder), "--json", str(tmp_path / f"poses-{threshold}.json")]
        args += ["--out-dir", str(copies), "--draw-threshold", threshold]
        assert run([*args, *fast, *PEOPLE]) == 0
        assert json.loads((tmp_path / f"poses-{threshold}.json").read_text())  # people found
        drawn[threshold] = cv2.imread(str(copies / "photo.png"))
    assert np.array_equal(drawn["1"], image)  # every keypoint scores below 1: nothing drawn
    assert not np.array_equal(drawn["0"], image)
    tracks = tmp_path / "tracks.jsonl"
    args = ["video", str(plain_video), "--no-video", "--json", str(tracks), "--end", "0.2"]
    assert run([*args, "--draw-threshold", "0.35", *fast]) == 0
    header = json.loads(tracks.read_text().splitlines()[0])["header"]
    assert header["options"]["draw_threshold"] == 0.35


def test_draw_threshold_must_be_a_score(plain_video: Path, fast: list[str], capsys) -> None:
    args = ["video", str(plain_video), "--no-video", "--json", "x.jsonl", "--draw-threshold"]
    assert run([*args, "1.5", *fast]) == 2
    assert "--draw-threshold" in capsys.readouterr().err
