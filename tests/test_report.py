"""posecli report (issue 22): reading track files, joint angles, figures, the HTML page."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posecli.config import TrackerConfig
from posecli.errors import InputError, OutputError, PoseCliError, UsageError
from posecli.io.sources import VideoSource
from posecli.pose import Frame, Pose, frame_to_track_line
from posecli.report import (
    HEADER_KEY,
    ReportDependencyError,
    TracksFileError,
    build_report,
    joint_angle,
    joint_angles,
    make_report,
    read_tracks,
    render_html,
    smooth_keypoints,
)
from posecli.report.figures import (
    angles_figure,
    contact_sheet_figure,
    keypoint_share_figure,
    trajectory_figure,
    with_breaks,
)
from posecli.report.motion import JOINT_ANGLES, hip_centres
from posecli.report.sheet import CANVAS_RGB, sheet_frames, sheet_image, video_frame
from posecli.spec import COCO_KEYPOINTS, LEFT_COLOUR_RGB
from posecli.track import Tracker

REPO = Path(__file__).resolve().parents[1]
FPS = 25.0
WIDTH, HEIGHT = 640, 480
FRAMES = 50
K = {name: index for index, name in enumerate(COCO_KEYPOINTS)}

#: A standing person, pixels relative to the hip centre (x right, y down).
_BODY = {
    "nose": (0, -150), "left_eye": (6, -156), "right_eye": (-6, -156), "left_ear": (12, -152),
    "right_ear": (-12, -152), "left_shoulder": (20, -110), "right_shoulder": (-20, -110),
    "left_elbow": (28, -60), "right_elbow": (-28, -60), "left_wrist": (30, -15),
    "right_wrist": (-30, -15), "left_hip": (12, 0), "right_hip": (-12, 0), "left_knee": (14, 50),
    "right_knee": (-14, 50), "left_ankle": (14, 100), "right_ankle": (-14, 100),
}  # fmt: skip


def body(x: float, y: float, knee_degrees: float) -> np.ndarray:
    """``(17, 3)`` keypoints of a person whose hip centre is ``(x, y)`` and whose left knee
    angle (hip–knee–ankle) is ``knee_degrees``; confidence 0.9."""
    points = np.array([_BODY[name] for name in COCO_KEYPOINTS], dtype=np.float64)
    hip, knee = points[K["left_hip"]], points[K["left_knee"]]
    thigh = (hip - knee) / np.linalg.norm(hip - knee)
    turn = math.radians(knee_degrees)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    points[K["left_ankle"]] = knee + 50.0 * rotation @ thigh
    keypoints = np.concatenate([points + [x, y], np.full((17, 1), 0.9)], axis=1)
    return keypoints


def knee_sequence() -> np.ndarray:
    """The left knee angle of person 1 in each frame, degrees."""
    return 120.0 + 40.0 * np.sin(2 * np.pi * np.arange(FRAMES) / FRAMES)


def person_one(i: int) -> np.ndarray:
    return body(100 + 4.0 * i, 300 + 10 * math.sin(i / 5), knee_sequence()[i])


def person_two(i: int) -> np.ndarray:
    """Seen in frames 10–39; its left wrist is missing in every other frame."""
    keypoints = body(500 - 2.0 * i, 250, 170)
    if i % 2 == 0:
        keypoints[K["left_wrist"]] = 0
    return keypoints


def synthetic_frames() -> list[Frame]:
    frames = []
    for i in range(FRAMES):
        poses = [Pose(person_one(i), 0.9, 1)]
        if 10 <= i < 40:
            poses.append(Pose(person_two(i), 0.8, 2))
        if i < 5:
            poses.append(Pose(body(320, 200, 150), 0.5, None))  # never confirmed
        frames.append(Frame(i, i / FPS, WIDTH, HEIGHT, poses))
    return frames


def write_tracks(path: Path, frames: list[Frame], header: dict | None = None) -> Path:
    """A track file as ``posecli video --json`` writes it (one line per frame)."""
    lines = [] if header is None else [json.dumps({HEADER_KEY: header})]
    lines += [json.dumps(frame_to_track_line(frame), separators=(",", ":")) for frame in frames]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def tracks_path(tmp_path: Path) -> Path:
    return write_tracks(tmp_path / "tracks.jsonl", synthetic_frames())


def _line(figure, label: str):
    lines = [line for axes in figure.axes for line in axes.get_lines() if line.get_label() == label]
    assert len(lines) == 1, label
    return lines[0]


def _found(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[~np.isnan(values)]


# ---------------------------------------------------------------------------------------------
# angles


def test_joint_angle_at_the_middle_keypoint() -> None:
    keypoints = np.zeros((4, 17, 3))
    a, b, c = JOINT_ANGLES["right elbow"]
    keypoints[:, [a, b, c], 2] = 1.0
    keypoints[0, [a, b, c], :2] = [[0, 0], [10, 0], [10, 10]]  # right angle
    keypoints[1, [a, b, c], :2] = [[0, 0], [10, 0], [20, 0]]  # straight
    keypoints[2, [a, b, c], :2] = [[0, 0], [10, 0], [0, 0.0001]]  # folded
    keypoints[3, [a, b, c], :2] = [[0, 0], [10, 0], [10, 10]]
    keypoints[3, c, 2] = 0  # wrist missing
    angles = joint_angle(keypoints, (a, b, c))
    assert angles[:3] == pytest.approx([90.0, 180.0, 0.0], abs=1e-3)
    assert np.isnan(angles[3])
    keypoints[0, a, :2] = keypoints[0, b, :2]  # zero-length segment
    assert np.isnan(joint_angle(keypoints, (a, b, c))[0])
    assert set(joint_angles(keypoints)) == set(JOINT_ANGLES)
    assert len(JOINT_ANGLES) == 8


def test_synthetic_body_has_the_knee_angle_asked_for() -> None:
    for degrees in (45.0, 90.0, 135.0, 179.0):
        knee = joint_angle(body(0, 0, degrees), JOINT_ANGLES["left knee"])
        assert float(knee) == pytest.approx(degrees, abs=1e-6)


def test_smoothing_is_the_trackers_one_euro_filter() -> None:
    """Smoothing for the angles gives what ``posecli video --smooth`` gives the same person."""
    rng = np.random.default_rng(0)
    keypoints = np.array([person_one(i) for i in range(FRAMES)])
    keypoints[..., :2] += rng.normal(0, 2.0, keypoints[..., :2].shape)
    keypoints[7, K["left_knee"]] = 0  # a keypoint missing in one frame restarts its filter
    times = np.arange(FRAMES) / FPS
    tracker = Tracker(TrackerConfig(smooth=True))
    pairs = zip(keypoints, times, strict=True)
    expected = [tracker.update([Pose(k, 0.9)], t)[0].keypoints for k, t in pairs]
    smoothed = smooth_keypoints(keypoints, times)
    assert np.abs(smoothed - np.array(expected)).max() < 1e-3  # float32 rounding in Pose
    assert np.array_equal(smoothed[:, :, 2], keypoints[:, :, 2])
    still = np.repeat(body(300, 300, 100)[None], FRAMES, axis=0)  # jitter on a still person
    still[..., :2] += rng.normal(0, 2.0, still[..., :2].shape)
    raw = joint_angles(still)["left knee"]
    steady = joint_angles(smooth_keypoints(still, times))["left knee"]
    assert np.abs(steady[25:] - 100).mean() < 0.7 * np.abs(raw[25:] - 100).mean()


# ---------------------------------------------------------------------------------------------
# reading track files


def test_read_tracks(tracks_path: Path) -> None:
    tracks = read_tracks(tracks_path)
    assert len(tracks.frames) == FRAMES and tracks.skipped == 0 and tracks.header is None
    assert tracks.size == (WIDTH, HEIGHT)
    assert tracks.fps == pytest.approx(FPS)
    assert tracks.frame_interval == pytest.approx(1 / FPS)
    assert [pose.track_id for pose in tracks.frames[0].poses] == [1, None]
    assert tracks.frames[12].poses[1].keypoints[K["left_wrist"], 2] == 0


def test_truncated_last_line_is_skipped_and_counted(tmp_path: Path, tracks_path: Path) -> None:
    text = tracks_path.read_text()
    cut = tmp_path / "cut.jsonl"
    cut.write_text(text + text.splitlines()[-1][:57])  # an interrupted run's half line
    tracks = read_tracks(cut)
    assert len(tracks.frames) == FRAMES and tracks.skipped == 1
    report = build_report(tracks, smooth=False, sheet_count=2)
    assert any("1 incomplete" in note for note in report.notes)
    assert "1 incomplete" in render_html(report)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ('{"frame": 0, "time": 0.0, "wid', "no complete track line"),
        ('[{"image_id": 1, "category_id": 1}]\n', "not a posecli track file"),
        ('{"a": 1}\n{"b": 2}\n', "not a posecli track file"),
        ("hello\nworld\n", "not a posecli track file"),
        ('{"header": {"fps": 25}}\n', "no frame record"),
        ("\x00\x01\x02\xff\xfe" * 50, "no complete track line"),
    ],
)
def test_empty_or_foreign_files_are_refused(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8", errors="surrogateescape")
    with pytest.raises(TracksFileError) as caught:
        read_tracks(path)
    message = str(caught.value)
    assert words in message and str(path) in message and "\n" not in message
    assert isinstance(caught.value, InputError) and isinstance(caught.value, PoseCliError)
    assert caught.value.exit_code == 1


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TracksFileError, match="cannot read"):
        read_tracks(tmp_path / "none.jsonl")


def test_header_gives_fps_model_and_options(tmp_path: Path) -> None:
    header = {
        "posecli": "0.1.0", "source": "walk.mp4", "fps": 30.0, "model": "default",
        "model_name": "imhn-cpu-lite0", "options": {"smooth": True, "every": 2},
    }  # fmt: skip
    path = write_tracks(tmp_path / "with_header.jsonl", synthetic_frames()[:10], header)
    tracks = read_tracks(path)
    assert tracks.header == header and len(tracks.frames) == 10
    assert tracks.fps == 30.0  # declared, not the 25 the frames suggest
    report = build_report(tracks, sheet_count=0)
    summary = dict(report.summary)
    assert summary["fps"] == "30" and summary["model"] == "default (imhn-cpu-lite0)"
    assert summary["options"] == "smooth=true, every=2" and summary["source"] == "walk.mp4"
    assert all(not motion.smoothed for motion in report.people)  # --smooth already applied
    assert any("not smoothed again" in note for note in report.notes)
    refined = {**header, "refiner_name": "refiner-int8"}
    path = write_tracks(tmp_path / "refined.jsonl", synthetic_frames()[:10], refined)
    summary = dict(build_report(read_tracks(path), sheet_count=0).summary)
    assert summary["model"] == "default (imhn-cpu-lite0), refined by refiner-int8"


def test_keypoints_under_the_draw_threshold_are_not_found(tmp_path: Path) -> None:
    """The refiner reports all 17 keypoints, weak ones with low scores: those at or under the
    draw threshold (the tracks', else 0.1) are neither found nor measured."""
    frames = synthetic_frames()[:20]
    for frame in frames[::2]:
        frame.poses[0].keypoints[K["left_knee"], 2] = 0.05  # drawn by no default skeleton
    for frame in frames[1::4]:
        frame.poses[0].keypoints[K["left_ankle"], 2] = 0.2
    path = write_tracks(tmp_path / "weak.jsonl", frames)

    def person_one_of(report):
        return next(m for m in report.people if m.track.track_id == 1)

    default = build_report(read_tracks(path), smooth=False, sheet_count=0)
    one = person_one_of(default)
    assert dict(default.summary)["keypoints found"] == "scored above 0.1"
    assert one.share[K["left_knee"]] == pytest.approx(0.5)
    assert one.share[K["left_ankle"]] == pytest.approx(1.0)
    knee = one.angles["left knee"]
    assert np.isnan(knee[::2]).all() and not np.isnan(knee[1::2]).any()
    assert "score > 0.1" in keypoint_share_figure(one).axes[0].get_xlabel()
    everything = person_one_of(build_report(read_tracks(path), smooth=False, sheet_count=0,
                                            threshold=0.0))  # fmt: skip
    assert everything.share[K["left_knee"]] == pytest.approx(1.0)
    header = {"options": {"draw_threshold": 0.3}}
    recorded = write_tracks(tmp_path / "recorded.jsonl", frames, header)
    strict = person_one_of(build_report(read_tracks(recorded), smooth=False, sheet_count=0))
    assert strict.threshold == 0.3
    assert strict.share[K["left_ankle"]] == pytest.approx(0.75)  # 0.2 in 5 of 20 frames
    assert np.isnan(strict.angles["left knee"][1::4]).all()  # its ankle under 0.3 there


def test_report_progress_counts_pictures_and_figures(tracks_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    report = build_report(
        read_tracks(tracks_path), sheet_count=3, progress=lambda *state: calls.append(state)
    )
    total = 3 + 1 + 3 * len(report.people)  # pictures, the sheet, three figures per person
    assert calls == [(done, total) for done in range(1, total + 1)]


# ---------------------------------------------------------------------------------------------
# figures


def test_figures_show_the_measures(tracks_path: Path) -> None:
    tracks = read_tracks(tracks_path)
    report = build_report(tracks, smooth=False, sheet_count=0)
    one, two = report.people
    assert [one.track.track_id, two.track.track_id] == [1, 2]
    interval = tracks.frame_interval
    knee = _line(angles_figure(one, interval), "left knee")
    assert np.abs(_found(knee.get_ydata()) - knee_sequence()).max() < 1.0
    assert _found(knee.get_xdata()) == pytest.approx(np.arange(FRAMES) / FPS)
    hips = _line(trajectory_figure(one, WIDTH, HEIGHT, interval), "hip centre")
    expected = np.array([person_one(i)[[K["left_hip"], K["right_hip"]], :2].mean(0)
                         for i in range(FRAMES)])  # fmt: skip
    assert np.abs(_found(hips.get_xdata()) - expected[:, 0]).max() < 0.01
    assert np.abs(_found(hips.get_ydata()) - expected[:, 1]).max() < 0.01
    bars = keypoint_share_figure(two).axes[0].patches
    widths = {name: bar.get_width() for name, bar in zip(COCO_KEYPOINTS, bars, strict=True)}
    assert widths["left_wrist"] == pytest.approx(50.0)
    others = [widths[name] for name in COCO_KEYPOINTS if name != "left_wrist"]
    assert others == pytest.approx([100.0] * 16)
    assert one.seconds == pytest.approx(FRAMES / FPS) and two.seconds == pytest.approx(30 / FPS)
    assert two.track.frames.tolist() == list(range(10, 40))


def test_trajectory_axes_are_the_frame_in_image_coordinates(tracks_path: Path) -> None:
    tracks = read_tracks(tracks_path)
    motion = build_report(tracks, smooth=False, sheet_count=0).people[0]
    axes = trajectory_figure(motion, WIDTH, HEIGHT, tracks.frame_interval).axes[0]
    assert axes.get_xlim() == (0, WIDTH) and axes.get_ylim() == (HEIGHT, 0)  # y down


def test_smoothed_angles_are_drawn_beside_the_raw_ones(tracks_path: Path) -> None:
    tracks = read_tracks(tracks_path)
    motion = build_report(tracks, sheet_count=0).people[0]
    assert motion.smoothed
    figure = angles_figure(motion, tracks.frame_interval)
    raw = _line(figure, "left knee (raw)").get_ydata()
    assert np.abs(_found(raw) - knee_sequence()).max() < 1.0
    smoothed = _found(_line(figure, "left knee").get_ydata())
    expected = joint_angles(smooth_keypoints(motion.track.keypoints, motion.track.times))
    assert smoothed == pytest.approx(_found(expected["left knee"]))
    assert np.abs(smoothed - knee_sequence()).max() < 10.0  # close, a little lag


def test_lines_break_where_a_person_was_not_seen() -> None:
    times = np.array([0.0, 0.04, 0.08, 1.0, 1.04])
    x, y = with_breaks(times, np.arange(5.0), 0.04)
    assert np.isnan(x[3]) and np.isnan(y[3]) and len(x) == 6
    x, xy = with_breaks(times, np.ones((5, 2)), 0.04)
    assert xy.shape == (6, 2) and np.isnan(xy[3]).all()
    assert len(with_breaks(times, np.arange(5.0), 0.0)[0]) == 5
    assert np.isnan(hip_centres(np.zeros((1, 17, 3)))).all()


def test_contact_sheet_on_a_blank_canvas(tracks_path: Path) -> None:
    frames = read_tracks(tracks_path).frames
    chosen = sheet_frames(frames, 6)
    assert [frame.index for frame in chosen] == [0, 10, 20, 29, 39, 49]
    assert len(sheet_frames(frames[:3], 12)) == 3 and sheet_frames(frames, 0) == []
    image = sheet_image(chosen[0], None)
    assert image.shape == (360, 480, 3) and image.dtype == np.uint8
    assert (image == CANVAS_RGB).all(axis=-1).mean() > 0.8  # mostly canvas
    assert (np.abs(image.astype(int) - LEFT_COLOUR_RGB).sum(-1) < 30).any()  # left limbs drawn
    figure = contact_sheet_figure([image, image], ["a", "b"], columns=4)
    shown = [axes for axes in figure.axes if axes.images]
    assert len(shown) == 2 and [axes.get_title() for axes in shown] == ["a", "b"]


def test_contact_sheet_from_the_video(tmp_path: Path, plain_video: Path) -> None:
    """Pictures are the video's frames at the records' times (64×48, 10 fps, 12 frames)."""
    with VideoSource(plain_video) as source:
        decoded = list(source)
    frames = [Frame(f.index, f.time, 64, 48, []) for f in decoded]
    for k in (0, 5, 11):
        assert np.array_equal(video_frame(plain_video, frames[k]), decoded[k].image)
    with pytest.raises(InputError, match="not the video"):
        video_frame(plain_video, Frame(0, 0.0, 640, 480, []))
    path = write_tracks(tmp_path / "plain.jsonl", frames)
    report = build_report(read_tracks(path), video=plain_video, sheet_count=4)
    assert "contact_sheet.png" in report.figures and report.people == []


# ---------------------------------------------------------------------------------------------
# the page and the files


def _data_images(page: str) -> list[np.ndarray]:
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [cv2.imdecode(np.frombuffer(base64.b64decode(uri), np.uint8), 1) for uri in uris]


def test_report_page_is_self_contained(tmp_path: Path, tracks_path: Path) -> None:
    out, pngs = tmp_path / "report.html", tmp_path / "figures"
    report, written = make_report(tracks_path, out=out, png_dir=pngs, sheet_count=8)
    assert written[0] == out and len(written) == 1 + len(report.figures)
    names = ["contact_sheet.png"] + [
        f"person_{i}_{kind}.png" for i in (1, 2) for kind in ("trajectory", "angles", "keypoints")
    ]
    assert list(report.figures) == names
    assert sorted(path.name for path in pngs.iterdir()) == sorted(names)
    page = out.read_text(encoding="utf-8")
    images = _data_images(page)
    assert len(images) == len(names) and all(image is not None for image in images)
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)  # nothing fetched, links in page
    assert "http" not in page.replace("http-equiv", "")
    summary = dict(report.summary)
    assert summary["people tracked"] == "2" and summary["untracked detections"] == "5"
    assert summary["fps"] == "25 (estimated)" and summary["frame size"] == "640×480 px"
    assert "not recorded" in summary["model"] and summary["options"] == "not recorded"
    assert 'id="person-2"' in page and "On screen 1.20 s: 30 frames" in page
    assert list(tmp_path.glob(".*.part")) == [] and list(pngs.glob(".*")) == []


def test_outputs_are_checked_before_any_work(tmp_path: Path, tracks_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("mine")
    with pytest.raises(OutputError, match="exists"):
        make_report(tracks_path, out=out)
    assert out.read_text() == "mine"
    make_report(tracks_path, out=out, force=True, sheet_count=1)
    assert out.read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(UsageError, match="nothing to write"):
        make_report(tracks_path)
    with pytest.raises(UsageError, match="tracks file itself"):
        make_report(tracks_path, out=tracks_path, force=True)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    (pngs / "person_2_angles.png").write_bytes(b"mine")
    with pytest.raises(OutputError, match="person_2_angles.png exists"):
        make_report(tracks_path, png_dir=pngs, sheet_count=1)
    assert [path.name for path in pngs.iterdir()] == ["person_2_angles.png"]
    with pytest.raises(TracksFileError):
        make_report(tmp_path / "missing.jsonl", out=tmp_path / "other.html")
    assert not (tmp_path / "other.html").exists()


def test_missing_matplotlib_is_one_line(
    tmp_path: Path, tracks_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    with pytest.raises(ReportDependencyError, match=r"pip install 'posecli\[report\]'"):
        make_report(tracks_path, out=tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_cli_report(tmp_path: Path, tracks_path: Path) -> None:
    """``posecli report`` (the command is added to cli.py by the integrator)."""
    out = tmp_path / "report.html"
    command = [sys.executable, "-m", "posecli", "report", str(tracks_path)]
    done = subprocess.run(
        [*command, "--out", str(out), "--png", str(tmp_path / "png"), "--frames", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.exists() and (tmp_path / "png" / "person_1_angles.png").exists()
    again = subprocess.run([*command, "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "exists" in again.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    refused = subprocess.run(
        [sys.executable, "-m", "posecli", "report", str(empty), "--out", str(tmp_path / "e.html")],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 1 and "is empty" in refused.stderr
    assert "Traceback" not in refused.stderr
    nothing = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert nothing.returncode == 2
