"""Shared fixtures: tiny test videos made with the bundled ffmpeg, images, synthetic skeletons."""

from __future__ import annotations

import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch

#: Frame times of the variable-frame-rate test video: 1/30 s apart, then 1/30 s + 50 ms more.
VFR_TIMES = [n / 30 + max(0, n - 10) * 0.05 for n in range(16)]


def run_ffmpeg(*args: str) -> None:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)


def _testsrc(frames: int, rate: int = 10, size: str = "64x48") -> list[str]:
    """An ffmpeg input of ``frames`` testsrc frames (its duration fixes the count)."""
    return ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={frames / rate}"]


_H264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder for the generated test videos."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def plain_video(media: Path) -> Path:
    """64×48 testsrc, 10 fps, 12 frames, no audio."""
    path = media / "plain.mp4"
    run_ffmpeg(*_testsrc(12), *_H264, str(path))
    return path


@pytest.fixture(scope="session")
def long_video(media: Path) -> Path:
    """64×48 testsrc, 25 fps, 200 frames (more than a pipe buffer holds), no audio."""
    path = media / "long.mp4"
    run_ffmpeg(*_testsrc(200, rate=25), *_H264, str(path))
    return path


@pytest.fixture(scope="session")
def audio_video(media: Path) -> Path:
    """64×48 testsrc, 10 fps, 12 frames, with a 440 Hz AAC sine track."""
    path = media / "audio.mp4"
    sine = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1.2"]
    run_ffmpeg(*_testsrc(12), *sine, *_H264, "-c:a", "aac", str(path))
    return path


@pytest.fixture(scope="session")
def pcm_audio_video(media: Path) -> Path:
    """64×48 testsrc, 10 fps, 12 frames, with PCM audio in Matroska (not copied into MP4)."""
    path = media / "pcm.mkv"
    sine = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1.2"]
    run_ffmpeg(*_testsrc(12), *sine, *_H264, "-c:a", "pcm_s16le", str(path))
    return path


@pytest.fixture(scope="session")
def marker_video(media: Path) -> Path:
    """64×48 black frames with a red 16×12 box in the top-left corner, 10 fps, 5 frames."""
    path = media / "marker.mp4"
    box = "color=c=black:s=64x48:r=10,drawbox=x=0:y=0:w=16:h=12:color=red:t=fill"
    run_ffmpeg("-f", "lavfi", "-i", box, "-frames:v", "5", *_H264, str(path))
    return path


@pytest.fixture(scope="session")
def rotated_video(media: Path, marker_video: Path) -> Path:
    """``marker_video`` with a display matrix saying: rotate 90° counter-clockwise to show."""
    path = media / "rotated.mp4"
    run_ffmpeg("-display_rotation", "90", "-i", str(marker_video), "-c", "copy", str(path))
    return path


@pytest.fixture(scope="session")
def vfr_video(media: Path) -> Path:
    """64×48 testsrc, 16 frames at the times :data:`VFR_TIMES` (variable frame rate)."""
    path = media / "vfr.mp4"
    timing = "settb=1/90000,setpts='(N/30+gt(N\\,10)*(N-10)*0.05)/TB'"
    run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=30,{timing}", "-frames:v", "16",
        "-fps_mode", "passthrough", "-enc_time_base", "1/90000",
        "-video_track_timescale", "90000", *_H264, str(path),
    )  # fmt: skip
    return path


@pytest.fixture
def vfr_times() -> list[float]:
    return list(VFR_TIMES)


# ---------------------------------------------------------------------------------------------
# Images


def exif_tiff(orientation: int) -> bytes:
    """A big-endian TIFF structure whose first IFD holds only an Orientation tag."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    return b"MM\x00*" + struct.pack(">IH", 8, 1) + entry + struct.pack(">I", 0)


def jpeg_with_orientation(bgr: np.ndarray, orientation: int) -> bytes:
    """JPEG bytes of a BGR image with an EXIF APP1 segment carrying ``orientation``."""
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    payload = b"Exif\x00\x00" + exif_tiff(orientation)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = encoded.tobytes()
    return data[:2] + app1 + data[2:]


def png_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """PNG bytes of an OpenCV-layout image with an ``eXIf`` chunk carrying ``orientation``."""
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    data = encoded.tobytes()
    exif = exif_tiff(orientation)
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    header_end = 8 + 25  # signature + IHDR chunk
    return data[:header_end] + chunk + data[header_end:]


@pytest.fixture
def exif_jpeg() -> Callable[[np.ndarray, int], bytes]:
    """:func:`jpeg_with_orientation`."""
    return jpeg_with_orientation


@pytest.fixture
def exif_png() -> Callable[[np.ndarray, int], bytes]:
    """:func:`png_with_orientation`."""
    return png_with_orientation


@pytest.fixture
def corner_image() -> np.ndarray:
    """40×60 BGR image: red top-left, green top-right, blue bottom-left corner squares."""
    image = np.full((40, 60, 3), 40, dtype=np.uint8)
    image[:10, :10] = (0, 0, 255)
    image[:10, -10:] = (0, 255, 0)
    image[-10:, :10] = (255, 0, 0)
    return image


# ---------------------------------------------------------------------------------------------
# Synthetic people

#: A standing person 1 unit tall, feet at y = 0.5, head up, facing the viewer (COCO order, x, y).
_SKELETON = np.array(
    [
        [0.0, -0.45], [0.03, -0.47], [-0.03, -0.47], [0.07, -0.45], [-0.07, -0.45],  # head
        [0.12, -0.3], [-0.12, -0.3], [0.16, -0.1], [-0.16, -0.1], [0.18, 0.08], [-0.18, 0.08],
        [0.08, 0.02], [-0.08, 0.02], [0.09, 0.26], [-0.09, 0.26], [0.09, 0.5], [-0.09, 0.5],
    ]
)  # fmt: skip


@pytest.fixture
def skeleton() -> Callable[..., np.ndarray]:
    """``skeleton(x, y, height, confidence=0.9)`` → ``(17, 3)`` float32 COCO keypoints."""

    def make(x: float, y: float, height: float, confidence: float = 0.9) -> np.ndarray:
        points = _SKELETON * height + np.array([x, y])
        scores = np.full((17, 1), confidence)
        return np.concatenate([points, scores], axis=1).astype(np.float32)

    return make


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    """``--threads`` sets torch's thread count for the process: restore it for other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained IMHN checkpoint (tests/tiny_model.py), shared by the CLI tests."""
    from tiny_model import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The onnxruntime backend's export cache (``$XDG_CACHE_HOME/posecli/onnx``) in a session
    folder, not the user's home; CLI subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder / "posecli" / "onnx"
