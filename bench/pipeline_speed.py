"""End-to-end speed and memory of the streaming pipeline against the model alone, per backend.

On ``../shared/data/media/pedestrians_vtest.avi`` (768×576, 10 fps), with one model at one input
size, for each backend of ``--backends`` (``posecli.backends``: torch, onnxruntime) this prints

* model-only frames/s: ``Estimator.heatmaps`` on the same frames (their decoding not timed);
* end-to-end frames/s: video in → inference → decoding → tracking → drawing → H.264 MP4 and
  JSON lines out (``posecli video``'s path), from opening the input to closed outputs;
* ``posecli video`` frames/s: the command itself in a subprocess (``--end`` at the same frame),
  wall time from start to exit, model loading included (the ONNX export is cached already);
  only for a model file;
* resident memory (VmRSS) after frame 100 and after the last frame, and their difference;
* the ratio end-to-end / model-only (target ≥ 0.85, memory growth < 50 MB);
* MoveNet MultiPose (``../shared/teachers/movenet-multipose.onnx``, long side 384,
  onnxruntime, the same ``--threads``, onnxruntime's default session settings or with
  ``--no-spinning`` posecli's, see ``bench/multipose_video.py``) over the same frames:
  model-only frames/s, and ``bench/multipose_video.py`` as a process beside ``posecli video``
  (wall, with loading); then posecli's times over MultiPose's (the ``MultiPose`` column; issue
  38: ``posecli video`` at most 1.0× MultiPose's time);

then, with both backends, the onnxruntime / torch ratio of each figure.

``--refine`` refines the people as ``video`` does by default (the int8 refiner, no flip test);
``--detect-every N`` (with ``--refine``) runs the bottom-up network on one frame in N and follows
the people with the refiner in between (``posecli.follow``, issue 38); without ``--refine`` the
people are not refined, nor ``posecli video``'s (``--no-refine``).

Without ``--model`` the bundled default model is used; when it does not exist yet, or with
``--preset NAME [--stacks N]``, a preset with random weights stands in (same speed as trained
weights, but a random network finds few people, so decoding is cheaper than on real
predictions; its ONNX export goes to a temporary folder, not the user's cache).

The measurements alternate ``--repeat`` times and the best of each is kept, so that load
from other processes on the machine skews the ratios less.

Usage: .venv/bin/python bench/pipeline_speed.py [--model M | --preset P [--stacks N]]
       [--frames 150] [--threads 2] [--long-side 384] [--backends torch onnxruntime]
       [--refine [--detect-every 5]] [--no-multipose]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from multipose_video import TEACHER, MultiPose

from posecli.assemble import build_estimator
from posecli.backends import ONNXRUNTIME, TORCH
from posecli.config import MODEL_PRESETS, InferenceConfig
from posecli.decode import native_available
from posecli.errors import ModelNotFoundError
from posecli.estimator import Estimator
from posecli.io.draw import draw_poses
from posecli.io.sinks import JsonLinesSink, VideoSink
from posecli.io.sources import VideoSource
from posecli.loader import load_model
from posecli.model import build_network
from posecli.networks import PoseModel
from posecli.onnxfile import export_onnx
from posecli.pipeline import PipelineProgress, run_pipeline
from posecli.track import Tracker

VIDEO = Path(__file__).resolve().parents[1].parent / "shared/data/media/pedestrians_vtest.avi"
STAND_IN_PRESET = "imhn-cpu"
MEMORY_FRAME = 100


def resident_mb() -> float:
    """Resident memory of this process in MB (VmRSS of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def pick_model(name: str | None, preset: str | None, stacks: int) -> tuple[PoseModel, str]:
    """The named model, else the preset, else the default one, else the stand-in preset; a
    preset with random weights (``stacks`` of them if not 0)."""
    if name is not None:
        return load_model(name, device="cpu"), name
    if preset is None:
        try:
            return load_model("default", device="cpu"), "default"
        except ModelNotFoundError:
            preset = STAND_IN_PRESET
    torch.manual_seed(0)
    config = MODEL_PRESETS[preset]
    config = replace(config, stacks=stacks) if stacks else config
    note = f"{preset} preset, {config.stacks} stack(s), RANDOM weights"
    return PoseModel.from_network(build_network(config), config, name=preset), note


def estimators(
    model: PoseModel, config: InferenceConfig, backends: list[str], folder: Path
) -> dict[str, Estimator]:
    """An Estimator per backend; onnxruntime for an in-memory network runs its export in
    ``folder`` (a model file's comes from the user's cache)."""
    built = {}
    for backend in backends:
        runnable = model
        if backend == ONNXRUNTIME and model.file is None:
            runnable = load_model(export_onnx(model, folder / "model.onnx"))
        built[backend] = build_estimator(runnable, replace(config, backend=backend))
    return built


def command_fps(model: Path, backend: str, args: argparse.Namespace, end: float) -> float:
    """Frames/s of ``posecli video`` (a subprocess, wall time) up to ``end`` seconds."""
    with tempfile.TemporaryDirectory(prefix="pipeline_speed_cli_") as folder:
        out, tracks = Path(folder) / "out.mp4", Path(folder) / "tracks.jsonl"
        command = [
            sys.executable, "-m", "posecli", "video", str(args.video), "-o", str(out),
            "--json", str(tracks), "--end", f"{end:.3f}", "--model", str(model), "--quiet",
            "--device", "cpu", "--backend", backend, "--threads", str(args.threads),
            "--box-size", str(args.box_size), "--long-side", str(args.long_side),
            "--batch-size", str(args.batch_size), "--detect-every", str(args.detect_every),
            "--refine" if args.refine else "--no-refine",
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        frames = sum(1 for line in tracks.read_text().splitlines() if '"frame"' in line)
    return frames / seconds


def multipose_fps(args: argparse.Namespace, end: float) -> dict[str, float]:
    """MultiPose's model-only frames/s on the frames of ``end`` seconds (decoding not timed)
    and, unless ``--no-command``, ``bench/multipose_video.py``'s (a subprocess, wall time)."""
    model = MultiPose(TEACHER, 384, args.threads, args.spinning)
    spent, count = 0.0, 0
    with VideoSource(args.video, end=end) as frames:
        for frame in frames:
            started = time.perf_counter()
            model.people(frame.image)
            spent, count = spent + time.perf_counter() - started, count + 1
    result = {"model": count / spent, "command": 0.0}
    if not args.no_command:
        script = Path(__file__).with_name("multipose_video.py")
        command = [sys.executable, str(script), str(args.video), "--end", f"{end:.3f}",
                   "--threads", str(args.threads),
                   "--spinning" if args.spinning else "--no-spinning"]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        result["command"] = count / (time.perf_counter() - started)
    return result


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


def measure(
    estimator: Estimator, args: argparse.Namespace, end: float, model: Path | None
) -> dict[str, float]:
    """Best model-only, end-to-end and ``posecli video`` frames/s of ``--repeat`` runs, and the
    memory of the best end-to-end run."""
    backend = estimator.backend
    best: dict[str, float] = {"model": 0.0, "fps": 0.0, "command": 0.0}
    for run in range(1, args.repeat + 1):  # alternate them, keep the best of each
        fps, count = model_only_fps(estimator, args.video, end)
        print(f"[{backend} {run}] model-only: {fps:6.2f} frames/s ({count} frames)")
        best["model"] = max(best["model"], fps)
        with tempfile.TemporaryDirectory(prefix="pipeline_speed_") as folder:
            measured = end_to_end(estimator, args.video, end, Path(folder))
        print(f"[{backend} {run}] end-to-end: {measured['fps']:6.2f} frames/s -> MP4 + JSON")
        if measured["fps"] > best["fps"]:
            best.update(measured)
        if model is not None:
            command = command_fps(model, backend, args, end)
            print(f"[{backend} {run}] posecli video: {command:6.2f} frames/s (wall, with loading)")
            best["command"] = max(best["command"], command)
    return best


def parse_arguments() -> argparse.Namespace:
    """The options of the module docstring, checked."""
    parser = argparse.ArgumentParser(description="Pipeline speed against the model alone.")
    parser.add_argument("--model", help="model name or checkpoint (default: see module doc)")
    parser.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="random-weight preset")
    parser.add_argument("--stacks", type=int, default=0, help="--preset's stacks (0: its own)")
    parser.add_argument("--frames", type=int, default=150, help="frames of the video to use")
    parser.add_argument("--box-size", type=int, default=InferenceConfig().box_size)
    parser.add_argument("--long-side", type=int, default=0, help="overrides --box-size (0: off)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="backend threads (0: default)")
    parser.add_argument("--backends", nargs="+", choices=[TORCH, ONNXRUNTIME],
                        default=[TORCH, ONNXRUNTIME])  # fmt: skip
    parser.add_argument("--no-command", action="store_true", help="skip the posecli video runs")
    parser.add_argument("--repeat", type=int, default=1, help="measurement rounds (best kept)")
    parser.add_argument("--refine", action="store_true", help="refine as posecli video does")
    parser.add_argument("--detect-every", type=int, default=1,
                        help="bottom-up network on one frame in N (with --refine)")  # fmt: skip
    parser.add_argument("--no-multipose", action="store_true", help="skip the MultiPose column")
    parser.add_argument("--spinning", action=argparse.BooleanOptionalAction, default=True,
                        help="MultiPose's idle onnxruntime threads spin (its default)")  # fmt: skip
    parser.add_argument("--video", type=Path, default=VIDEO)
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"{args.video} is missing (see ../shared/README.md)")
    if args.frames <= MEMORY_FRAME:
        raise SystemExit(f"--frames must exceed {MEMORY_FRAME} to measure memory growth")
    if args.detect_every < 1 or (args.detect_every > 1 and not args.refine):
        raise SystemExit("--detect-every must be at least 1, and above 1 only with --refine")
    return args


def main() -> None:
    args = parse_arguments()
    model, note = pick_model(args.model, args.preset, args.stacks)
    config = InferenceConfig(
        box_size=args.box_size, long_side=args.long_side, batch_size=args.batch_size,
        device="cpu", threads=args.threads, refine=args.refine, refine_flip=False,
        refine_int8=True, detect_every=args.detect_every,
    )  # fmt: skip
    assert model.network is not None
    parameters = sum(p.numel() for p in model.network.parameters()) / 1e6
    model_file = None if args.no_command else model.file
    with VideoSource(args.video) as frames:
        info = frames.info
        first = next(iter(frames)).image
    end = args.frames / float(info.frame_rate)
    print(f"video: {args.video.name}, {info.width}x{info.height}, {float(info.frame_rate):g} fps")
    print(f"model: {note}, {parameters:.1f} M parameters")
    sizing = f"long side {args.long_side}" if args.long_side else f"box size {args.box_size}"
    print(f"{sizing}, batch {args.batch_size}, threads {args.threads or 'default'}, "
          f"native decoder {native_available()}, refine {args.refine}, "
          f"detect every {args.detect_every}")  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory(prefix="pipeline_speed_onnx_") as folder:
        for backend, estimator in estimators(model, config, args.backends, Path(folder)).items():
            estimator.heatmaps([first])  # warm-up: oneDNN plans, allocations
            results[backend] = measure(estimator, args, end, model_file)
    multipose = None if args.no_multipose else multipose_fps(args, end)
    if multipose is not None:
        print(f"MultiPose: model-only {multipose['model']:.2f}, process "
              f"{multipose['command']:.2f} frames/s")  # fmt: skip
    for backend, result in results.items():
        report(backend, result, multipose)
    if len(results) == 2:
        onnx, plain = results[ONNXRUNTIME], results[TORCH]
        ratios = {key: onnx[key] / plain[key] for key in ("model", "fps", "command") if plain[key]}
        named = {"model": "model-only", "fps": "end-to-end", "command": "posecli video"}
        print("onnxruntime / torch: " + ", ".join(
            f"{named[key]} {ratio:.2f}x" for key, ratio in ratios.items()
        ))  # fmt: skip


def report(backend: str, result: dict[str, float], multipose: dict[str, float] | None) -> None:
    """Print one backend's figures and, with MultiPose's, the time ratios to them."""
    growth = result["last"] - result["at_100"]
    print(f"{backend}: model-only {result['model']:.2f}, end-to-end {result['fps']:.2f}, "
          f"posecli video {result['command']:.2f} frames/s; end-to-end / model-only "
          f"{result['fps'] / result['model']:.3f} (target >= 0.85); memory "
          f"{result['at_100']:.0f} MB at frame {MEMORY_FRAME}, {result['last']:.0f} MB at "
          f"frame {result['frames']:.0f}: growth {growth:+.1f} MB (< 50 MB)")  # fmt: skip
    if multipose is None:
        return
    times = {"end-to-end": (result["fps"], multipose["model"]),
             "posecli video": (result["command"], multipose["command"])}  # fmt: skip
    print(f"{backend} time / MultiPose's (target <= 1.0): " + ", ".join(
        f"{name} {theirs / ours:.2f}x" for name, (ours, theirs) in times.items() if ours and theirs
    ) + " (end-to-end against MultiPose's model-only)")  # fmt: skip


if __name__ == "__main__":
    main()
