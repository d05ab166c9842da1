"""``posecli batch``: outputs equal to the single-input commands', failures listed, resume, and
the same job on a real two-node Ray cluster on this machine (loopback only), a worker killed.

The default model at ``--long-side 128`` with low thresholds finds people even in test patterns,
so the outputs compared are not empty. Commands without Ray run in-process; with Ray, as a
process whose environment carries the ``RAY_*`` settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_ffmpeg

from posecli.batch import unique_stems
from posecli.cli import run

#: Small inputs, a quick run, and people found in test patterns (low thresholds).
#: Every default that differs between ``video`` and ``images`` (the refiner's flip test and
#: int8 file) given.
OPTIONS = ["--long-side", "128", "--no-refine", "--threads", "1", "--device", "cpu"] + [
    "--peak-threshold", "0.01", "--min-part-score", "0", "--max-people", "3", "--refine-flip",
    "--no-refine-int8",
]  # fmt: skip


def _video(path: Path, frames: int, pattern: str = "testsrc") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    source = f"{pattern}=size=96x64:rate=10:duration={frames / 10}"
    run_ffmpeg("-f", "lavfi", "-i", source, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def _images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image = np.random.default_rng(index).integers(0, 255, (64 + 8 * index, 80, 3), np.uint8)
        paths.append(folder / f"img{index + 1}.png")
        assert cv2.imwrite(str(paths[-1]), cv2.GaussianBlur(image, (9, 9), 3))
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two videos of one stem in two folders, one more, three images; all readable."""
    root = tmp_path_factory.mktemp("batch_inputs")
    _video(root / "a" / "walk.mp4", 8)
    _video(root / "b" / "walk.mp4", 6, pattern="testsrc2")
    _video(root / "a" / "run.mp4", 5, pattern="rgbtestsrc")
    _images(root / "a", 3)
    return root


def _expected(inputs: Path, tmp_path: Path) -> dict[str, bytes]:
    """The outputs of ``posecli video`` and ``posecli images`` on the same inputs, by name."""
    single = tmp_path / "single"
    videos = {"run": inputs / "a/run.mp4", "walk": inputs / "a/walk.mp4",
              "walk-2": inputs / "b/walk.mp4"}  # fmt: skip
    for stem, video in videos.items():
        tracks = str(single / f"{stem}.jsonl")
        assert run(["video", str(video), "--no-video", "--json", tracks, "-q", *OPTIONS]) == 0
    images = sorted((inputs / "a").glob("*.png"))
    results = str(single / "images.json")
    assert run(["images", *map(str, images), "--json", results, "-q", *OPTIONS]) == 0
    return {path.name: path.read_bytes() for path in single.iterdir()}


def _outputs(out: Path) -> dict[str, bytes]:
    """The result files of a batch folder (the summary aside); hidden files fail the test."""
    names = sorted(os.listdir(out))
    assert [name for name in names if name.startswith(".")] == []
    return {name: (out / name).read_bytes() for name in names if name != "batch_summary.json"}


def _batch_args(inputs: Path, out: Path) -> list[str]:
    return ["batch", str(inputs / "a"), str(inputs / "b" / "walk.mp4"), "--out", str(out)]


# ---------------------------------------------------------------------------------------------
# in one process


def test_batch_equals_video_and_images_commands_and_resumes(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run([*_batch_args(inputs, out), "-q", *OPTIONS]) == 0
    assert _outputs(out) == _expected(inputs, tmp_path)
    summary = json.loads((out / "batch_summary.json").read_text())
    assert (len(summary["done"]), summary["failed"], summary["skipped"]) == (6, [], [])
    capsys.readouterr()
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    assert run([*_batch_args(inputs, out), *OPTIONS]) == 0  # resumed: nothing left to do
    assert "0 inputs done, 0 failed, 6 skipped (done before)" in capsys.readouterr().err
    after = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    assert {name: t for name, t in after.items() if name != "batch_summary.json"} == {
        name: t for name, t in before.items() if name != "batch_summary.json"
    }


def test_a_corrupt_input_fails_alone_and_is_listed(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "in"
    shutil.copytree(inputs / "a", broken)
    (broken / "broken.mp4").write_bytes(b"not a video")
    (broken / "img9.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert run(["batch", str(broken), "--out", str(out), *OPTIONS]) == 1
    error = capsys.readouterr().err
    assert "2 of 7 inputs failed" in error
    summary = json.loads((out / "batch_summary.json").read_text())
    failed = {Path(entry["input"]).name for entry in summary["failed"]}
    assert failed == {"broken.mp4", "img9.png"} and len(summary["done"]) == 5
    assert sorted(_outputs(out)) == ["images.images.json", "images.json", "run.jsonl", "walk.jsonl"]
    listing = json.loads((out / "images.images.json").read_text())
    assert "error" in listing[-1] and listing[-1]["file_name"] == "img9.png"
    assert run(["batch", str(broken), "--out", str(out), "-q", *OPTIONS]) == 1  # retried only
    summary = json.loads((out / "batch_summary.json").read_text())
    assert [Path(entry["input"]).name for entry in summary["failed"]] == ["broken.mp4"]
    assert len(summary["skipped"]) == 6


def test_outputs_in_part_are_refused_before_the_model_loads(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "images.json").write_text("[]\n")  # no listing beside it: not a batch's
    args = ["batch", str(inputs / "a"), "--out", str(out), "--model", "no-such-model", *OPTIONS]
    assert run(args) == 1
    assert "images.json exists but not every output" in capsys.readouterr().err
    assert run([*args, "--ray", "local", "--workers", "-1"]) == 2
    assert run(["batch", str(inputs / "a"), "--out", str(out), "--workers", "2"]) == 2
    assert "--workers and --gpus-per-worker need --ray" in capsys.readouterr().err
    assert run(["batch", str(tmp_path / "missing.mp4"), "--out", str(out)]) == 1
    assert "input not found" in capsys.readouterr().err


def test_without_ray_installed_the_error_names_the_extra(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    args = ["batch", str(inputs / "a" / "run.mp4"), "--out", str(tmp_path), "--ray", "local"]
    assert run([*args, *OPTIONS]) == 1
    assert "pip install posecli[cluster]" in capsys.readouterr().err


def test_duplicate_stems_are_numbered_in_order() -> None:
    paths = [Path("a/x.mp4"), Path("b/x.mov"), Path("c/y.mp4"), Path("d/x.mp4")]
    assert unique_stems(paths) == ["x", "x-2", "y", "x-3"]


# ---------------------------------------------------------------------------------------------
# on a two-node Ray cluster


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_env() -> dict[str, str]:
    """This process's environment for Ray's processes (and posecli's on Ray): no usage stats,
    no token, quiet."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
            "RAY_DEDUP_LOGS": "0", "PYTHONPATH": ""}  # fmt: skip


def _processes() -> dict[int, tuple[int, str]]:
    """Every process (Linux ``/proc``): pid → (parent pid, start time)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            found[int(stat.parent.name)] = (int(fields[1]), fields[19])
    return found


def _descendants(pid: int) -> dict[int, str]:
    """The processes below ``pid``: pid → start time (which tells a reused pid)."""
    processes, found, frontier = _processes(), {}, {pid}
    while frontier:
        children = {child for child, (parent, _) in processes.items() if parent in frontier}
        found.update({child: processes[child][1] for child in children})
        frontier = children
    return found


def _signal(pids: dict[int, str], number: int) -> None:
    """Send ``number`` to each of ``pids`` still the process it was (same start time)."""
    alive = _processes()
    for pid, started in pids.items():
        if pid in alive and alive[pid][1] == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)


def _stop(nodes: list[subprocess.Popen]) -> None:
    """Stop the node processes: SIGTERM to every ``ray start --block`` and the processes they
    started (known by pid before any is reparented), SIGKILL to those left after 20 s."""
    pids = {pid: started for node in nodes for pid, started in _descendants(node.pid).items()}
    for node in reversed(nodes):
        node.terminate()
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for node in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=max(0.1, deadline - time.monotonic()))
    for node in nodes:
        node.kill()  # a no-op on one that exited
        node.wait()
    _signal(pids, signal.SIGKILL)


def _wait_for_nodes(address: str, count: int, nodes: list[subprocess.Popen]) -> None:
    """Until the cluster counts ``count`` live nodes (a short driver asks it)."""
    ask = f"import ray; ray.init(address='{address}'); print(len([n for n in ray.nodes() if n['Alive']]))"  # noqa: E501
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert all(node.poll() is None for node in nodes), "a Ray node exited"
        answer = subprocess.run([sys.executable, "-c", ask], env=_ray_env(),
                                capture_output=True, text=True, timeout=90)  # fmt: skip
        if answer.stdout.strip() == str(count):
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster has not {count} nodes: {answer.stderr[-2000:]}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head and one worker node, 1 CPU each, on 127.0.0.1; its address. Stopped (their
    processes, by the ``ray start --block`` parents) whatever happens."""
    pytest.importorskip("ray")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit
    address = f"127.0.0.1:{_free_port()}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
              "--disable-usage-stats", "--block"]  # fmt: skip
    head = [ray_cli, "start", "--head", "--port", address.split(":")[1], "--temp-dir", temp,
            "--include-dashboard", "false", *common]  # fmt: skip
    worker = [ray_cli, "start", "--address", address, *common]
    nodes: list[subprocess.Popen] = []
    log = open(Path(temp) / "nodes.log", "wb")  # noqa: SIM115 — closed in finally
    try:
        nodes.append(subprocess.Popen(head, env=_ray_env(), stdout=log, stderr=log))
        _wait_for_nodes(address, 1, nodes)
        nodes.append(subprocess.Popen(worker, env=_ray_env(), stdout=log, stderr=log))
        _wait_for_nodes(address, 2, nodes)
        yield address
    finally:
        _stop(nodes)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _posecli(args: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "posecli", *args, *OPTIONS]
    return subprocess.Popen(command, env=_ray_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_on_a_two_node_cluster_outputs_equal_the_single_process_commands(
    cluster: str, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = _posecli([*_batch_args(inputs, out), "--ray", cluster, "--workers", "2", "-q"])
    _, error = job.communicate(timeout=300)
    assert job.returncode == 0, error
    assert _outputs(out) == _expected(inputs, tmp_path)
    summary = json.loads((out / "batch_summary.json").read_text())
    assert (len(summary["done"]), summary["failed"]) == (6, [])


def _kill_a_video_worker(out: Path, job: subprocess.Popen) -> int:
    """SIGKILL the Ray worker writing a video (its pid is in its staged file's name) once it
    wrote some frames; return that pid."""
    staging = out / ".posecli-batch"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        for entry in os.listdir(staging) if staging.is_dir() else []:
            match = re.fullmatch(r"\.\.long\.jsonl\.(\d+)-[0-9a-f]{8}\.part\.\d+-[0-9a-f]{8}\.part",
                                 entry)  # fmt: skip
            if match and (staging / entry).stat().st_size > 2000:  # header and some frames
                os.kill(int(match[1]), signal.SIGKILL)
                return int(match[1])
        time.sleep(0.05)
    raise AssertionError("no video worker to kill: " + (job.stderr.read() if job.stderr else ""))


def test_a_worker_killed_mid_video_is_retried_and_leaves_nothing_partial(
    cluster: str, tmp_path: Path
) -> None:
    _video(tmp_path / "in" / "long.mp4", 150)
    _video(tmp_path / "in" / "short.mp4", 4, pattern="testsrc2")
    out = tmp_path / "out"
    job = _posecli(["batch", str(tmp_path / "in"), "--out", str(out), "--ray", cluster, "-q"])
    _kill_a_video_worker(out, job)
    _, error = job.communicate(timeout=300)
    assert job.returncode == 0, error
    assert sorted(_outputs(out)) == ["long.jsonl", "short.jsonl"]
    tracks = str(tmp_path / "long.jsonl")
    assert run(["video", str(tmp_path / "in/long.mp4"), "--no-video", "--json", tracks, "-q",
                *OPTIONS]) == 0  # fmt: skip
    assert (out / "long.jsonl").read_bytes() == Path(tracks).read_bytes()
    summary = json.loads((out / "batch_summary.json").read_text())
    assert (len(summary["done"]), summary["failed"]) == (2, [])
