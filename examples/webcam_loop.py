"""A live loop: newest camera frame -> poses -> tracked skeletons in a window (q quits).

Usage: python examples/webcam_loop.py --model MODEL [--camera 0] [--no-display]
"""

import argparse
import sys

import cv2

import posecli
from posecli.io import CameraSource, draw_poses
from posecli.track import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(description="Poses from a camera, frame by frame.")
    parser.add_argument("--camera", default="0", help="camera index, stream URL or video file")
    parser.add_argument("--model", default="default", help="model name or checkpoint path")
    parser.add_argument("--no-display", action="store_true", help="print instead of showing")
    args = parser.parse_args()
    try:
        estimator, tracker = posecli.build_estimator(posecli.load_model(args.model)), Tracker()
        camera = CameraSource(args.camera)  # hands out the newest frame, drops stale ones
    except posecli.PoseCliError as error:
        sys.exit(f"error: {error}")
    with camera:
        for frame in camera:
            poses = tracker.update(estimator.predict([frame.image])[0], frame.time)
            if args.no_display:
                print(f"frame {frame.index} at {frame.time:.2f} s: {len(poses)} people")
                continue
            cv2.imshow("poses", cv2.cvtColor(draw_poses(frame.image, poses), cv2.COLOR_RGB2BGR))
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                break


if __name__ == "__main__":
    main()
