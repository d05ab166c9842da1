"""Track the people of a video into JSON lines (one line per frame, stable person ids).

Usage: python examples/video_to_tracks.py clip.mp4 tracks.jsonl --model MODEL
"""

import argparse
import sys

import posecli
from posecli.io import JsonLinesSink, VideoSource
from posecli.pipeline import run_pipeline
from posecli.track import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(description="JSON-lines person tracks of a video.")
    parser.add_argument("video", help="video file or URL")
    parser.add_argument("tracks", help="JSON-lines file to write")
    parser.add_argument("--model", default="default", help="model name or checkpoint path")
    args = parser.parse_args()
    try:
        estimator = posecli.build_estimator(posecli.load_model(args.model))
        # Reading, inference, decoding and writing overlap in the streaming pipeline.
        with VideoSource(args.video) as frames, JsonLinesSink(args.tracks, force=True) as lines:
            stats = run_pipeline(frames, estimator, [lines], tracker=Tracker())
    except posecli.PoseCliError as error:
        sys.exit(f"error: {error}")
    print(f"{stats.frames} frames at {stats.fps:.1f} frames/s -> {args.tracks}")


if __name__ == "__main__":
    main()
