"""Sources: video files (ffmpeg), still images (EXIF, grey, alpha, 16-bit), cameras."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from posecli.errors import InputError, UsageError
from posecli.io.cameras import CameraSource
from posecli.io.exif import exif_orientation
from posecli.io.sources import ImageSource, VideoSource, expand_image_inputs, image_ids, load_image

# ---------------------------------------------------------------------------------------------
# Video


def test_video_source_yields_every_frame_with_its_time(plain_video: Path) -> None:
    with VideoSource(plain_video) as source:
        frames = list(source)
    assert source.info.frame_rate == Fraction(10)
    assert (source.info.width, source.info.height) == (64, 48)
    assert not source.info.has_audio
    assert source.expected_frames() == 12
    assert [f.index for f in frames] == list(range(12))
    assert [f.time for f in frames] == pytest.approx([i / 10 for i in range(12)])
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert len({f.image.tobytes() for f in frames}) == 12  # testsrc: every frame differs


def test_video_source_frames_are_rgb(marker_video: Path) -> None:
    image = next(iter(VideoSource(marker_video))).image
    red, green, blue = image[5, 5].astype(int)
    assert red > 200 and green < 50 and blue < 50
    assert image[40, 50].max() < 30


def test_every_start_and_end_select_frames(plain_video: Path) -> None:
    every = list(VideoSource(plain_video, every=3))
    assert [f.index for f in every] == [0, 3, 6, 9]
    assert [f.time for f in every] == pytest.approx([0.0, 0.3, 0.6, 0.9])

    started = list(VideoSource(plain_video, start=0.5))
    assert [f.index for f in started] == list(range(5, 12))
    assert started[0].time == pytest.approx(0.5)
    reference = list(VideoSource(plain_video))
    assert np.array_equal(started[0].image, reference[5].image)  # seeking is frame-accurate

    ended = list(VideoSource(plain_video, start=0.2, end=0.55, every=2))
    assert [f.index for f in ended] == [2, 4]


def test_invalid_ranges_are_usage_errors(plain_video: Path) -> None:
    with pytest.raises(UsageError):
        VideoSource(plain_video, every=0)
    with pytest.raises(UsageError):
        VideoSource(plain_video, start=2.0, end=1.0)
    with pytest.raises(InputError, match="no video frames"):
        list(VideoSource(plain_video, start=5.0))


def test_rotation_metadata_gives_upright_frames(rotated_video: Path, marker_video: Path) -> None:
    source = VideoSource(rotated_video)
    assert source.info.rotation == 90
    assert (source.info.width, source.info.height) == (48, 64)
    upright = next(iter(source)).image
    stored = next(iter(VideoSource(marker_video))).image
    assert upright.shape == (64, 48, 3)
    # Rotating 90° counter-clockwise takes the top-left corner to the bottom-left.
    assert upright[-5, 5, 0] > 200 and upright[-5, 5, 1] < 50
    assert upright[5, 5, 0] < 50
    difference = np.abs(upright.astype(int) - np.rot90(stored, 1).astype(int))
    assert difference.mean() < 2


def test_variable_frame_rate_keeps_timestamps(vfr_video: Path, vfr_times: list[float]) -> None:
    frames = list(VideoSource(vfr_video))
    assert [f.index for f in frames] == list(range(16))
    assert [f.time for f in frames] == pytest.approx(vfr_times, abs=1e-3)


def test_closing_mid_stream_stops_ffmpeg(long_video: Path) -> None:
    source = VideoSource(long_video)
    frames = iter(source)
    next(frames)
    next(frames)
    process = source._process.process
    assert process.poll() is None  # ffmpeg is blocked on the full pipe
    source.close()
    assert process.poll() is not None
    assert list(frames) == []


def test_close_from_another_thread_ends_iteration(long_video: Path) -> None:
    source = VideoSource(long_video)
    seen = []

    def consume() -> None:
        for frame in source:
            seen.append(frame.index)
            time.sleep(0.01)

    reader = threading.Thread(target=consume)
    reader.start()
    while len(seen) < 3:
        time.sleep(0.005)
    source.close()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert 3 <= len(seen) < 200
    assert source._process.process.poll() is not None


@pytest.mark.parametrize("content", [None, b"", b"\x00garbage\xff" * 100])
def test_bad_video_inputs_raise_input_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as raised:
        VideoSource(path)
    message = str(raised.value)
    assert "clip.mp4" in message and "\n" not in message


# ---------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencv(
    tmp_path: Path, corner_image: np.ndarray, exif_jpeg, orientation: int
) -> None:
    data = exif_jpeg(corner_image, orientation)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    assert exif_orientation(data) == orientation
    expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    loaded = load_image(path)
    assert loaded.flags["C_CONTIGUOUS"]
    assert np.array_equal(loaded, expected)


def test_exif_orientation_six_turns_the_image_clockwise(
    tmp_path: Path, corner_image: np.ndarray, exif_jpeg
) -> None:
    path = tmp_path / "phone.jpg"
    path.write_bytes(exif_jpeg(corner_image, 6))
    image = load_image(path)
    assert image.shape == (60, 40, 3)
    red, green, blue = (image[5, -5], image[-5, -5], image[5, 5])  # corners after the turn
    assert red[0] > 200 and green[1] > 200 and blue[2] > 200


def test_png_with_alpha_and_exif_orientation(tmp_path: Path, exif_png) -> None:
    bgra = np.zeros((20, 30, 4), dtype=np.uint8)
    bgra[..., 2] = 255  # red
    bgra[:, :10, 3] = 255  # opaque left third
    bgra[:, 10:20, 3] = 128  # half transparent middle
    path = tmp_path / "sticker.png"
    path.write_bytes(exif_png(bgra, 8))
    image = load_image(path)
    assert image.shape == (30, 20, 3)
    columns = np.rot90(np.arange(600).reshape(20, 30), 1) % 30  # stored column of each pixel
    left_third = columns < 10
    middle = (columns >= 10) & (columns < 20)
    right = columns >= 20
    assert (image[left_third] == (255, 0, 0)).all()
    assert (image[right] == (255, 255, 255)).all()  # transparent: composited on white
    assert np.abs(image[middle].astype(int) - (255, 127, 127)).max() <= 1


def test_grey_and_16_bit_images(tmp_path: Path) -> None:
    grey = np.array([[0, 128, 255]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    image = load_image(tmp_path / "grey.png")
    assert image.shape == (1, 3, 3) and (image == grey[..., None]).all()

    deep = np.array([[[0, 32896, 65535], [65535, 0, 257]]], dtype=np.uint16)  # BGR
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    image = load_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8
    assert image.tolist() == [[[255, 128, 0], [1, 0, 255]]]  # RGB, scaled by 255/65535

    grey16 = np.array([[1000, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.tif"), grey16)
    assert load_image(tmp_path / "grey16.tif").tolist() == [[[4, 4, 4], [255, 255, 255]]]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jpg", None, "missing.jpg"),
        ("empty.jpg", b"", "empty"),
        ("broken.jpg", b"\xff\xd8 not really a jpeg", "cannot decode"),
    ],
)
def test_bad_images_raise_input_error(tmp_path: Path, name: str, content, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as raised:
        load_image(path)
    assert name in str(raised.value)


def test_expand_image_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("img10.png", "img2.png", "img1.JPG", "notes.txt"):
        (folder / name).write_bytes(b"x")
    (tmp_path / "extra.png").write_bytes(b"x")
    names = [p.name for p in expand_image_inputs([folder])]
    assert names == ["img1.JPG", "img2.png", "img10.png"]
    names = [p.name for p in expand_image_inputs([str(folder / "img*.png"), folder / "img2.png"])]
    assert names == ["img2.png", "img10.png"]  # glob and file de-duplicated, natural order
    assert len(expand_image_inputs([folder, tmp_path / "extra.png"])) == 4
    with pytest.raises(InputError, match="no files match"):
        expand_image_inputs([str(tmp_path / "*.bmp")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images in directory"):
        expand_image_inputs([tmp_path / "empty"])
    with pytest.raises(InputError, match="not found"):
        expand_image_inputs([tmp_path / "nope.jpg"])


def test_image_ids_from_coco_names_or_positions() -> None:
    coco = [Path("000000123456.jpg"), Path("COCO_val2014_000000000042.jpg")]
    assert image_ids(coco) == [(123456, "000000123456.jpg"), (42, "COCO_val2014_000000000042.jpg")]
    mixed = [Path("000000000001.jpg"), Path("holiday.jpg")]
    assert image_ids(mixed) == [(0, "000000000001.jpg"), (1, "holiday.jpg")]
    clashing = [Path("1.jpg"), Path("001.png")]
    assert [image_id for image_id, _ in image_ids(clashing)] == [0, 1]


def test_image_source_iterates_in_order(tmp_path: Path) -> None:
    for index, name in enumerate(["000000000007.png", "000000000003.png"]):
        cv2.imwrite(str(tmp_path / name), np.full((4, 6), index * 100, dtype=np.uint8))
    source = ImageSource([tmp_path])
    frames = list(source)
    assert len(source) == 2
    assert source.ids == [(3, "000000000003.png"), (7, "000000000007.png")]
    assert [(f.index, f.name, f.time) for f in frames] == [
        (0, "000000000003.png", 0.0),
        (1, "000000000007.png", 0.0),
    ]
    assert frames[0].image[0, 0].tolist() == [100, 100, 100]


# ---------------------------------------------------------------------------------------------
# Cameras


@pytest.mark.parametrize("camera", [99, "/nonexistent/camera.mjpg"])
def test_no_camera_is_an_input_error(camera) -> None:
    with pytest.raises(InputError, match="could not be opened"):
        CameraSource(camera)


def test_camera_delivers_the_newest_frame_and_drops_stale_ones(long_video: Path) -> None:
    with CameraSource(str(long_video)) as camera:
        frames = iter(camera)
        first = next(frames)
        time.sleep(0.5)  # the grabber reads all 200 frames meanwhile
        rest = list(frames)
    indices = [first.index] + [f.index for f in rest]
    assert indices == sorted(set(indices))
    assert indices[-1] == 199  # the newest frame is never lost
    assert len(indices) < 200 and len(indices) + camera.dropped == 200
    assert first.time == 0.0 and rest[-1].time > 0
    assert first.image.shape == (48, 64, 3) and first.image.dtype == np.uint8
