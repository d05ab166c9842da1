"""End-to-end speed and memory of the streaming pipeline against the model alone.

On ``../shared/data/media/pedestrians_vtest.avi`` (768×576, 10 fps), with one model at one input
size, this prints

* model-only frames/s: ``Estimator.heatmaps`` on the same frames (their decoding not timed);
* end-to-end frames/s: video in → inference → decoding → tracking → drawing → H.264 MP4 and
  JSON lines out (``posecli video``'s path), from opening the input to closed outputs;
* resident memory (VmRSS) after frame 100 and after the last frame, and their difference;
* last, the ratio end-to-end / model-only (target ≥ 0.85, memory growth < 50 MB).

Without ``--model`` the bundled default model is used; when it does not exist yet, the
``imhn-cpu`` preset with random weights stands in (same speed as trained weights, but a random
network finds few people, so decoding is cheaper than on real predictions).

The two measurements alternate ``--repeat`` times and the best of each is kept, so that load
from other processes on the machine skews the ratio less.

Usage: .venv/bin/python bench/pipeline_speed.py [--model M] [--frames 795] [--threads 1]
       [--long-side 384]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from posecli.config import MODEL_PRESETS, InferenceConfig
from posecli.decode import native_available
from posecli.errors import ModelNotFoundError
from posecli.estimator import Estimator
from posecli.io.draw import draw_poses
from posecli.io.sinks import JsonLinesSink, VideoSink
from posecli.io.sources import VideoSource
from posecli.model import build_network
from posecli.pipeline import PipelineProgress, run_pipeline
from posecli.track import Tracker
from posecli.weights import PoseModel, load_model

VIDEO = Path(__file__).resolve().parents[1].parent / "shared/data/media/pedestrians_vtest.avi"
STAND_IN_PRESET = "imhn-cpu"
MEMORY_FRAME = 100


def resident_mb() -> float:
    """Resident memory of this process in MB (VmRSS of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def pick_model(name: str | None) -> tuple[PoseModel, str]:
    """The named model, else the default one, else the stand-in preset with random weights."""
    if name is not None:
        return load_model(name, device="cpu"), name
    try:
        return load_model("default", device="cpu"), "default"
    except ModelNotFoundError:
        torch.manual_seed(0)
        config = MODEL_PRESETS[STAND_IN_PRESET]
        network = build_network(config)
        note = f"{STAND_IN_PRESET} preset with RANDOM weights (no trained default model yet)"
        return PoseModel.from_network(network, config, name=STAND_IN_PRESET), note


def model_only_fps(estimator: Estimator, video: Path, end: float) -> tuple[float, int]:
    """Frames/s of ``estimator.heatmaps`` alone, frames decoded from ``video`` but not timed."""
    batch_size = estimator.config.batch_size
    spent, count, batch = 0.0, 0, []
    with VideoSource(video, end=end) as frames:
        for frame in frames:
            batch.append(frame.image)
            if len(batch) == batch_size:
                started = time.perf_counter()
                estimator.heatmaps(batch)
                spent += time.perf_counter() - started
                count, batch = count + len(batch), []
    if batch:
        started = time.perf_counter()
        estimator.heatmaps(batch)
        spent += time.perf_counter() - started
        count += len(batch)
    return count / spent, count


def end_to_end(estimator: Estimator, video: Path, end: float, out: Path) -> dict[str, float]:
    """Frames/s of the whole pipeline into an MP4 and JSON lines, and memory at two frames."""
    memory: dict[str, float] = {}

    def progress(update: PipelineProgress) -> None:
        memory["last"] = resident_mb()
        if update.frames == MEMORY_FRAME:
            memory["at_100"] = memory["last"]

    started = time.perf_counter()
    with VideoSource(video, end=end) as frames:
        info = frames.info
        rate, timescale = info.frame_rate, round(1 / info.time_base)
        with (
            VideoSink(out / "annotated.mp4", rate, timescale=timescale, force=True) as annotated,
            JsonLinesSink(out / "tracks.jsonl", force=True) as tracks,
        ):
            stats = run_pipeline(
                frames,
                estimator,
                [annotated, tracks],
                tracker=Tracker(),
                draw=draw_poses,
                progress=progress,
            )
    seconds = time.perf_counter() - started
    return {"fps": stats.frames / seconds, "frames": stats.frames, **memory}


def main() -> None:
    parser = argparse.ArgumentParser(description="Pipeline speed against the model alone.")
    parser.add_argument("--model", help="model name or checkpoint (default: see module doc)")
    parser.add_argument("--frames", type=int, default=795, help="frames of the video to use")
    parser.add_argument("--box-size", type=int, default=InferenceConfig().box_size)
    parser.add_argument("--long-side", type=int, default=0, help="overrides --box-size (0: off)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeat", type=int, default=2, help="measurement pairs (best kept)")
    parser.add_argument("--video", type=Path, default=VIDEO)
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"{args.video} is missing (see ../shared/README.md)")
    if args.frames <= MEMORY_FRAME:
        raise SystemExit(f"--frames must exceed {MEMORY_FRAME} to measure memory growth")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, note = pick_model(args.model)
    config = InferenceConfig(
        box_size=args.box_size, long_side=args.long_side, batch_size=args.batch_size, device="cpu"
    )
    estimator = Estimator(model, config)
    with VideoSource(args.video) as frames:
        info = frames.info
        estimator.heatmaps([next(iter(frames)).image])  # warm-up: oneDNN plans, allocations
    end = args.frames / float(info.frame_rate)
    parameters = sum(p.numel() for p in model.network.parameters()) / 1e6
    print(f"video: {args.video.name}, {info.width}x{info.height}, {float(info.frame_rate):g} fps")
    print(f"model: {note}, {parameters:.1f} M parameters")
    sizing = f"long side {args.long_side}" if args.long_side else f"box size {args.box_size}"
    print(f"{sizing}, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"native decoder {native_available()}")  # fmt: skip
    model_fps, result = 0.0, {"fps": 0.0}
    for run in range(1, args.repeat + 1):  # alternate the two, keep the best of each
        fps, count = model_only_fps(estimator, args.video, end)
        print(f"[{run}] model-only:  {fps:6.2f} frames/s ({count} frames, Estimator.heatmaps)")
        model_fps = max(model_fps, fps)
        with tempfile.TemporaryDirectory(prefix="pipeline_speed_") as folder:
            measured = end_to_end(estimator, args.video, end, Path(folder))
        frames = measured["frames"]
        print(
            f"[{run}] end-to-end:  {measured['fps']:6.2f} frames/s ({frames} frames -> MP4 + JSON)"
        )
        result = max(result, measured, key=lambda r: r["fps"])
    print(f"best: model-only {model_fps:.2f} frames/s, end-to-end {result['fps']:.2f} frames/s")
    growth = result["last"] - result["at_100"]
    print(f"memory: {result['at_100']:.0f} MB at frame {MEMORY_FRAME}, "
          f"{result['last']:.0f} MB at frame {result['frames']}: growth {growth:+.1f} MB "
          f"(target < 50 MB)")  # fmt: skip
    print(f"ratio end-to-end / model-only: {result['fps'] / model_fps:.3f} (target >= 0.85)")


if __name__ == "__main__":
    main()
