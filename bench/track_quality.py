"""How well tracks hold on real detections: distinct ids, track lengths, short tracks.

Reads the people of a ``posecli video --json`` file (their ids are ignored) and runs
``posecli.track.Tracker`` over them again, offline, frame by frame with the frames' own times.
Detect once with a low ``--min-part-score`` (the decoder's threshold) so that the file also holds
the people a normal run drops; this bench then shows the tracker the people a run at the bench's
``--min-part-score`` and ``--min-score`` would show and hands it the others, from the tracker's
``candidate_min_score`` up (as the pipeline does), as low-score candidates (which may continue a
track, never start one, are never shown).

Which people a normal run shows is estimated from each person's score: the decoder keeps a
person when ``total / keypoints >= min_part_score`` and reports ``score = 1 - 1 / total``, so
``total = 1 / (1 - score)``; keypoints are the 17 COCO ones found plus the network's neck when
both shoulders are (the neck is not written). Completion adds keypoints after that filter, so
the split could differ from that of a run at the same thresholds; on the first 5 s of the demo
video it gave exactly the 225 people a run at the default 0.45 shows. (Before posecli had
``--min-part-score``, ``--min-score`` was the decoder's threshold.)

Figures (over the people shown): distinct ids, median track length (frames an id is shown in),
tracks under 10 frames, people shown without an id, and a plausibility check with no ground
truth: id jumps, consecutive sightings of one id whose shared keypoints moved (median) faster
than two body heights per second (walkers on the demo video cover about one) and more than half
a height: an id passed from one person to another (or a detection that merges two people).
Last, the tracker's time per frame.

Usage (detections once, a few minutes on 2 CPU cores; then the bench, seconds):

    .venv/bin/posecli video ../shared/data/media/pedestrians_vtest.avi --no-video \\
        --json /tmp/track/demo.jsonl --min-part-score 0.05
    .venv/bin/python bench/track_quality.py /tmp/track/demo.jsonl [--min-part-score 0.45]
        [--min-score 0] [--every N] [--no-candidates] [--smooth] [--tracker-file OLD_TRACK.py]

``--every N`` keeps one frame in N (as ``posecli video --every N``); ``--tracker-file`` runs the
``Tracker`` of another ``track.py`` (e.g. ``git show COMMIT:posecli/track.py > old.py``); a
tracker whose ``update`` takes no candidates gets the shown people only. ``--file-ids`` tracks
nothing: the figures are those of the file's own people and ids, as the run tracked them (e.g.
``posecli video --detect-every N``, whose tracking cannot be replayed from its output; used by
``bench/follow_quality.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import numpy as np

from posecli.config import DecodeConfig
from posecli.pose import Pose

LEFT_SHOULDER, RIGHT_SHOULDER = 5, 6
SHORT_TRACK = 10  # frames
JUMP_KEYPOINTS = 3  # consecutive sightings sharing fewer keypoints are not judged
JUMP_SPEED = 2.0  # body heights per second; walkers here cover about 1


def load_frames(path: Path) -> list[tuple[float, list[Pose]]]:
    """``(time in s, people)`` of every frame line of a JSON-lines track file, in file order
    (the header line skipped)."""
    frames = []
    with path.open() as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                if "header" in record:
                    continue
                people = [
                    Pose(np.array(p["keypoints"]), p["score"], p.get("id"))
                    for p in record["people"]
                ]
                frames.append((float(record["time"]), people))
    return frames


def mean_part_score(pose: Pose) -> float:
    """The decoder's ``total / keypoints`` of ``pose``, estimated from its score (see above)."""
    if pose.score >= 1.0:
        return float("inf")
    if pose.score <= 0.0:
        return 0.0
    visible = pose.visible
    count = int(visible.sum()) + int(visible[LEFT_SHOULDER] and visible[RIGHT_SHOULDER])
    return 1.0 / ((1.0 - pose.score) * max(count, 1))


def split(
    people: list[Pose], min_part_score: float, min_score: float = 0.0, floor: float = 0.0
) -> tuple[list[Pose], list[Pose]]:
    """``(shown, candidates)``: people a run at ``--min-part-score min_part_score --min-score
    min_score`` would show, and the others from ``floor`` up (the decoder threshold of the
    pipeline's second decoding)."""
    shown, low = [], []
    for pose in people:
        part_score = mean_part_score(pose)
        if part_score >= min_part_score and pose.score >= min_score:
            shown.append(pose)
        elif part_score >= floor:
            low.append(pose)
    return shown, low


def load_tracker_module(path: Path | None) -> ModuleType:
    """``posecli.track``, or the module of another ``track.py`` file."""
    if path is None:
        import posecli.track

        return posecli.track
    spec = importlib.util.spec_from_file_location("track_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def track(frames, tracker, thresholds: tuple[float, float], every: int, candidates: bool) -> dict:
    """Run ``tracker`` over ``frames``: each id's sightings (time, ``(17, 3)`` keypoints),
    people shown, those without an id, frames, and the seconds ``tracker.update`` took.
    ``thresholds``: the run's ``(min_part_score, min_score)``."""
    takes_candidates = "candidates" in inspect.signature(tracker.update).parameters
    floor = getattr(tracker, "candidate_min_score", 0.0)
    sightings: dict[int, list[tuple[float, np.ndarray]]] = defaultdict(list)
    unnamed = shown_total = 0
    seconds = 0.0
    kept = frames[::every]
    for frame_time, people in kept:
        shown, low = split(people, *thresholds, floor)
        started = time.perf_counter()
        if takes_candidates and candidates:
            tracked = tracker.update(shown, frame_time, candidates=low)
        else:
            tracked = tracker.update(shown, frame_time)
        seconds += time.perf_counter() - started
        shown_total += len(tracked)
        for pose in tracked:
            if pose.track_id is None:
                unnamed += 1
            else:
                sightings[pose.track_id].append((frame_time, pose.keypoints))
    return {"sightings": sightings, "unnamed": unnamed, "shown": shown_total,
            "frames": len(kept), "seconds": seconds}  # fmt: skip


def file_tracks(frames: list[tuple[float, list[Pose]]], every: int) -> dict:
    """The figures of :func:`track` for the people and ids of ``frames`` as they are."""
    sightings: dict[int, list[tuple[float, np.ndarray]]] = defaultdict(list)
    kept = frames[::every]
    people = [pose for _, poses in kept for pose in poses]
    for frame_time, poses in kept:
        for pose in poses:
            if pose.track_id is not None:
                sightings[pose.track_id].append((frame_time, pose.keypoints))
    unnamed = sum(pose.track_id is None for pose in people)
    return {"sightings": sightings, "unnamed": unnamed, "shown": len(people),
            "frames": len(kept), "seconds": 0.0}  # fmt: skip


def jumps(sightings: dict[int, list[tuple[float, np.ndarray]]]) -> int:
    """Consecutive sightings of one id whose keypoints found in both (at least
    ``JUMP_KEYPOINTS``) moved, by their median, more than half the person's height (the taller
    sighting) and faster than ``JUMP_SPEED`` heights per second."""
    count = 0
    for seen in sightings.values():
        for (t0, before), (t1, after) in zip(seen, seen[1:], strict=False):
            both = (before[:, 2] > 0) & (after[:, 2] > 0)
            if both.sum() < JUMP_KEYPOINTS:
                continue
            shift = np.median(np.hypot(*(after[both, :2] - before[both, :2]).T))
            height = max(np.ptp(before[before[:, 2] > 0, 1]), np.ptp(after[after[:, 2] > 0, 1]))
            count += int(shift > max(0.5, JUMP_SPEED * (t1 - t0)) * max(height, 1.0))
    return count


def report(result: dict) -> None:
    """Print the figures of one run."""
    lengths = [len(seen) for seen in result["sightings"].values()]
    print(f"frames tracked            {result['frames']}")
    print(f"people shown              {result['shown']} ({result['unnamed']} without an id)")
    print(f"distinct ids              {len(lengths)}")
    print(f"median track length       {statistics.median(lengths) if lengths else 0:g} frames")
    print(f"tracks under {SHORT_TRACK} frames     {sum(n < SHORT_TRACK for n in lengths)}")
    print(f"id jumps                  {jumps(result['sightings'])}")
    per_frame = 1000 * result["seconds"] / max(result["frames"], 1)
    print(f"tracker time              {per_frame:.2f} ms/frame")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "jsonl", type=Path, help="posecli video --json output (low --min-part-score)"
    )
    parser.add_argument(
        "--min-part-score",
        type=float,
        default=DecodeConfig().min_mean_part_score,
        help="the run's decoder threshold: people below are candidates, not shown",
    )
    parser.add_argument(
        "--min-score",
        type=float,
        default=DecodeConfig().min_person_score,
        help="the run's person score threshold: people below are candidates, not shown",
    )
    parser.add_argument("--every", type=int, default=1, help="keep one frame in N")
    parser.add_argument(
        "--no-candidates", action="store_true", help="give the tracker no low-score candidates"
    )
    parser.add_argument("--smooth", action="store_true", help="One-Euro smoothing on")
    parser.add_argument("--tracker-file", type=Path, help="track.py whose Tracker to run")
    parser.add_argument(
        "--file-ids", action="store_true", help="no re-tracking: the file's own people and ids"
    )
    args = parser.parse_args()
    if args.every < 1:
        parser.error("--every must be at least 1")
    frames = load_frames(args.jsonl)
    if args.file_ids:
        print(f"{args.jsonl} (the file's own ids, --every {args.every})")
        report(file_tracks(frames, args.every))
        return
    module = load_tracker_module(args.tracker_file)
    tracker = module.Tracker(module.TrackerConfig(smooth=args.smooth))
    thresholds = (args.min_part_score, args.min_score)
    result = track(frames, tracker, thresholds, args.every, not args.no_candidates)
    source = args.tracker_file or "posecli.track"
    options = f"--min-part-score {args.min_part_score:g} --min-score {args.min_score:g}"
    print(f"{args.jsonl} ({options} --every {args.every}, {source})")
    report(result)


if __name__ == "__main__":
    main()
