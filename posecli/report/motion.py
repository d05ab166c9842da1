"""What a tracked person did: joint angles, hip-centre trajectory, keypoints found, time seen.

Keypoints are ``[x, y, score]`` in image pixels (x right, y down), COCO-17 order, score 0 for a
keypoint not found; a keypoint counts as found when its score is above a threshold (the
``--draw-threshold`` skeletons are drawn with; 0: any keypoint the tracks hold). Angles are in
degrees, in [0, 180]: the angle at the middle joint between the segments to its two
neighbours (180: straight limb), ``NaN`` where one of the three keypoints is not found.
Smoothing is the One-Euro filter of ``posecli video --smooth`` (:class:`posecli.track.OneEuroFilter`
with :class:`posecli.config.TrackerConfig`'s constants), run over the person's frames exactly
as the tracker runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecli.config import TrackerConfig
from posecli.report.tracks import PersonTrack
from posecli.spec import COCO_KEYPOINTS, NUM_COCO_KEYPOINTS
from posecli.track import OneEuroFilter

_K = {name: index for index, name in enumerate(COCO_KEYPOINTS)}


def _joint(first: str, middle: str, last: str) -> tuple[int, int, int]:
    """COCO indices of three named keypoints."""
    return _K[first], _K[middle], _K[last]


#: Joint angles reported: name → COCO indices ``(a, b, c)``, the angle being at ``b``.
JOINT_ANGLES: dict[str, tuple[int, int, int]] = {
    "left knee": _joint("left_hip", "left_knee", "left_ankle"),
    "right knee": _joint("right_hip", "right_knee", "right_ankle"),
    "left elbow": _joint("left_shoulder", "left_elbow", "left_wrist"),
    "right elbow": _joint("right_shoulder", "right_elbow", "right_wrist"),
    "left hip": _joint("left_shoulder", "left_hip", "left_knee"),
    "right hip": _joint("right_shoulder", "right_hip", "right_knee"),
    "left shoulder": _joint("left_hip", "left_shoulder", "left_elbow"),
    "right shoulder": _joint("right_hip", "right_shoulder", "right_elbow"),
}


def joint_angle(
    keypoints: np.ndarray, joint: tuple[int, int, int], threshold: float = 0.0
) -> np.ndarray:
    """The angle at ``joint[1]`` between the segments to ``joint[0]`` and ``joint[2]``.

    Args:
        keypoints: ``(..., 17, 3)`` ``[x, y, score]``, image pixels.
        joint: three COCO keypoint indices.
        threshold: keypoints scored at or below it count as not found.

    Returns:
        ``(...)`` float64 degrees in [0, 180]; ``NaN`` where a keypoint is not found (score ≤
        ``threshold``) or a segment has zero length.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    a, b, c = (keypoints[..., index, :] for index in joint)
    u, v = a[..., :2] - b[..., :2], c[..., :2] - b[..., :2]
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = (u * v).sum(-1)
    found = (a[..., 2] > threshold) & (b[..., 2] > threshold) & (c[..., 2] > threshold)
    found &= (np.abs(u).sum(-1) > 0) & (np.abs(v).sum(-1) > 0)
    angle = np.degrees(np.arctan2(np.abs(cross), dot))
    return np.where(found, angle, np.nan)


def joint_angles(keypoints: np.ndarray, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """Every angle of :data:`JOINT_ANGLES` for ``(T, 17, 3)`` keypoints: name → ``(T,)`` deg
    (:func:`joint_angle` with ``threshold``)."""
    return {name: joint_angle(keypoints, joint, threshold) for name, joint in JOINT_ANGLES.items()}


def smooth_keypoints(
    keypoints: np.ndarray,
    times: np.ndarray,
    config: TrackerConfig = TrackerConfig(),  # noqa: B008 (frozen record)
) -> np.ndarray:
    """One-Euro filter one person's keypoints over time, as ``posecli video --smooth`` does.

    Args:
        keypoints: ``(T, 17, 3)`` ``[x, y, score]``, image pixels, in time order.
        times: ``(T,)`` seconds, increasing.
        config: the filter's constants (``min_cutoff``, ``beta``, ``d_cutoff``).

    Returns:
        ``(T, 17, 3)`` float64: x, y filtered (missing keypoints unchanged), scores kept.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    smoother = OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff, NUM_COCO_KEYPOINTS)
    out = keypoints.copy()
    for t, time in enumerate(np.asarray(times, dtype=np.float64)):
        present = keypoints[t, :, 2] > 0
        out[t, :, :2] = smoother(keypoints[t, :, :2], present, float(time))
    return out


def hip_centres(keypoints: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """``(T, 2)`` midpoints of the left and right hips of ``(T, 17, 3)`` keypoints, image
    pixels (x right, y down); ``NaN`` where either hip is not found (score ≤ ``threshold``)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    left, right = keypoints[:, _K["left_hip"]], keypoints[:, _K["right_hip"]]
    both = (left[:, 2] > threshold) & (right[:, 2] > threshold)
    return np.where(both[:, None], (left[:, :2] + right[:, :2]) / 2, np.nan)


def keypoint_share(keypoints: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """``(17,)`` share in [0, 1] of the ``T`` frames of ``(T, 17, 3)`` keypoints in which each
    COCO keypoint was found (score > ``threshold``)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if not len(keypoints):
        return np.zeros(NUM_COCO_KEYPOINTS)
    return (keypoints[:, :, 2] > threshold).mean(axis=0)


@dataclass
class PersonMotion:
    """One tracked person's measures (see the module docstring for units).

    Attributes:
        track: the frames the person was shown in.
        seconds: time on screen: frames shown × the file's frame interval, s.
        hips: ``(T, 2)`` hip centres, image pixels, unsmoothed.
        angles: name → ``(T,)`` degrees, from smoothed keypoints when ``smoothed``.
        raw_angles: name → ``(T,)`` degrees from the keypoints as read.
        share: ``(17,)`` share of frames each keypoint was found in, [0, 1].
        smoothed: whether ``angles`` were smoothed here.
        threshold: keypoints scored at or below it counted as not found.
    """

    track: PersonTrack
    seconds: float
    hips: np.ndarray
    angles: dict[str, np.ndarray]
    raw_angles: dict[str, np.ndarray]
    share: np.ndarray
    smoothed: bool
    threshold: float = 0.0


def person_motion(
    track: PersonTrack, frame_interval: float, *, smooth: bool, threshold: float = 0.0
) -> PersonMotion:
    """The measures of one person; ``frame_interval``: seconds per frame record (the time on
    screen is counted in those); ``smooth``: One-Euro filter the keypoints for the angles;
    ``threshold``: keypoints scored at or below it are not found (angles, hips, share)."""
    raw = joint_angles(track.keypoints, threshold)
    smoothed = smooth_keypoints(track.keypoints, track.times) if smooth else None
    return PersonMotion(
        track=track,
        seconds=len(track.frames) * frame_interval,
        hips=hip_centres(track.keypoints, threshold),
        angles=raw if smoothed is None else joint_angles(smoothed, threshold),
        raw_angles=raw,
        share=keypoint_share(track.keypoints, threshold),
        smoothed=smooth,
        threshold=threshold,
    )
