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
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_ffmpeg

from posecli.batch import LOCK_NAME, batch_lock, unique_stems
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


def test_a_corrupt_input_fails_alone_is_listed_and_retried_by_the_next_run(
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
    assert run(["batch", str(broken), "--out", str(out), "-q", *OPTIONS]) == 1  # both retried
    summary = json.loads((out / "batch_summary.json").read_text())
    assert {Path(entry["input"]).name for entry in summary["failed"]} == failed
    assert len(summary["skipped"]) == 5 and "img9.png" not in str(summary["skipped"])
    shutil.copy(inputs / "a" / "run.mp4", broken / "broken.mp4")  # both mended
    _images(tmp_path / "mended", 4)
    shutil.copy(tmp_path / "mended" / "img4.png", broken / "img9.png")
    assert run(["batch", str(broken), "--out", str(out), "-q", *OPTIONS]) == 0
    summary = json.loads((out / "batch_summary.json").read_text())
    done = {Path(entry["input"]).name for entry in summary["done"]}
    assert (done, summary["failed"], len(summary["skipped"])) == (failed, [], 5)
    assert (out / "broken.jsonl").read_bytes().split(b"\n")[1:] == (
        (out / "run.jsonl").read_bytes().split(b"\n")[1:]  # the same frames; headers: sources
    )
    results = tmp_path / "single" / "images.json"  # the earlier images' results kept, in order
    assert run(["images", str(broken), "--json", str(results), "-q", *OPTIONS]) == 0
    for name in ("images.json", "images.images.json"):
        assert (out / name).read_bytes() == (results.parent / name).read_bytes()


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
    assert "--workers, --gpus-per-worker and --ray-timeout need --ray" in capsys.readouterr().err
    assert run(["batch", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "new")]) == 1
    assert "input not found" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


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
    assert unique_stems([Path("images.mp4")], {"images"}) == ["images-2"]


def test_frame_range_and_openpose_equal_the_video_and_images_commands(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ["--start", "0.2", "--end", "0.7", "--every", "2"]
    out, single = tmp_path / "out", tmp_path / "single"
    images = sorted((inputs / "a").glob("*.png"))
    args = ["batch", str(inputs / "a" / "walk.mp4"), *map(str, images), "--out", str(out)]
    assert run([*args, "--format", "openpose", *settings, "-q", *OPTIONS]) == 0
    video = [str(inputs / "a" / "walk.mp4"), "--no-video", "--json", str(single / "walk.jsonl")]
    assert run(["video", *video, "--format", "openpose", *settings, "-q", *OPTIONS]) == 0
    results = ["--json", str(single / "images.json"), "--format", "openpose"]
    assert run(["images", *map(str, images), *results, "-q", *OPTIONS]) == 0
    produced = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    expected = sorted(path.relative_to(single) for path in single.rglob("*") if path.is_file())
    assert [str(path) for path in produced if path.name != "batch_summary.json"] == [
        str(path) for path in expected
    ]
    assert len(list((out / "walk_openpose").iterdir())) == 3  # frames 2, 4, 6 of 0.2 s–0.7 s
    for path in expected:
        assert (out / path).read_bytes() == (single / path).read_bytes(), path
    capsys.readouterr()
    bad = ["batch", str(inputs / "a"), "--out", str(tmp_path / "o"), "--model", "no-such-model"]
    assert run([*bad, "--start", "2", "--end", "1"]) == 2  # before the model
    assert "--end (1.0) must be after --start (2.0)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ray_settings_are_checked_once_and_need_ray(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["batch", str(inputs / "a"), "--out", str(tmp_path / "out")]
    for setting in (["--workers", "0"], ["--gpus-per-worker", "0"], ["--ray-timeout", "5"]):
        assert run([*args, *setting]) == 2, setting
        assert "need --ray" in capsys.readouterr().err
    for setting in (["--workers", "-1"], ["--gpus-per-worker", "nan"], ["--ray-timeout", "0"]):
        assert run([*args, "--ray", "local", *setting]) == 2, setting
        assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "out").exists()


class _SilentRay(types.ModuleType):
    """A ``ray`` whose ``init`` never answers (until released), like one dialling a host that
    does not answer."""

    def __init__(self) -> None:
        super().__init__("ray")
        self.released = threading.Event()

    def init(self, **settings: object) -> None:
        self.released.wait(60)

    def shutdown(self) -> None:
        pass


def test_a_ray_that_does_not_answer_times_out_in_one_line(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    silent = _SilentRay()
    monkeypatch.setitem(sys.modules, "ray", silent)
    args = ["batch", str(inputs / "a" / "run.mp4"), "--out", str(tmp_path / "out")]
    started = time.monotonic()
    try:
        assert run([*args, "--ray", "auto", "--ray-timeout", "0.5", *OPTIONS]) == 1
    finally:
        silent.released.set()
    assert time.monotonic() - started < 10
    error = capsys.readouterr().err
    assert error == "posecli: error: cannot reach the Ray cluster auto: no answer in 0.5 s\n"
    assert sorted(os.listdir(tmp_path / "out")) == ["batch_summary.json"]  # nothing locked


def test_an_address_where_nothing_listens_fails_at_once_in_one_line(
    inputs: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    args = ["batch", str(inputs / "a" / "run.mp4"), "--out", str(tmp_path), "--ray"]
    started = time.monotonic()
    job = subprocess.run([sys.executable, "-m", "posecli", *args, f"127.0.0.1:{_free_port()}"],
                         env=_ray_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert job.returncode == 1 and time.monotonic() - started < 30
    assert job.stderr.count("\n") == 1 and "cannot reach the Ray cluster 127.0.0.1:" in job.stderr


def test_one_job_per_folder_and_a_killed_job_leaves_no_lock(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["batch", str(inputs / "a" / "run.mp4"), "--out", str(out), "-q", *OPTIONS]
    with batch_lock(out):  # as a job running into it
        assert run([*args, "--model", "no-such-model"]) == 1  # refused before the model
    assert capsys.readouterr().err == (
        f"posecli: error: another posecli batch job is writing into {out} (one job per folder "
        "at a time)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                               "from posecli.batch import batch_lock\n"
                               "with batch_lock(__import__('pathlib').Path(sys.argv[1])):\n"
                               " print('locked', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    assert run(args) == 1
    holder.kill()  # SIGKILL: no cleanup; its lock file stays
    holder.wait()
    holder.stdout.close()
    assert (out / LOCK_NAME).exists()
    assert run(args) == 0
    assert sorted(_outputs(out)) == ["run.jsonl"]  # no hidden files: lock and staging gone


def test_sigterm_writes_the_summary_with_the_inputs_left_and_exits_143(tmp_path: Path) -> None:
    _video(tmp_path / "in" / "a.mp4", 4)
    _video(tmp_path / "in" / "b.mp4", 600, pattern="testsrc2")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "posecli", "batch", str(tmp_path / "in"), "--out", str(out)]
    job = subprocess.Popen([*command, "-q", *OPTIONS], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "a.jsonl").exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.02)
    job.send_signal(signal.SIGTERM)
    _, error = job.communicate(timeout=60)
    assert job.returncode == 143, error
    summary = json.loads((out / "batch_summary.json").read_text())
    assert [Path(entry["input"]).name for entry in summary["done"]] == ["a.mp4"]
    assert summary["interrupted"] is True and summary["failed"] == []
    assert [Path(name).name for name in summary["pending"]] == ["b.mp4"]
    assert sorted(_outputs(out)) == ["a.jsonl"]  # nothing partial, no staging, no lock


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
    assert error == ""  # quiet: not a line of Ray's (its pose actors warned of their arguments)
    assert _outputs(out) == _expected(inputs, tmp_path)
    summary = json.loads((out / "batch_summary.json").read_text())
    assert (len(summary["done"]), summary["failed"]) == (6, [])


def _kill_a_video_worker(out: Path, job: subprocess.Popen) -> int:
    """SIGKILL the Ray worker writing a video (its pid is in its staged file's name, in the
    video's folder in the staging folder) once it wrote some frames; return that pid."""
    staging = out / ".posecli-batch"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        for entry in staging.glob("long.*/.long.jsonl.*.part"):
            match = re.fullmatch(r"\.long\.jsonl\.(\d+)-[0-9a-f]{8}\.part", entry.name)
            with contextlib.suppress(OSError):  # renamed or removed meanwhile
                if match and entry.stat().st_size > 2000:  # header and some frames
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
