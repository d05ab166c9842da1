"""Broken input, second round (issue 39): outputs that are not regular files, sizes that ask for
too much memory, values JSON cannot hold, caches and folders that cannot be written.

The cases run like ``test_bad_input.py``'s (its ``Case`` and ``Place``), with the error checked
at the level of file descriptors: a line that a library (OpenCV's FFmpeg) writes straight to
descriptor 2 counts. Beside them, what these outputs must do when the run succeeds: a device
or FIFO is written through and stays what it was, a long legal name is written, an ONNX cache
that cannot be used only costs a warning.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_bad_input import CASES as FIRST_ROUND
from test_bad_input import Case, Place, _leftovers
from tiny_model import TINY_CONFIG

from posecli import inference, onnxfile
from posecli.cli import run
from posecli.io import files, sources
from posecli.io.imagesize import stated_size
from posecli.model import build_network
from posecli.networks import PoseModel


def _device_node(path: Path, kind: int, major: int, minor: int) -> Path:
    """A device node like ``/dev/full`` (1, 7) at ``path``; skips where one cannot be made."""
    try:
        os.mknod(path, kind | 0o666, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("making device nodes needs root")
    return path


def _still(path: Path, kind: int) -> Callable[[], None]:
    """A check that ``path`` is still an entry of ``kind`` (``stat.S_IFCHR``…), not replaced."""

    def check() -> None:
        assert stat.S_IFMT(os.stat(path).st_mode) == kind, f"{path} was replaced"

    return check


def png_of_size(path: Path, width: int, height: int) -> Path:
    """A valid black greyscale PNG of ``width × height``, compressed row by row (a 20000 ×
    20000 one is 0.4 MB on disk and 400 MB decoded)."""
    compressor, row = zlib.compressobj(9), bytes(width + 1)  # filter byte 0, then black
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        signature + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


# ---------------------------------------------------------------------------------------------
# Outputs that are not regular files


def full_device_written_through(place: Place) -> Case:
    full = _device_node(place.root / "full", stat.S_IFCHR, 1, 7)  # what /dev/full is
    args = ["video", str(place.video), "--no-video", "--json", str(full), "--force", *place.fast]
    return Case(args, 1, "No space left on device", check=_still(full, stat.S_IFCHR))


def block_device_refused(place: Place) -> Case:
    disk = _device_node(place.root / "disk", stat.S_IFBLK, 7, 0)  # a loop device
    args = ["images", str(place.photos()), "--json", str(disk), "--force", *place.fast]
    return Case(args, 1, "is a block device", check=_still(disk, stat.S_IFBLK))


def mp4_into_a_fifo_refused(place: Place) -> Case:
    fifo = place.root / "live.mp4"
    os.mkfifo(fifo)
    args = ["video", str(place.video), "--out", str(fifo), "--force", *place.fast]
    return Case(args, 1, "not a regular file", check=_still(fifo, stat.S_IFIFO))


# Sizes and values


def huge_png(place: Place) -> Case:
    big = png_of_size(place.root / "big.png", 20000, 20000)

    def no_decoding(*args: object) -> None:
        raise AssertionError("the image was decoded before its size was checked")

    place.monkeypatch.setattr(sources.cv2, "imdecode", no_decoding)
    poses = place.root / "poses.json"
    args = ["images", str(big), "--json", str(poses), *place.fast]
    return Case(args, 1, "20000×20000 pixels (400 MP), over the limit of 150 MP", [poses])


def tiff_over_the_limit(place: Place) -> Case:  # TIFF: no header read, the decoded size counts
    image = place.root / "scan.tif"
    cv2.imwrite(str(image), np.zeros((300, 400, 3), np.uint8))
    poses = place.root / "poses.json"
    args = ["images", str(image), "--json", str(poses), "--max-megapixels", "0.1", *place.fast]
    return Case(args, 1, "--max-megapixels 1 reads it", absent=[poses])


def long_side_of_a_dot(place: Place) -> Case:
    dot = place.root / "dot.png"
    cv2.imwrite(str(dot), np.zeros((1, 1, 3), np.uint8))
    poses = place.root / "poses.json"
    args = ["images", str(dot), "--json", str(poses), *place.fast, "--long-side", "8192"]
    return Case(args, 2, "network input of 8192×8192 pixels", absent=[poses])


def long_side_of_a_video(place: Place) -> Case:  # known from the probe: refused before loading
    _no_model(place)
    args, out = place.video_out("--long-side", "8192")
    return Case(args, 2, "a 64×48 image would become a network input of 8192×6144", [out])


def end_at_infinity(place: Place) -> Case:
    tracks = place.root / "x.jsonl"
    args = ["video", str(place.video), "--no-video", "--json", str(tracks), "--end", "inf"]
    return Case([*args, *place.fast], 2, "--end", absent=[tracks])


def name_too_long(place: Place) -> Case:
    tracks = place.root / ("t" * 300)
    args = ["video", str(place.video), "--no-video", "--json", str(tracks), *place.fast]
    return Case(args, 1, "File name too long")


# Folders that take no files: refused before the model loads


def _no_model(place: Place) -> None:
    def load(options: object) -> None:
        raise AssertionError("the model was loaded before the outputs were checked")

    place.monkeypatch.setattr(inference, "load_estimator", load)


def into_proc(place: Place) -> Case:
    _no_model(place)
    return Case(["video", str(place.video), "-o", "/proc/x.mp4", *place.fast], 1, "system folder")


def labels_into_proc(place: Place) -> Case:
    teachers = place.root / "teachers"
    args = ["label", "--images", str(place.photos()), "--out", "/proc/labels.json"]
    return Case([*args, "--teachers", str(teachers), "--quiet"], 1, "system folder")


def folder_not_writable(place: Place) -> Case:
    _no_model(place)
    real_open = open

    def refused(file, mode="r", *args, **kwargs):  # what a folder of another user answers
        if "x" in mode and Path(file).parent == place.root / "root-owned":
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    (place.root / "root-owned").mkdir()
    place.monkeypatch.setattr(files, "open", refused, raising=False)
    out = place.root / "root-owned" / "clip.mp4"
    args = ["video", str(place.video), "-o", str(out), *place.fast]
    return Case(args, 1, "Permission denied", absent=[out])


# Wrong answers


def eval_without_people(place: Place) -> Case:
    annotations, images, dataset = place.people_set()
    dataset["annotations"] = []
    annotations.write_text(json.dumps(dataset))
    args, metrics = place.eval_args(annotations, images)
    return Case(args, 1, "annotates no person with keypoints: AP is undefined", [metrics])


def onnx_with_nan(place: Place) -> Case:
    network = build_network(TINY_CONFIG)
    with torch.no_grad():
        next(network.parameters()).view(-1)[0] = float("nan")
    model = onnxfile.export_onnx(
        PoseModel.from_network(network, TINY_CONFIG), place.root / "nan.onnx"
    )
    args, out = place.video_out("--model", str(model))
    return Case(args, 1, "NaN", absent=[out])


def unreachable_stream(place: Place) -> Case:
    tracks = place.root / "live.jsonl"
    args = ["webcam", "--camera", "http://127.0.0.1:1/stream", "--json", str(tracks)]
    return Case([*args, "--no-display", *place.fast], 1, "camera stream", absent=[tracks])


def cuda_missing(place: Place) -> Case:
    place.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args, out = place.video_out("--device", "cuda")
    return Case(args, 1, "CUDA is not available", absent=[out])


CASES: dict[str, Callable[[Place], Case]] = {
    "output: a character device (/dev/full) is written through": full_device_written_through,
    "output: a block device": block_device_refused,
    "output: an MP4 into a FIFO": mp4_into_a_fifo_refused,
    "images: 20000×20000 PNG": huge_png,
    "images: TIFF over --max-megapixels": tiff_over_the_limit,
    "images: --long-side 8192 on a 1×1 image": long_side_of_a_dot,
    "video: --long-side 8192": long_side_of_a_video,
    "video: --end inf": end_at_infinity,
    "video: --json name of 300 characters": name_too_long,
    "video: -o into /proc": into_proc,
    "video: -o into a folder that takes no files": folder_not_writable,
    "label: --out into /proc": labels_into_proc,
    "eval: annotations without people": eval_without_people,
    "model: ONNX with a NaN weight": onnx_with_nan,
    "webcam: stream that cannot be reached": unreachable_stream,
    "video: --device cuda without CUDA": cuda_missing,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_input_second_round(
    name: str,
    plain_video: Path,
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    case = CASES[name](Place(tmp_path, plain_video, checkpoint, monkeypatch))
    code = run(case.args)
    stderr = capfd.readouterr().err  # descriptor 2: what C libraries write there counts
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("posecli: error: "), stderr
    assert case.words in lines[0], lines[0]
    assert code == case.code, lines[0]
    for path in case.absent:
        assert not path.exists(), f"{path} was written by a failed run"
    assert _leftovers(tmp_path) == []
    if case.check is not None:
        case.check()


def test_the_bad_input_suite_counts_sixty_kinds_and_more() -> None:
    kinds = {*FIRST_ROUND, *CASES}
    assert len(kinds) == len(FIRST_ROUND) + len(CASES) >= 60


# ---------------------------------------------------------------------------------------------
# What these outputs do when the run succeeds


def _fast(checkpoint: Path) -> list[str]:
    return ["--model", str(checkpoint), "--box-size", "64", "--device", "cpu", "-q"] + [
        "--threads", "1",
    ]  # fmt: skip


def test_a_fifo_is_written_through_and_stays_a_fifo(
    plain_video: Path, checkpoint: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "tracks.jsonl"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()  # opening a FIFO for writing waits for its reader
    args = ["video", str(plain_video), "--no-video", "--json", str(fifo), *_fast(checkpoint)]
    assert run(args) == 0  # no --force: nothing is replaced
    reader.join(timeout=30)
    lines = received[0].decode().splitlines()
    assert "header" in json.loads(lines[0]) and len(lines) == 1 + 12
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert _leftovers(tmp_path) == []


def test_dev_null_takes_results_without_force_and_stays_a_device(
    checkpoint: Path, tmp_path: Path
) -> None:
    image = tmp_path / "photo.jpg"
    cv2.imwrite(str(image), np.zeros((40, 56, 3), np.uint8))
    assert run(["images", str(image), "--json", "/dev/null", *_fast(checkpoint)]) == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not Path("/dev/null.images.json").exists()  # no listing beside a device
    assert files.written_through("/dev/stdout") and files.written_through("/dev/fd/2")
    assert not files.written_through(image) and not files.written_through("/proc/self/status")


def test_a_legal_long_name_is_written(plain_video: Path, checkpoint: Path, tmp_path: Path) -> None:
    tracks = tmp_path / ("t" * 245 + ".jsonl")  # 251 characters: the temporary name is cut
    args = ["video", str(plain_video), "--no-video", "--json", str(tracks), *_fast(checkpoint)]
    assert run(args) == 0
    assert len(tracks.read_text().splitlines()) == 1 + 12
    assert _leftovers(tmp_path) == []
    stale = tmp_path / f".{'t' * 232}.4194303-0badcafe.part"  # a killed run's, cut the same way
    stale.write_bytes(b"")
    assert files.remove_stale_temporaries(tmp_path, tracks.name) == [stale]


def test_a_gif_in_a_folder_is_read_like_a_gif_named_alone(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "1.jpg"), np.zeros((40, 56, 3), np.uint8))
    ok, gif = cv2.imencode(".gif", np.zeros((40, 56, 3), np.uint8))
    assert ok
    (folder / "2.gif").write_bytes(gif.tobytes())
    poses = tmp_path / "poses.json"
    assert run(["images", str(folder), "--json", str(poses), *_fast(checkpoint)]) == 0
    listing = json.loads((tmp_path / "poses.images.json").read_text())
    assert [entry["file_name"] for entry in listing] == ["1.jpg", "2.gif"]


@pytest.mark.parametrize("broken", ["a file", "unreadable"])
def test_an_unusable_onnx_cache_falls_back_to_memory(
    broken: str,
    plain_video: Path,
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    cache = tmp_path / "cache"
    if broken == "a file":  # XDG_CACHE_HOME names a file: the folder cannot be made
        cache.write_text("not a folder")
    else:  # another user's home: even looking inside is refused (root may look anywhere)
        real_is_file = Path.is_file

        def refused(path: Path) -> bool:
            if cache in path.parents:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_is_file(path)

        monkeypatch.setattr(Path, "is_file", refused)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    tracks = tmp_path / "tracks.jsonl"
    args = ["video", str(plain_video), "--no-video", "--json", str(tracks), *_fast(checkpoint)]
    loud = [arg for arg in args if arg != "-q"]  # warnings shown
    assert run([*loud, "--backend", "onnxruntime"]) == 0
    assert len(tracks.read_text().splitlines()) == 1 + 12
    stderr = capfd.readouterr().err
    assert "ONNX cache not usable" in stderr and "Traceback" not in stderr


def test_image_headers_state_their_size() -> None:
    for suffix in (".png", ".jpg", ".gif", ".bmp", ".webp"):
        ok, data = cv2.imencode(suffix, np.zeros((30, 70, 3), np.uint8))
        assert ok and stated_size(data.tobytes()) == (70, 30), suffix
    ok, lossless = cv2.imencode(
        ".webp", np.zeros((30, 70, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101]
    )
    assert ok and stated_size(lossless.tobytes()) == (70, 30)
    assert stated_size(b"II*\x00 a TIFF is not read") is None
