"""How fast is ``posecli batch`` on Ray with 1 and 2 workers, and what does Ray add per input?

Cuts ``--videos`` clips of ``--seconds`` from a video (default: the shared pedestrians footage,
else an ffmpeg test pattern), starts a one-node Ray cluster on this machine (``ray start --head
--block``, loopback, ``--cpus`` CPUs, its own temp dir; stopped at the end), and runs the same
job three times through the library (``posecli.batch.plan_batch`` / ``run_batch``): in this
process without Ray, then on the cluster with 1 and with 2 workers. Each figure is the job's
``BatchSummary.seconds`` (model loading and connecting to Ray included, Python start-up not),
after a warm-up job that fills the onnxruntime backend's export cache.

Prints inputs/s and frames/s of each run, the 2-worker / 1-worker ratio, and Ray's overhead per
input: (1-worker seconds - in-process seconds) / inputs.

Usage: .venv/bin/python bench/batch_speed.py [--videos 6] [--seconds 2] [--long-side 192]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

from posecli.batch import Cluster, plan_batch, run_batch
from posecli.options import inference_options

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "media"
FOOTAGE = MEDIA / "pedestrians_vtest.avi"


def make_clips(folder: Path, count: int, seconds: float) -> int:
    """``count`` clips of ``seconds`` at 10 fps, 192 px wide, in ``folder``; frames in all."""
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    for index in range(count):
        if FOOTAGE.is_file():
            source = ["-ss", str(index * seconds), "-t", str(seconds), "-i", str(FOOTAGE)]
        else:
            source = ["-f", "lavfi", "-i", f"testsrc2=size=192x144:rate=10:duration={seconds}"]
        out = folder / f"clip{index}.mp4"
        scale = ["-vf", "fps=10,scale=192:-2", "-c:v", "libx264", "-pix_fmt", "yuv420p"]
        subprocess.run([*ffmpeg, *source, *scale, str(out)], check=True)
    return round(count * seconds * 10)


@contextlib.contextmanager
def ray_head(cpus: int):
    """A one-node Ray cluster on 127.0.0.1 (``ray start --head --block``); yields its address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--port",
        str(port),
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        str(cpus),
        "--temp-dir",
        temp,
        "--include-dashboard",
        "false",
        "--disable-usage-stats",
    ]
    head = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)  # the head's start-up, before a driver connects
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # --block: stops the node's processes
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def timed_job(clips: Path, out: Path, options, cluster: Cluster) -> float:
    """The seconds of one batch job over ``clips`` into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    plan = plan_batch([clips], out)
    summary = run_batch(plan, options, cluster)
    assert not summary.failed, json.dumps(summary.to_dict())
    return summary.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--long-side", type=int, default=192)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray node")
    args = parser.parse_args()
    # a script, not the library: Ray's settings for this driver and the node it starts
    os.environ.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"})
    options = inference_options(long_side=args.long_side, refine=False, threads=1, device="cpu")
    with tempfile.TemporaryDirectory() as work:
        clips, out = Path(work) / "clips", Path(work) / "out"
        clips.mkdir()
        frames = make_clips(clips, args.videos, args.seconds)
        print(f"{args.videos} videos, {frames} frames, long side {args.long_side}, no refine")
        timed_job(clips / "clip0.mp4", out, options, Cluster())  # warm-up: the ONNX cache
        seconds = {"in-process": timed_job(clips, out, options, Cluster())}
        with ray_head(args.cpus) as address:
            for workers in (1, 2):
                cluster = Cluster(address, workers=workers)
                seconds[f"ray, {workers} worker(s)"] = timed_job(clips, out, options, cluster)
    for name, value in seconds.items():
        rate = f"{args.videos / value:.2f} videos/s, {frames / value:.1f} frames/s"
        print(f"{name:<18} {value:6.1f} s  {rate}")
    ratio = seconds["ray, 1 worker(s)"] / seconds["ray, 2 worker(s)"]
    print(f"2 workers / 1 worker throughput: {ratio:.2f}x")
    overhead = (seconds["ray, 1 worker(s)"] - seconds["in-process"]) / args.videos
    print(f"Ray overhead per input (1 worker vs in-process): {overhead:+.2f} s")


if __name__ == "__main__":
    main()
