"""Find the people in one image and print their keypoints (COCO-17 order, image pixels).

Usage: python examples/image_to_poses.py photo.jpg --model MODEL [--annotated annotated.jpg]
"""

import argparse
import sys

import cv2

import posecli
from posecli.io import draw_poses, load_image


def main() -> None:
    parser = argparse.ArgumentParser(description="Poses of the people in one image.")
    parser.add_argument("image", help="image file (EXIF orientation is applied)")
    parser.add_argument("--model", default="default", help="model name or checkpoint path")
    parser.add_argument("--annotated", help="also save the image with the skeletons drawn")
    args = parser.parse_args()
    try:
        estimator = posecli.build_estimator(posecli.load_model(args.model))
        image = load_image(args.image)  # upright RGB uint8 (H, W, 3)
    except posecli.PoseCliError as error:
        sys.exit(f"error: {error}")
    poses = estimator.predict([image])[0]  # people, highest score first
    print(f"{len(poses)} people in {args.image}")
    for number, pose in enumerate(poses):
        found = [f"({x:.0f}, {y:.0f})" for x, y, conf in pose.keypoints if conf > 0]
        print(f"person {number}: score {pose.score:.2f}, keypoints {' '.join(found)}")
    if args.annotated:
        cv2.imwrite(args.annotated, cv2.cvtColor(draw_poses(image, poses), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
