"""Ground-truth heatmaps: Gaussians where they belong, flips that commute, channels 48–49."""

from __future__ import annotations

import numpy as np
import pytest

from posecli.spec import (
    BODY_PARTS,
    CHANNEL_FLIP_ORDER,
    KEYPOINT_CHANNELS,
    KEYPOINT_FLIP_ORDER,
    KEYPOINTS,
    MASK_CHANNEL,
    MAX_KEYPOINT_CHANNEL,
    NUM_CHANNELS,
)
from posecli.train.targets import (
    KEYPOINT_SIGMA,
    PART_SIGMA,
    TRUNCATION,
    render_heatmaps,
    support_radius,
)

NOSE = KEYPOINTS.index("nose")
NECK = KEYPOINTS.index("neck")
R_ELBOW, R_WRIST = KEYPOINTS.index("right_elbow"), KEYPOINTS.index("right_wrist")
FOREARM = BODY_PARTS.index((R_ELBOW, R_WRIST))


def one_person(**keypoints: tuple[float, float]) -> np.ndarray:
    """``(1, 18, 3)`` with the named keypoints labelled at ``(x, y)`` pixels."""
    person = np.zeros((1, len(KEYPOINTS), 3))
    for name, (x, y) in keypoints.items():
        person[0, KEYPOINTS.index(name)] = (x, y, 2)
    return person


def cell_centre(index: int, stride: int = 4) -> float:
    return stride * index + (stride - 1) / 2


def random_people(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    people = np.zeros((count, len(KEYPOINTS), 3))
    people[..., 0] = rng.uniform(-10, width + 10, (count, len(KEYPOINTS)))
    people[..., 1] = rng.uniform(-10, height + 10, (count, len(KEYPOINTS)))
    people[..., 2] = rng.integers(0, 3, (count, len(KEYPOINTS)))
    return people


@pytest.mark.parametrize(("height", "width", "stride"), [(97, 130, 4), (64, 64, 4), (30, 41, 2)])
def test_shape_dtype_and_range(height: int, width: int, stride: int) -> None:
    heatmaps = render_heatmaps(
        random_people(np.random.default_rng(0), 3, height, width), height, width, stride
    )
    assert heatmaps.shape == (NUM_CHANNELS, -(-height // stride), -(-width // stride))
    assert heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1


def test_no_people_gives_zeros() -> None:
    assert not render_heatmaps(np.zeros((0, 18, 3)), 40, 40).any()


def test_keypoint_peak_is_one_and_falls_off_with_sigma() -> None:
    x, y = cell_centre(10), cell_centre(7)
    heatmaps = render_heatmaps(one_person(nose=(x, y)), 80, 96)
    nose = heatmaps[KEYPOINT_CHANNELS][NOSE]  # (20, 24)
    assert nose[7, 10] == 1.0 and nose.argmax() == 7 * 24 + 10
    rows, cols = np.mgrid[0:20, 0:24]
    squared = (cell_centre(cols) - x) ** 2 + (cell_centre(rows) - y) ** 2
    expected = np.exp(-squared / (2 * KEYPOINT_SIGMA**2))
    expected[expected < TRUNCATION] = 0
    np.testing.assert_allclose(nose, expected, rtol=1e-6, atol=1e-7)
    assert nose[7, 10 + 7] == 0  # 28 px away: beyond the 26 px reach of a σ = 9 px Gaussian
    assert support_radius(KEYPOINT_SIGMA) == pytest.approx(26.08, abs=0.01)


def test_people_combine_by_maximum() -> None:
    people = np.concatenate([one_person(nose=(21.5, 21.5)), one_person(nose=(33.5, 21.5))])
    nose = render_heatmaps(people, 48, 64)[KEYPOINT_CHANNELS][NOSE]
    assert nose[5, 5] == 1.0 and nose[5, 8] == 1.0  # two peaks, neither lifted above 1
    assert nose[5, 6] == pytest.approx(np.exp(-16 / (2 * 81)), rel=1e-6)  # the nearer one wins


def test_body_part_is_highest_on_its_segment_and_zero_past_truncation() -> None:
    elbow, wrist = (cell_centre(5), cell_centre(10)), (cell_centre(15), cell_centre(10))
    heatmaps = render_heatmaps(one_person(right_elbow=elbow, right_wrist=wrist), 96, 96)
    forearm = heatmaps[FOREARM]  # horizontal segment along row 10, columns 5..15
    np.testing.assert_array_equal(forearm[10, 5:16], 1.0)
    for rows_off in (1, 2, 3, 4):  # across the segment: a Gaussian of σ = 7 px
        expected = np.exp(-((4 * rows_off) ** 2) / (2 * PART_SIGMA**2))
        expected = expected if expected >= TRUNCATION else 0.0
        np.testing.assert_allclose(forearm[10 + rows_off, 5:16], expected, rtol=1e-6)
        np.testing.assert_allclose(forearm[10 - rows_off, 5:16], expected, rtol=1e-6)
    assert forearm[10 + 6].max() == 0  # 24 px off the segment > 20.3 px reach
    assert forearm[10, 15 + 2] == pytest.approx(np.exp(-64 / 98), rel=1e-6)  # past the end
    assert forearm[10, 15 + 6] == 0
    assert forearm.max() == 1.0
    other_parts = np.delete(heatmaps[: len(BODY_PARTS)], FOREARM, axis=0)
    assert not other_parts.any()


def test_zero_length_part_is_a_round_blob() -> None:
    point = (cell_centre(6), cell_centre(6))
    forearm = render_heatmaps(one_person(right_elbow=point, right_wrist=point), 48, 48)[FOREARM]
    assert forearm[6, 6] == 1.0
    np.testing.assert_allclose(forearm[6, 8], forearm[8, 6], rtol=1e-7)


def test_unlabelled_keypoints_and_their_parts_are_not_drawn() -> None:
    person = one_person(right_elbow=(20.0, 20.0), right_wrist=(40.0, 20.0))
    person[0, R_WRIST, 2] = 0
    heatmaps = render_heatmaps(person, 48, 64)
    assert heatmaps[KEYPOINT_CHANNELS][R_ELBOW].max() > 0.9
    assert not heatmaps[KEYPOINT_CHANNELS][R_WRIST].any()
    assert not heatmaps[FOREARM].any()


def test_no_values_between_zero_and_the_truncation() -> None:
    heatmaps = render_heatmaps(random_people(np.random.default_rng(1), 4, 120, 90), 120, 90)
    drawn = heatmaps[:MASK_CHANNEL]
    assert not ((drawn > 0) & (drawn < TRUNCATION)).any()


def test_mask_and_max_channels() -> None:
    heatmaps = render_heatmaps(random_people(np.random.default_rng(2), 3, 100, 140), 100, 140)
    np.testing.assert_array_equal(heatmaps[MASK_CHANNEL], heatmaps[:MASK_CHANNEL].max(0) > 0)
    assert 0 < heatmaps[MASK_CHANNEL].mean() < 1
    np.testing.assert_array_equal(
        heatmaps[MAX_KEYPOINT_CHANNEL], heatmaps[KEYPOINT_CHANNELS].max(axis=0)
    )


@pytest.mark.parametrize("seed", range(5))
def test_flipped_targets_equal_targets_of_the_flipped_image(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(20, 120)), 4 * int(rng.integers(5, 30))  # width: whole cells
    people = random_people(rng, int(rng.integers(1, 5)), height, width)
    mirrored = people.copy()
    mirrored[..., 0] = width - 1 - people[..., 0]  # pixel centres: x ↦ W - 1 - x
    mirrored[:, KEYPOINT_FLIP_ORDER] = mirrored.copy()  # left ↔ right
    flipped_targets = render_heatmaps(people, height, width)[list(CHANNEL_FLIP_ORDER), :, ::-1]
    np.testing.assert_allclose(
        render_heatmaps(mirrored, height, width), flipped_targets, rtol=0, atol=1e-6
    )
