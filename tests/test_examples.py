"""Each script of examples/ runs on small generated inputs with a tiny random model checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from schema import TRACK_LINE_SCHEMA, validate_json
from tiny_model import save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def start_example(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    """Run ``examples/NAME`` as a user would, with posecli importable from this checkout."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # test runs share the cores: more threads only contend
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=REPO,
    )


def run_example(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    """:func:`start_example`, which must succeed."""
    done = start_example(name, *args)
    assert done.returncode == 0, done.stderr
    return done


def test_examples_are_short() -> None:
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert [p.name for p in scripts] == [
        "image_to_poses.py",
        "video_to_tracks.py",
        "webcam_loop.py",
    ]
    for script in scripts:
        assert len(script.read_text().splitlines()) < 40, script.name


def test_image_to_poses(checkpoint: Path, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(image), pixels)
    annotated = tmp_path / "annotated.png"
    done = run_example("image_to_poses.py", image, "--model", checkpoint, "--annotated", annotated)
    count = int(done.stdout.split()[0])
    assert done.stdout.splitlines()[0] == f"{count} people in {image}"
    assert len(done.stdout.splitlines()) == 1 + count
    assert cv2.imread(str(annotated)).shape == (48, 64, 3)


def test_video_to_tracks(checkpoint: Path, plain_video: Path, tmp_path: Path) -> None:
    tracks = tmp_path / "tracks.jsonl"
    done = run_example("video_to_tracks.py", plain_video, tracks, "--model", checkpoint)
    assert done.stdout.startswith("12 frames at ")
    lines = [json.loads(line) for line in tracks.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(12))
    for line in lines:
        validate_json(line, TRACK_LINE_SCHEMA)


def test_webcam_loop_on_a_video_file(checkpoint: Path, plain_video: Path) -> None:
    done = run_example(
        "webcam_loop.py", "--camera", plain_video, "--model", checkpoint, "--no-display"
    )
    lines = done.stdout.splitlines()
    assert 1 <= len(lines) <= 12  # the newest frame each time: stale ones are skipped
    indices = [int(line.split()[1]) for line in lines]
    assert indices == sorted(set(indices))
    assert all(line.endswith(" people") for line in lines)


def test_an_unknown_model_is_one_clear_line(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    done = start_example("image_to_poses.py", image, "--model", "nope")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: unknown model 'nope'")
