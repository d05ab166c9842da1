"""A wheel built from the repository carries the bundled default model and finds it.

The wheel is built as a user would (``pip wheel .``, isolated build) and installed without its
dependencies into a fresh virtual environment, which borrows this environment's packages
(torch, OpenCV…) through a path file; posecli itself comes only from the wheel.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EVAL_IMAGES = REPO.parent / "shared" / "data" / "eval" / "cocomini-train" / "images"


def _run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "-q", "-w", folder)
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = folder.glob("posecli-*.whl")
    return path


def test_the_wheel_holds_the_default_model_and_the_native_decoder(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "posecli/_weights/posecli-default.pt" in names
    assert "posecli/_weights/posecli-refiner-int8.onnx" in names  # the video default refiner
    assert "posecli/_weights/README.md" in names
    assert any(name.startswith("posecli/decode/_native") for name in names)
    assert not any(name.startswith(("tests/", "bench/")) for name in names)


def test_an_installed_wheel_runs_images_with_the_default_model(wheel: Path, tmp_path: Path) -> None:
    if not EVAL_IMAGES.is_dir():
        pytest.skip(f"shared eval images not found at {EVAL_IMAGES}")
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    )
    (site / "borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")  # dependencies
    installed = _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    where = _run(python, "-c", "import posecli.registry as w; print(w.WEIGHTS_DIR)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    image = sorted(EVAL_IMAGES.glob("*.jpg"))[0]
    results = tmp_path / "poses.json"
    command = [python, "-m", "posecli", "images", image, "--json", results, "--long-side", "256"]
    finished = _run(*command, "-q", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    people = json.loads(results.read_text())
    assert people and all(len(person["keypoints"]) == 51 for person in people)
