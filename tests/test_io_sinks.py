"""Sinks: H.264 MP4 (count, rate, size, audio, rotation, timestamps, interrupts), JSON outputs."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from schema import COCO_RESULT_SCHEMA, OPENPOSE_SCHEMA, TRACK_LINE_SCHEMA, validate_json

from posecli.errors import OutputClosedError, OutputError
from posecli.io.ffmpeg import probe_video
from posecli.io.sinks import (
    CocoResultsSink,
    CsvSink,
    ImageDirectorySink,
    JsonLinesSink,
    OpenPoseSink,
    VideoSink,
)
from posecli.io.sources import VideoSource
from posecli.pose import CSV_COLUMNS, Frame, Pose
from posecli.spec import COCO_KEYPOINTS


def _copy(source_path: Path, out: Path, *, limit: int | None = None, **options) -> VideoSink:
    """Copy frames of a video through a VideoSink (audio from the source) without closing it."""
    source = VideoSource(source_path)
    sink = VideoSink(
        out,
        source.info.frame_rate,
        audio_source=source_path,
        timescale=round(1 / source.info.time_base),
        **options,
    )
    with source:
        for frame in source:
            if limit is not None and sink.frames == limit:
                break
            sink.write(_at(frame.time, frame.image), frame.image)
    return sink


def _at(time: float, image: np.ndarray) -> Frame:
    """The frame record of ``image`` shown at ``time`` seconds (what the pipeline passes)."""
    return Frame(index=0, time=time, width=image.shape[1], height=image.shape[0])


def _leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


# ---------------------------------------------------------------------------------------------
# Video


def test_video_keeps_frame_count_rate_and_size(plain_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated.mp4"
    assert _copy(plain_video, out).close() == out
    info = probe_video(out)
    assert (info.codec, info.width, info.height) == ("h264", 64, 48)
    assert info.frame_rate == 10
    assert not info.has_audio
    frames = list(VideoSource(out))
    assert len(frames) == 12
    assert [f.time for f in frames] == pytest.approx([i / 10 for i in range(12)])
    originals = list(VideoSource(plain_video))
    assert np.abs(frames[6].image.astype(int) - originals[6].image).mean() < 6
    assert _leftovers(tmp_path) == []


def test_audio_stream_in_gives_audio_stream_out(audio_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "with_sound.mp4"
    _copy(audio_video, out).close()
    info = probe_video(out)
    assert info.audio_codec == "aac"
    assert info.duration == pytest.approx(1.2, abs=0.1)
    assert len(list(VideoSource(out))) == 12


def test_audio_that_mp4_does_not_play_is_reencoded(pcm_audio_video: Path, tmp_path: Path) -> None:
    assert probe_video(pcm_audio_video).audio_codec == "pcm_s16le"
    out = tmp_path / "pcm.mp4"
    _copy(pcm_audio_video, out).close()
    assert probe_video(out).audio_codec == "aac"


def test_rotated_input_gives_upright_output(rotated_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "upright.mp4"
    _copy(rotated_video, out).close()
    info = probe_video(out)
    assert (info.width, info.height, info.rotation) == (48, 64, 0)
    image = next(iter(VideoSource(out))).image
    assert image[-5, 5, 0] > 200 and image[5, 5, 0] < 50  # marker at the bottom-left


def test_variable_frame_rate_keeps_timestamps(
    vfr_video: Path, vfr_times: list[float], tmp_path: Path
) -> None:
    out = tmp_path / "vfr_out.mp4"
    _copy(vfr_video, out).close()
    times = [f.time for f in VideoSource(out)]
    assert times == pytest.approx(vfr_times, abs=1e-3)


def test_start_and_every_keep_source_times_and_audio_sync(
    audio_video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "part.mp4"
    source = VideoSource(audio_video, start=0.4, every=2)
    with VideoSink(out, source.info.frame_rate / 2, audio_source=audio_video) as sink:
        for frame in source:
            sink.write(_at(frame.time, frame.image), frame.image)
    times = [f.time for f in VideoSource(out)]
    assert times == pytest.approx([0.0, 0.2, 0.4, 0.6])  # relative to the first frame (0.4 s)
    info = probe_video(out)
    assert info.has_audio and info.duration == pytest.approx(0.8, abs=0.1)


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    with VideoSink(out, 30) as sink:
        for index, value in enumerate((50, 100, 150)):
            image = np.full((31, 45, 3), value, dtype=np.uint8)
            sink.write(_at(index / 30, image), image)
    info = probe_video(out)
    assert (info.width, info.height) == (46, 32)
    frames = list(VideoSource(out))
    assert [f.time for f in frames] == pytest.approx([0, 1 / 30, 2 / 30], abs=1e-3)
    assert abs(int(frames[2].image[10, 10, 0]) - 150) <= 3


def test_abort_leaves_a_playable_mp4_of_the_frames_written(
    audio_video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "interrupted.mp4"
    sink = _copy(audio_video, out, limit=7)
    assert sink.abort() == out
    assert sink.abort() == out  # idempotent
    assert len(list(VideoSource(out))) == 7
    info = probe_video(out)
    assert info.has_audio and info.duration == pytest.approx(0.7, abs=0.1)
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_in_with_block_finalises(plain_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctrl_c.mp4"
    with pytest.raises(KeyboardInterrupt), VideoSink(out, 10) as sink:
        for frame in VideoSource(plain_video):
            sink.write(_at(frame.time, frame.image), frame.image)
            if frame.index == 3:
                raise KeyboardInterrupt
    assert len(list(VideoSource(out))) == 4


def test_nothing_written_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "empty.mp4"
    assert VideoSink(out, 10).close() is None
    assert VideoSink(out, 10).abort() is None
    assert os.listdir(tmp_path) == []


def test_frames_must_keep_their_size(tmp_path: Path) -> None:
    with VideoSink(tmp_path / "sizes.mp4", 10) as sink:
        images = [np.zeros(shape, dtype=np.uint8) for shape in ((48, 64, 3), (48, 66, 3), (48, 64))]
        sink.write(_at(0.0, images[0]), images[0])
        with pytest.raises(ValueError, match="shape"):
            sink.write(_at(0.1, images[1]), images[1])
        with pytest.raises(ValueError, match="RGB"):
            sink.write(_at(0.2, images[0]), images[2])


def test_encoder_death_is_an_output_error_and_abort_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "dead.mp4"
    sink = VideoSink(out, 10)
    frame = np.zeros((240, 320, 3), dtype=np.uint8)
    sink.write(_at(0.0, frame), frame)
    sink._encoder.process.kill()  # as if ffmpeg crashed or the disk filled
    with pytest.raises(OutputError, match="video encoder failed for .*dead.mp4"):
        for index in range(1, 50):  # the pipe buffer may take a frame or two before breaking
            sink.write(_at(index / 10, frame), frame)
    assert sink.abort() is None
    assert os.listdir(tmp_path) == []


def test_backward_timestamps_continue_after_the_last(tmp_path: Path) -> None:
    out = tmp_path / "jump.mp4"
    with VideoSink(out, 10) as sink:
        for time in (5.0, 5.1, 5.2, 0.0, 0.1):
            image = np.zeros((16, 16, 3), dtype=np.uint8)
            sink.write(_at(time, image), image)
    times = [f.time for f in VideoSource(out)]
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Refusing to overwrite, unwritable places

_SINKS: dict[str, Callable[[Path, bool], object]] = {
    "video": lambda path, force: VideoSink(path, 10, force=force),
    "jsonl": lambda path, force: JsonLinesSink(path, force=force),
    "coco": lambda path, force: CocoResultsSink(path, force=force),
}


@pytest.mark.parametrize("kind", sorted(_SINKS))
def test_existing_output_needs_force(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "result.out"
    out.write_text("precious")
    with pytest.raises(OutputError, match=r"exists \(use --force to overwrite\)"):
        _SINKS[kind](out, False)
    assert out.read_text() == "precious"
    sink = _SINKS[kind](out, True)
    sink.abort()


@pytest.mark.parametrize("kind", sorted(_SINKS))
def test_unwritable_place_is_an_output_error(tmp_path: Path, kind: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot"):
        _SINKS[kind](blocker / "result.out", False)
    with pytest.raises(OutputError, match="is a directory"):
        _SINKS[kind](tmp_path, True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_read_only_directory_is_an_output_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="cannot write"):
        JsonLinesSink(locked / "tracks.jsonl")


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "tracks.jsonl"
    assert JsonLinesSink(out).close() == out


# ---------------------------------------------------------------------------------------------
# JSON outputs


def _frame(index: int, skeleton, people: int = 2) -> Frame:
    poses = [
        Pose(skeleton(100 + 60 * p + index, 120, 150), score=0.8 - 0.1 * p, track_id=p + 1)
        for p in range(people)
    ]
    return Frame(index=index, time=index / 25, width=320, height=240, poses=poses)


def test_json_lines_validate_one_per_frame(tmp_path: Path, skeleton) -> None:
    out = tmp_path / "tracks.jsonl"
    with JsonLinesSink(out) as sink:
        for index in range(5):
            sink.write(_frame(index, skeleton, people=index % 3))
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    records = [json.loads(line) for line in lines]
    for record in records:
        validate_json(record, TRACK_LINE_SCHEMA)
    assert [r["frame"] for r in records] == list(range(5))
    assert records[4]["time"] == pytest.approx(0.16)
    assert [len(r["people"]) for r in records] == [0, 1, 2, 0, 1]
    assert records[2]["people"][1]["id"] == 2


def test_json_lines_abort_keeps_only_complete_lines(tmp_path: Path, skeleton) -> None:
    out = tmp_path / "tracks.jsonl"
    sink = JsonLinesSink(out)
    for index in range(3):
        sink.write(_frame(index, skeleton))
    sink._file.write(b'{"frame": 3, "ti')  # a line cut short by the interrupt
    assert sink.abort() == out
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        validate_json(json.loads(line), TRACK_LINE_SCHEMA)
    assert _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="after close"):
        sink.write(_frame(3, skeleton))


def test_json_lines_are_on_disk_before_close(tmp_path: Path, skeleton) -> None:
    sink = JsonLinesSink(tmp_path / "tracks.jsonl")
    sink.write(_frame(0, skeleton))
    assert sink._temporary.read_bytes().count(b"\n") == 1  # flushed per line
    sink.close()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return rows


def test_csv_columns_are_the_documented_ones() -> None:
    assert CSV_COLUMNS[:6] == ("frame", "time", "image_id", "file_name", "track_id", "score")
    assert len(CSV_COLUMNS) == 6 + 17 * 3
    assert CSV_COLUMNS[6:9] == ("nose_x", "nose_y", "nose_score")
    assert CSV_COLUMNS[-3:] == ("right_ankle_x", "right_ankle_y", "right_ankle_score")


def test_csv_one_row_per_person_per_frame(tmp_path: Path, skeleton) -> None:
    out = tmp_path / "people.csv"
    frames = [_frame(index, skeleton, people=index % 3) for index in range(5)]
    frames[2].poses[1].track_id = None  # untracked: no id
    frames[2].poses[1].keypoints[3] = 0  # left ear not found
    with CsvSink(out) as sink:
        for frame in frames:
            sink.write(frame)
    rows = _read_csv(out)
    assert [int(row["frame"]) for row in rows] == [1, 2, 2, 4]  # 0, 1, 2, 0, 1 people
    assert [row["track_id"] for row in rows] == ["1", "1", "", "1"]
    assert {row["image_id"] for row in rows} == {row["file_name"] for row in rows} == {""}
    second = rows[2]
    pose = frames[2].poses[1]
    assert float(second["time"]) == pytest.approx(0.08)
    assert float(second["score"]) == pytest.approx(pose.score, abs=1e-4)
    for k, name in enumerate(COCO_KEYPOINTS):
        values = [float(second[f"{name}_{v}"]) for v in ("x", "y", "score")]
        assert values == pytest.approx(pose.keypoints[k], abs=0.01)
    assert second["left_ear_score"] == "0.0"
    pandas = pytest.importorskip("pandas")
    table = pandas.read_csv(out)
    assert tuple(table.columns) == CSV_COLUMNS and len(table) == 4
    assert table["nose_x"].tolist() == pytest.approx([float(r["nose_x"]) for r in rows])


def test_csv_of_still_images_names_them(tmp_path: Path, skeleton) -> None:
    out = tmp_path / "people.csv"
    photo = _frame(0, skeleton, people=1)
    photo.name, photo.image_id, photo.time = "000000000042.jpg, a copy", 42, 0.0
    with CsvSink(out) as sink:
        sink.write(photo)
    (row,) = _read_csv(out)
    assert (row["image_id"], row["file_name"]) == ("42", "000000000042.jpg, a copy")


def test_csv_abort_keeps_the_complete_rows_and_no_temporary(tmp_path: Path, skeleton) -> None:
    out = tmp_path / "people.csv"
    sink = CsvSink(out)
    sink.write(_frame(0, skeleton))
    sink._file.write(b"1,0.04,,,1,0.8,12")  # a row cut short by the interrupt
    assert not out.exists()  # written under a temporary name until finalised
    assert sink.abort() == out
    assert len(_read_csv(out)) == 2
    assert _leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="exists"):
        CsvSink(out)


def test_dash_is_standard_output(
    tmp_path: Path, skeleton, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with JsonLinesSink("-", header={"format": "posecli-tracks"}) as sink:
        sink.write(_frame(0, skeleton))
    with CsvSink("-") as table:
        table.write(_frame(1, skeleton))
    lines = capfd.readouterr().out.splitlines()
    assert json.loads(lines[0]) == {"header": {"format": "posecli-tracks"}}
    validate_json(json.loads(lines[1]), TRACK_LINE_SCHEMA)
    assert tuple(lines[2].split(",")) == CSV_COLUMNS and len(lines) == 5
    assert os.listdir(tmp_path) == []  # no file named "-", no temporary


def test_standard_output_closed_by_its_reader_stops_quietly(skeleton) -> None:
    read_end, write_end = os.pipe()
    saved = os.dup(1)
    try:
        os.dup2(write_end, 1)
        sink = JsonLinesSink("-")
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_end)
    os.close(read_end)  # the reader leaves: `| head`
    with pytest.raises(OutputClosedError) as raised:
        sink.write(_frame(0, skeleton))
    assert raised.value.exit_code == 141
    assert sink.abort() == Path("-")


def test_coco_results(tmp_path: Path, skeleton) -> None:
    out = tmp_path / "poses.json"
    with CocoResultsSink(out) as sink:
        frame = _frame(0, skeleton)
        frame.name, frame.image_id = "000000000042.jpg", 42
        sink.write(frame)
        empty = _frame(1, skeleton, people=0)
        empty.image_id = 43
        sink.write(empty)
    results = json.loads(out.read_text())
    assert len(results) == 2
    for entry in results:
        validate_json(entry, COCO_RESULT_SCHEMA)
        assert entry["image_id"] == 42 and entry["category_id"] == 1
        assert entry["file_name"] == "000000000042.jpg"
    assert results[0]["score"] == pytest.approx(0.8)


def test_coco_results_abort_writes_the_images_done(tmp_path: Path, skeleton) -> None:
    out = tmp_path / "poses.json"
    sink = CocoResultsSink(out)
    frame = _frame(0, skeleton)
    frame.image_id = 1
    sink.write(frame)
    assert sink.abort() == out
    assert len(json.loads(out.read_text())) == 2


def test_openpose_files_per_frame(tmp_path: Path, skeleton) -> None:
    folder = tmp_path / "openpose"
    with OpenPoseSink(folder, prefix="clip") as sink:
        for index in range(2):
            sink.write(_frame(index, skeleton))
    names = sorted(os.listdir(folder))
    assert names == ["clip_000000000000_keypoints.json", "clip_000000000001_keypoints.json"]
    document = json.loads((folder / names[1]).read_text())
    validate_json(document, OPENPOSE_SCHEMA)
    assert [p["person_id"] for p in document["people"]] == [[1], [2]]
    with pytest.raises(OutputError, match="exists"):
        OpenPoseSink(folder, prefix="clip")
    OpenPoseSink(folder, prefix="clip", force=True).write(_frame(0, skeleton))
    image_frame = Frame(index=0, time=0.0, width=10, height=10, name="000000000042.jpg")
    path = OpenPoseSink(tmp_path / "images", force=False).write(image_frame)
    assert path.name == "000000000042_keypoints.json"


def test_annotated_images(tmp_path: Path) -> None:
    image = np.zeros((8, 10, 3), dtype=np.uint8)
    image[:, :5] = (255, 0, 0)
    sink = ImageDirectorySink(tmp_path / "annotated", force=False)
    photo = Frame(index=0, time=0.0, width=10, height=8, name="photo.png")
    path = sink.write(photo, image)
    assert np.array_equal(cv2.imread(str(path))[:, :, ::-1], image)
    with pytest.raises(OutputError, match="exists"):
        sink.write(photo, image)
    assert sink.close() == tmp_path / "annotated"


def test_names_that_look_like_options_or_protocols(plain_video: Path, tmp_path: Path) -> None:
    odd_input = tmp_path / "-clip:1.mp4"
    odd_input.write_bytes(plain_video.read_bytes())
    out = tmp_path / "-out:put.mp4"
    _copy(odd_input, out).close()
    assert len(list(VideoSource(out))) == 12
