"""Drawing skeletons, ids and FPS on RGB images."""

from __future__ import annotations

import numpy as np

from posecli.io.draw import draw_fps, draw_poses, limb_colour, line_thickness, track_colour
from posecli.pose import Pose
from posecli.spec import CENTRE_COLOUR_RGB, COCO_KEYPOINTS, LEFT_COLOUR_RGB, RIGHT_COLOUR_RGB


def _near(image: np.ndarray, x: float, y: float, colour, radius: int = 1) -> bool:
    """Whether a pixel within ``radius`` of (x, y) has exactly ``colour``."""
    rows = slice(round(y) - radius, round(y) + radius + 1)
    patch = image[rows, round(x) - radius : round(x) + radius + 1]
    return bool((patch == colour).all(axis=-1).any())


def test_limb_colours_follow_sides() -> None:
    index = COCO_KEYPOINTS.index
    assert limb_colour(index("left_shoulder"), index("left_elbow")) == LEFT_COLOUR_RGB
    assert limb_colour(index("right_hip"), index("right_knee")) == RIGHT_COLOUR_RGB
    assert limb_colour(index("left_shoulder"), index("right_shoulder")) == CENTRE_COLOUR_RGB
    assert limb_colour(index("nose"), index("left_eye")) == LEFT_COLOUR_RGB


def test_skeleton_drawn_in_side_colours(skeleton) -> None:
    image = np.zeros((400, 400, 3), dtype=np.uint8)
    pose = Pose(skeleton(200, 200, 300), score=0.9)
    result = draw_poses(image, [pose])
    assert result is image  # drawn in place

    def middle(a: str, b: str) -> np.ndarray:
        points = pose.keypoints[[COCO_KEYPOINTS.index(a), COCO_KEYPOINTS.index(b)], :2]
        return points.mean(axis=0)

    left_upper_arm = middle("left_shoulder", "left_elbow")
    right_thigh = middle("right_hip", "right_knee")
    hips = middle("left_hip", "right_hip")
    assert _near(image, *left_upper_arm, LEFT_COLOUR_RGB)
    assert _near(image, *right_thigh, RIGHT_COLOUR_RGB)
    assert _near(image, *hips, CENTRE_COLOUR_RGB)
    assert image[:20, :20].max() == 0 and image[-20:, -20:].max() == 0  # nothing far away


def test_keypoints_below_threshold_are_not_drawn(skeleton) -> None:
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    faint = Pose(skeleton(100, 100, 150, confidence=0.05), score=0.5)
    draw_poses(image, [faint], min_confidence=0.1)
    assert image.max() == 0
    keypoints = skeleton(100, 100, 150)
    keypoints[COCO_KEYPOINTS.index("left_elbow"), 2] = 0.05
    draw_poses(image, [Pose(keypoints, score=0.5)], min_confidence=0.1, show_ids=False)
    elbow = keypoints[COCO_KEYPOINTS.index("left_elbow"), :2]
    assert image[round(elbow[1]), round(elbow[0])].max() == 0
    assert image.max() > 0


def test_track_id_label_above_the_person(skeleton) -> None:
    keypoints = skeleton(100, 120, 120)
    top = int(keypoints[:, 1].min()) - 4  # above the keypoint dots
    plain = draw_poses(np.zeros((240, 200, 3), np.uint8), [Pose(keypoints, 0.9)])
    labelled = draw_poses(np.zeros((240, 200, 3), np.uint8), [Pose(keypoints, 0.9, track_id=7)])
    assert plain[:top].max() == 0
    label = labelled[:top].reshape(-1, 3).astype(float)
    brightest = label[label.sum(axis=1).argmax()]
    colour = np.array(track_colour(7), dtype=float)
    assert np.abs(brightest / brightest.max() - colour / colour.max()).max() < 0.15
    tracked = [Pose(keypoints, 0.9, track_id=7)]
    no_ids = draw_poses(np.zeros((240, 200, 3), np.uint8), tracked, show_ids=False)
    assert np.array_equal(no_ids, plain)


def test_fps_text_and_sizes() -> None:
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    assert draw_fps(image, 12.5) is image
    assert (image[:40, :120] == 255).all(axis=-1).any()
    assert image[120:].max() == 0
    assert line_thickness(48, 64) == 1
    assert line_thickness(1080, 1920) > line_thickness(480, 640) >= 2
    assert len({track_colour(i) for i in range(1, 50)}) == 49
