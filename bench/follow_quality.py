"""What following people between bottom-up frames costs in accuracy (issue 38).

For each video, ``posecli video --no-video --json`` runs once with ``--detect-every 1`` (every
frame bottom-up: the reference) and once per ``--every`` N (the other options at their
defaults, or ``--options``); then for each N against the reference:

* **mean OKS of matched people**: per frame, people are paired greedily by OKS (COCO sigmas, the
  reference person's keypoint box area as the object area, over the keypoints both found), pairs
  from ``--match-oks`` up; the mean over all pairs, and the share of reference people paired;
* **people per frame**: N's over the reference's (target within 10 %);
* **ids** (``bench/track_quality.py --file-ids``, the runs' own ids): distinct ids, tracks under 10
  frames and id jumps (one id passed to another person) of both runs;
* the bottom-up frames: how many frames the run looked for people on is not in the track file, so
  it is not shown here (``bench/pipeline_speed.py`` times the runs).

Targets of issue 38: mean OKS ≥ 0.85, people per frame within 10 %, id jumps no more than the
reference's.

Usage (the runs are kept in ``--out`` and reused unless ``--rerun``):

    .venv/bin/python bench/follow_quality.py [VIDEO ...] [--end 20] [--every 3 5 8]
        [--out /tmp/follow_quality] [--rerun] [--options "--threads 2"]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from track_quality import file_tracks, jumps, load_frames

from posecli.boxes import pose_area, pose_oks
from posecli.pose import Pose
from posecli.track import greedy_match

MEDIA = Path(__file__).resolve().parents[1].parent / "shared/data/media"
VIDEOS = [MEDIA / "pedestrians_vtest.avi", MEDIA / "street_mmpose_demo.mp4"]
SHORT_TRACK = 10  # frames, as bench/track_quality.py


def run_video(video: Path, every: int, args: argparse.Namespace) -> Path:
    """The track file of ``posecli video`` on ``video`` with ``--detect-every every`` (run
    unless it is in ``--out`` already and ``--rerun`` is not given)."""
    tracks = args.out / f"{video.stem}.every{every}.jsonl"
    if tracks.is_file() and not args.rerun:
        return tracks
    command = [
        sys.executable, "-m", "posecli", "video", str(video), "--no-video", "--json", str(tracks),
        "--detect-every", str(every), "--quiet", "--force", *shlex.split(args.options),
    ]  # fmt: skip
    if args.end is not None:
        command += ["--end", str(args.end)]
    print("$ " + shlex.join(command), flush=True)
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
    return tracks


def matched_oks(reference: list[Pose], other: list[Pose], threshold: float) -> list[float]:
    """OKS of the pairs of one frame's people (each paired once, best first, ≥ threshold)."""
    if not reference or not other:
        return []
    scores = np.array(
        [[pose_oks(a.keypoints, b.keypoints, pose_area(a), 0.0) for b in other] for a in reference]
    )  # (R, O)
    return [float(scores[row, column]) for row, column in greedy_match(scores, threshold)]


def compare(reference: Path, other: Path, threshold: float) -> dict[str, float]:
    """Mean OKS of matched people, share of the reference's people matched, people per frame
    of each run, and their id figures."""
    ours, theirs = load_frames(reference), load_frames(other)
    if [time for time, _ in ours] != [time for time, _ in theirs]:
        raise SystemExit(f"{reference} and {other} hold different frames")
    pairs = [
        oks
        for (_, a), (_, b) in zip(ours, theirs, strict=True)
        for oks in matched_oks(a, b, threshold)
    ]
    people = [sum(len(poses) for _, poses in frames) for frames in (ours, theirs)]
    result = {
        "frames": len(ours),
        "mean_oks": float(np.mean(pairs)) if pairs else 0.0,
        "matched": len(pairs) / max(people[0], 1),
        "people_reference": people[0] / max(len(ours), 1),
        "people": people[1] / max(len(ours), 1),
    }
    for name, frames in (("reference", ours), ("other", theirs)):
        tracked = file_tracks(frames, 1)
        lengths = [len(seen) for seen in tracked["sightings"].values()]
        result[f"ids_{name}"] = len(lengths)
        result[f"short_{name}"] = sum(length < SHORT_TRACK for length in lengths)
        result[f"jumps_{name}"] = jumps(tracked["sightings"])
    return result


def report(video: Path, every: int, result: dict[str, float]) -> None:
    """Print one comparison."""
    ratio = result["people"] / max(result["people_reference"], 1e-9)
    print(
        f"{video.name} --detect-every {every} against 1 ({result['frames']:.0f} frames): "
        f"mean OKS {result['mean_oks']:.3f} over {result['matched']:.1%} of the people matched "
        f"(target >= 0.85); people per frame {result['people']:.2f} vs "
        f"{result['people_reference']:.2f} ({ratio - 1:+.1%}, target within 10 %); "
        f"distinct ids {result['ids_other']:.0f} vs {result['ids_reference']:.0f}, tracks under "
        f"{SHORT_TRACK} frames {result['short_other']:.0f} vs {result['short_reference']:.0f}, "
        f"id jumps {result['jumps_other']:.0f} vs {result['jumps_reference']:.0f} (no more)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", type=Path, default=VIDEOS)
    parser.add_argument("--end", type=float, default=20.0, help="seconds of each video (0: all)")
    parser.add_argument("--every", type=int, nargs="+", default=[5], help="N to compare with 1")
    parser.add_argument("--match-oks", type=float, default=0.1, help="least OKS of a pair")
    parser.add_argument("--out", type=Path, default=Path("/tmp/follow_quality"))
    parser.add_argument("--rerun", action="store_true", help="run posecli again, files or not")
    parser.add_argument("--options", default="", help="more posecli video options, one string")
    args = parser.parse_args()
    args.end = args.end or None
    if any(every < 1 for every in args.every):
        parser.error("--every values must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    for video in args.videos:
        if not video.is_file():
            raise SystemExit(f"{video} is missing (see ../shared/README.md)")
        reference = run_video(video, 1, args)
        for every in args.every:
            result = compare(reference, run_video(video, every, args), args.match_oks)
            report(video, every, result)


if __name__ == "__main__":
    main()
