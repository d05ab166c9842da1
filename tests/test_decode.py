"""The decoder: native and reference agree, and both decode rendered ground truth correctly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from posecli.config import DecodeConfig
from posecli.decode import PART_LENGTHS, DecodedPoses, decode, native_available, reference
from posecli.decode import native as native_backend
from posecli.errors import DecoderError, UsageError
from posecli.spec import (
    BODY_PARTS,
    COCO_KEYPOINTS,
    KEYPOINT_CHANNELS,
    KEYPOINTS,
    NUM_CHANNELS,
    PART_FLIP_ORDER,
    coco_to_network,
)
from posecli.train.targets import render_heatmaps

EVAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"
STRIDE = 4
NOSE = KEYPOINTS.index("nose")
NECK = KEYPOINTS.index("neck")
NECK_NOSE_PART = BODY_PARTS.index((1, 0))

#: A standing person, COCO-17 order, pixels relative to the nose (x right, y down).
STANDING_PERSON = np.array(
    [[0, 0], [-6, -6], [6, -6], [-14, -2], [14, -2], [-26, 28], [26, 28], [-34, 66], [34, 66],
     [-38, 100], [38, 100], [-16, 108], [16, 108], [-18, 160], [18, 160], [-18, 212], [18, 212]],
    dtype=np.float64,
)  # fmt: skip


def grid_to_pixels(keypoints: np.ndarray) -> np.ndarray:
    """``(..., 2)`` grid coordinates → input pixels at stride 4."""
    return STRIDE * keypoints + (STRIDE - 1) / 2


def standing_person(nose_x: float, nose_y: float) -> np.ndarray:
    """``(17, 3)`` COCO keypoints, all labelled."""
    person = np.ones((17, 3))
    person[:, :2] = STANDING_PERSON + (nose_x, nose_y)
    return person


def random_people(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Up to 4 people of random keypoints (network order, pixels), ~80% of them labelled."""
    count = int(rng.integers(0, 5))
    people = np.zeros((count, len(KEYPOINTS), 3))
    for person in people:
        centre = rng.uniform((0, 0), (width, height))
        spread = rng.uniform(2, max(height, width) / 3 + 3)
        person[:, :2] = centre + rng.normal(0, spread, (len(KEYPOINTS), 2))
        person[:, 2] = rng.random(len(KEYPOINTS)) < 0.8
    return people


def random_heatmaps(rng: np.random.Generator) -> np.ndarray:
    """Rendered random people + noise at a random size; sometimes fp16 (plateaus) or NaN/inf."""
    height, width = (int(v) for v in rng.integers(4, 80, 2))
    heatmaps = render_heatmaps(random_people(rng, height, width), height, width)
    heatmaps += rng.normal(0, rng.choice([0.0, 0.02, 0.05]), heatmaps.shape).astype(np.float32)
    if rng.random() < 0.3:
        heatmaps = heatmaps.astype(np.float16).astype(np.float32)
    if rng.random() < 0.2:
        cells = tuple(rng.integers(0, size, 20) for size in heatmaps.shape)
        heatmaps[cells] = rng.choice([np.nan, np.inf, -np.inf, 5.0, -3.0], 20)
    return heatmaps


def assert_same_people(a: DecodedPoses, b: DecodedPoses) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=0, atol=1e-3)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)


def assert_well_formed(poses: DecodedPoses) -> None:
    assert poses.keypoints.dtype == np.float32 and poses.scores.dtype == np.float32
    assert poses.keypoints.shape == (len(poses), 17, 3)
    assert np.isfinite(poses.keypoints).all() and np.isfinite(poses.scores).all()
    assert (np.diff(poses.scores) <= 0).all()
    assert ((poses.scores >= 0) & (poses.scores <= 1)).all()
    missing = poses.keypoints[..., 2] == 0
    assert (poses.keypoints[missing] == 0).all()
    assert (poses.keypoints[..., 2] >= 0).all()


def test_native_decoder_is_built() -> None:
    assert native_available()


def test_native_matches_reference_on_500_random_sets() -> None:
    rng = np.random.default_rng(2020)
    decoded_people = 0
    for _ in range(500):
        heatmaps = random_heatmaps(rng)
        config = DecodeConfig(
            refinement=str(rng.choice(["gaussian", "centroid"])),
            max_peaks=int(rng.choice([100, 4])),
        )
        expected = decode(heatmaps, config, native=False)
        assert_well_formed(expected)
        assert_same_people(decode(heatmaps, config, native=True), expected)
        decoded_people += len(expected)
    assert decoded_people > 500  # the sets are not trivially empty


def eval_sets() -> list[Path]:
    if not EVAL_DIR.is_dir():
        pytest.skip(f"shared eval data not found at {EVAL_DIR}")
    return sorted(EVAL_DIR.glob("*/person_keypoints.json"))


def rendered_eval_images():  # -> Iterator[(image_id, people (P, 17, 3), heatmaps)]
    for path in eval_sets():
        dataset = json.loads(path.read_text())
        for image in dataset["images"]:
            people = [
                a["keypoints"]
                for a in dataset["annotations"]
                if a["image_id"] == image["id"] and not a.get("iscrowd") and a["num_keypoints"] > 0
            ]
            coco = np.array(people, dtype=np.float64).reshape(-1, 17, 3)
            heatmaps = render_heatmaps(coco_to_network(coco), image["height"], image["width"])
            yield image["id"], coco, heatmaps


def test_native_matches_reference_on_every_shared_eval_image() -> None:
    images = 0
    for _, _, heatmaps in rendered_eval_images():
        assert_same_people(decode(heatmaps, native=True), decode(heatmaps, native=False))
        images += 1
    assert images == 87


def test_full_people_of_shared_eval_images_decode_to_their_keypoints() -> None:
    for image_id, coco, heatmaps in rendered_eval_images():
        poses = decode(heatmaps)
        for person in coco[coco[:, :, 2].min(axis=1) > 0]:  # every keypoint labelled
            errors = np.linalg.norm(
                grid_to_pixels(poses.keypoints[:, :, :2]) - person[None, :, :2], axis=2
            )  # (P, 17)
            assert errors.max(axis=1).min() < 1.5, f"image {image_id}: person not found"


def test_two_person_scene_decodes_into_the_two_people() -> None:
    people = np.stack([standing_person(60.3, 30.7), standing_person(161.6, 41.2)])  # (2, 17, 3)
    heatmaps = render_heatmaps(coco_to_network(people), 280, 220)
    for native in (True, False):
        poses = decode(heatmaps, native=native)
        assert len(poses) == 2
        order = np.argsort(poses.keypoints[:, 0, 0])  # left to right by nose
        found = grid_to_pixels(poses.keypoints[order, :, :2])
        np.testing.assert_allclose(found, people[:, :, :2], atol=0.05)
        assert (poses.keypoints[:, :, 2] > 0.95).all()  # the peak cell is ≤ 2.8 px off
        assert (poses.scores > 0.9).all()


def test_keypoint_on_a_plateau_is_found_once() -> None:
    # Nose and neck at x = 83.5 = 4·20.5 + 1.5, midway between two cell centres: two equal
    # neighbouring maxima each. Kept twice, they would split the person.
    person = standing_person(83.5, 30.0)
    heatmaps = render_heatmaps(coco_to_network(person[None]), 280, 200)
    neck_map = heatmaps[KEYPOINT_CHANNELS][NECK]
    row, col = np.unravel_index(neck_map.argmax(), neck_map.shape)
    assert neck_map[row, col] == neck_map[row, col + 1]  # the plateau is really there
    assert len(reference.find_peaks(neck_map, np.float32(0.1), 100)) == 1
    for native in (True, False):
        poses = decode(heatmaps, native=native)
        assert len(poses) == 1
        assert (poses.keypoints[0, :, 2] > 0).all()
        np.testing.assert_allclose(
            grid_to_pixels(poses.keypoints[0, :, :2]), person[:, :2], atol=0.05
        )


def test_plateau_of_equal_cells_yields_the_first_in_raster_order() -> None:
    keypoint_map = np.zeros((6, 7), dtype=np.float32)
    keypoint_map[2:4, 3:5] = 0.8  # a 2×2 plateau
    keypoint_map[5, 0] = 0.5  # an isolated peak on the border
    np.testing.assert_array_equal(
        reference.find_peaks(keypoint_map, np.float32(0.1), 100), [[2, 3], [5, 0]]
    )


def test_peak_cap_keeps_the_highest_peaks() -> None:
    keypoint_map = np.zeros((5, 9), dtype=np.float32)
    keypoint_map[1, [1, 3, 5, 7]] = [0.3, 0.9, 0.3, 0.5]
    np.testing.assert_array_equal(
        reference.find_peaks(keypoint_map, np.float32(0.1), 3), [[1, 1], [1, 3], [1, 7]]
    )


def neck_nose_scene(neck_map: np.ndarray, nose_map: np.ndarray) -> np.ndarray:
    """A (50, H, W) stack with the given neck and nose maps and the neck–nose part drawn as a
    Gaussian ridge (σ 1.75 cells) along the segment between their maxima."""
    heatmaps = np.zeros((NUM_CHANNELS, *neck_map.shape), dtype=np.float32)
    heatmaps[KEYPOINT_CHANNELS.start + NECK] = neck_map
    heatmaps[KEYPOINT_CHANNELS.start + NOSE] = nose_map
    start, end = (
        np.array(np.unravel_index(m.argmax(), m.shape))[::-1] for m in (neck_map, nose_map)
    )  # (x, y) cells of the maxima
    rows, cols = np.mgrid[0 : neck_map.shape[0], 0 : neck_map.shape[1]]
    cells = np.stack([cols, rows], axis=-1) - start  # (H, W, 2) offsets from the start, (x, y)
    along = np.clip(cells @ (end - start) / np.dot(end - start, end - start), 0, 1)
    distance = np.linalg.norm(cells - along[..., None] * (end - start), axis=-1)
    heatmaps[NECK_NOSE_PART] = np.exp(-(distance**2) / (2 * 1.75**2))
    return heatmaps


def decoded_network_keypoint(poses: DecodedPoses, name: str) -> np.ndarray:
    assert len(poses) == 1
    return poses.keypoints[0, COCO_KEYPOINTS.index(name)]


def test_gaussian_refinement_recovers_sub_cell_positions() -> None:
    rows, cols = np.mgrid[0:20, 0:24]
    neck = (9.3, 6.72)  # (x, y) grid
    nose = (14.61, 13.45)

    def gaussian(x: float, y: float) -> np.ndarray:
        return np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * 2.25**2)).astype(np.float32)

    heatmaps = neck_nose_scene(gaussian(*neck), gaussian(*nose))
    for native in (True, False):
        poses = decode(heatmaps, native=native)
        np.testing.assert_allclose(decoded_network_keypoint(poses, "nose")[:2], nose, atol=1e-3)


def test_centroid_refinement_recovers_sub_cell_positions_without_swapping_axes() -> None:
    neck_map = np.zeros((20, 24), dtype=np.float32)
    neck_map[5, 6] = 1.0
    nose_map = np.zeros((20, 24), dtype=np.float32)
    nose_map[12, 15] = 0.6  # weights 0.6 / 0.2 / 0.2: centroid at x = 15 + 0.2, y = 12 - 0.2
    nose_map[12, 16] = 0.2
    nose_map[11, 15] = 0.2
    heatmaps = neck_nose_scene(neck_map, nose_map)
    config = DecodeConfig(refinement="centroid")
    for native in (True, False):
        poses = decode(heatmaps, config, native=native)
        np.testing.assert_allclose(
            decoded_network_keypoint(poses, "nose"), (15.2, 11.8, 0.6), atol=1e-6
        )


@pytest.mark.parametrize(("height", "width"), [(3, 11), (5, 13), (2, 50), (7, 32)])
def test_keypoints_at_scan_block_edges_and_in_map_tails_are_found(height: int, width: int) -> None:
    # The native peak scan reads a map as blocks of 32 cells plus a tail of H·W mod 32 cells:
    # the nose sits in the last cell (in the tail, or the last cell of a block), the neck in
    # cell 31 (the last of the first block), each beside a NaN.
    nose_map = np.zeros((height, width), dtype=np.float32)
    nose_map[-1, -1] = 0.8
    neck_map = np.zeros((height, width), dtype=np.float32)
    neck_map.flat[31] = 0.9
    heatmaps = neck_nose_scene(neck_map, nose_map)
    heatmaps[KEYPOINT_CHANNELS.start + NOSE].flat[-2] = np.nan
    heatmaps[KEYPOINT_CHANNELS.start + NECK].flat[30] = np.nan
    for native in (True, False):
        poses = decode(heatmaps, native=native)
        np.testing.assert_allclose(
            decoded_network_keypoint(poses, "nose"), (width - 1, height - 1, 0.8), atol=1e-6
        )


def test_completion_joins_a_wrist_whose_elbow_is_missing() -> None:
    person = standing_person(100.0, 40.0)
    person[7, 2] = 0  # left elbow not labelled: nothing links the left wrist to the body
    heatmaps = render_heatmaps(coco_to_network(person[None]), 300, 200)
    wrist = COCO_KEYPOINTS.index("left_wrist")
    for native in (True, False):
        with_completion = decode(heatmaps, native=native)
        assert len(with_completion) == 1
        np.testing.assert_allclose(
            grid_to_pixels(with_completion.keypoints[0, wrist, :2]), person[wrist, :2], atol=0.05
        )
        without = decode(heatmaps, DecodeConfig(completion_reach=0), native=native)
        assert without.keypoints[0, wrist, 2] == 0


def test_completion_joins_an_arm_fragment_to_the_body() -> None:
    person = standing_person(100.0, 40.0)
    person[5, 2] = 0  # no left shoulder (so no neck): the left elbow–wrist pair floats free
    heatmaps = render_heatmaps(coco_to_network(person[None]), 300, 200)
    assert len(decode(heatmaps, DecodeConfig(completion_reach=0))) == 2
    for native in (True, False):
        poses = decode(heatmaps, native=native)
        assert len(poses) == 1
        np.testing.assert_array_equal(poses.keypoints[0, :, 2] > 0, person[:, 2] > 0)
        np.testing.assert_allclose(
            grid_to_pixels(poses.keypoints[0, 7:10:2, :2]), person[7:10:2, :2], atol=0.05
        )


def crowd_with_a_stray_hip() -> tuple[np.ndarray, np.ndarray]:
    """A crowded row (COCO ``(5, 17, 3)``, pixels) and its rendered heatmaps: four people, three
    complete and the fourth half behind the third without its left hip, and a lone left hip
    (all that shows of a fifth) just left of the row. Along the 224 px from the fourth person's
    right hip to the lone left hip, the hip–hip part map is high nearly all the way: it crosses
    the three others' hip–hip parts."""
    row = [standing_person(100.0 + 64 * i, 40.0) for i in range(3)]
    last = standing_person(268.0, 40.0)
    last[COCO_KEYPOINTS.index("left_hip"), 2] = 0
    lone = np.zeros((17, 3))
    lone[COCO_KEYPOINTS.index("left_hip")] = (60.0, 148.0, 1.0)
    people = np.stack([*row, last, lone])
    return people, render_heatmaps(coco_to_network(people), 480, 360)


def test_a_part_out_of_proportion_does_not_link_a_stray_keypoint_in_a_crowd() -> None:
    people, heatmaps = crowd_with_a_stray_hip()
    left_hip = COCO_KEYPOINTS.index("left_hip")
    # Without the proportion rule the fourth person takes the lone hip: 246 px wide.
    unchecked = decode(heatmaps, DecodeConfig(part_proportion_factor=0))
    hips = grid_to_pixels(unchecked.keypoints[:, left_hip, :2])
    assert np.isclose(hips, people[4, left_hip, :2], atol=0.05).all(axis=1).any()
    for native in (True, False):
        poses = decode(heatmaps, native=native)
        assert len(poses) == 4
        for person in poses.keypoints:  # every keypoint found is one of a single person's own
            found = person[:, 2] > 0
            errors = np.linalg.norm(
                grid_to_pixels(person[None, :, :2]) - people[:4, :, :2], axis=2
            )  # (4, 17)
            matched = errors[:, found].max(axis=1) < 0.05
            assert matched.sum() == 1
            assert found.sum() == people[:4][matched, :, 2].astype(bool).sum()
    assert_same_people(decode(heatmaps, native=True), decode(heatmaps, native=False))


def test_a_part_starting_a_person_is_checked_against_the_other_parts_at_its_ends() -> None:
    # peak 0 has a part of scale 4 to peak 1 and one of scale 40 to peak 2; peak 3 is alone
    short = reference.Connection(0, 1, 1.0, 2.0, 4.0)  # a, b, score, length, scale
    long = reference.Connection(0, 2, 1.0, 20.0, 40.0)
    lone = reference.Connection(3, 4, 1.0, 20.0, 40.0)
    exempt = reference.Connection(0, 5, 1.0, 20.0, 0.0)  # a part inside the head
    peak_scales = reference.scales_at_peaks([[short, long], [lone, exempt]], 6)
    np.testing.assert_array_equal(peak_scales[0], [4.0, 40.0])
    assert reference.median_of_others(np.array([1.0, 2.0, 3.0, 10.0]), 10.0) == 2.0
    assert reference.median_of_others(np.array([4.0]), 4.0) is None
    config = DecodeConfig()
    assert reference.in_proportion(short, 0.0, peak_scales, config)
    assert not reference.in_proportion(long, 0.0, peak_scales, config)  # 40 ≥ 3.5 × 4
    assert reference.in_proportion(long, 12.0, peak_scales, config)  # the person's own scale
    assert not reference.in_proportion(long, 11.0, peak_scales, config)
    assert reference.in_proportion(lone, 0.0, peak_scales, config)  # nothing to compare with
    assert reference.in_proportion(exempt, 0.0, peak_scales, config)
    assert reference.in_proportion(long, 0.0, peak_scales, DecodeConfig(part_proportion_factor=0))


def test_part_lengths_are_mirror_symmetric_and_exempt_only_the_head() -> None:
    assert PART_LENGTHS.shape == (len(BODY_PARTS),)
    np.testing.assert_array_equal(PART_LENGTHS[list(PART_FLIP_ORDER)], PART_LENGTHS)
    head = {k for k, name in enumerate(KEYPOINTS) if name[-4:] in ("nose", "_eye", "_ear")}
    exempt = np.array([set(part) <= head for part in BODY_PARTS])  # nose–eyes, eyes–ears
    assert exempt.sum() == 4
    assert (PART_LENGTHS[exempt] == 0).all() and (PART_LENGTHS[~exempt] > 0).all()


@pytest.mark.parametrize(
    "lengths", [PART_LENGTHS[:-1], -PART_LENGTHS, np.where(PART_LENGTHS > 0.5, np.nan, 1.0)]
)
def test_native_refuses_bad_part_lengths(lengths: np.ndarray) -> None:
    with pytest.raises(ValueError, match="part_lengths"):
        native_backend.decode_poses(
            np.zeros((NUM_CHANNELS, 8, 8), dtype=np.float32),
            np.array(BODY_PARTS, dtype=np.intc),
            np.ascontiguousarray(lengths, dtype=np.float64),
            len(KEYPOINTS),
            np.arange(17, dtype=np.intc),
            DecodeConfig(),
        )


def test_max_people_keeps_the_best() -> None:
    people = np.stack([standing_person(45.0 + 90 * i, 30.0) for i in range(4)])
    people[1:, 11:, 2] = 0  # three people without legs score lower
    heatmaps = render_heatmaps(coco_to_network(people), 280, 360)
    everyone = decode(heatmaps)
    assert len(everyone) == 4
    best_two = decode(heatmaps, DecodeConfig(max_people=2))
    assert len(best_two) == 2
    np.testing.assert_array_equal(best_two.scores, everyone.scores[:2])
    assert (best_two.keypoints[0, 11:, 2] > 0).all()  # the full person comes first


def test_native_sorts_and_cuts_like_the_reference() -> None:
    # Four copies of one person 22 cells apart: equal scores, so ties keep assembly order.
    people = np.stack([standing_person(45.0 + 88 * i, 30.0) for i in range(4)])
    heatmaps = render_heatmaps(coco_to_network(people), 280, 360)
    assert len(set(decode(heatmaps).scores.tolist())) == 1
    for max_people in (0, 1, 3):
        config = DecodeConfig(max_people=max_people)
        poses = decode(heatmaps, config)
        assert len(poses) == (max_people or 4)
        assert_same_people(poses, decode(heatmaps, config, native=False))


@pytest.mark.parametrize(
    "heatmaps",
    [
        np.zeros((50, 30, 40), dtype=np.float32),
        np.ones((50, 30, 40), dtype=np.float32),
        -np.ones((50, 30, 40), dtype=np.float32),
        np.full((50, 30, 40), np.nan, dtype=np.float32),
        np.full((50, 30, 40), np.inf, dtype=np.float32),
        np.zeros((50, 1, 1), dtype=np.float32),
        np.ones((50, 1, 1), dtype=np.float32),
        np.ones((50, 1, 7), dtype=np.float32),
        np.random.default_rng(1).normal(0, 1, (50, 30, 40)).astype(np.float32),
        np.random.default_rng(2).random((50, 3, 2)).astype(np.float64),
        np.random.default_rng(3).random((50, 25, 31)).astype(np.float16),
    ],
    ids=[
        "zeros",
        "ones",
        "negative",
        "nan",
        "inf",
        "1x1-zero",
        "1x1-one",
        "1x7",
        "noise",
        "float64",
        "float16",
    ],
)
def test_any_input_the_network_could_emit_decodes_the_same_both_ways(
    heatmaps: np.ndarray,
) -> None:
    config = DecodeConfig(max_peaks=6)  # keeps the reference quick on noise
    expected = decode(heatmaps, config, native=False)
    assert_well_formed(expected)
    assert_same_people(decode(heatmaps, config, native=True), expected)


def test_thousands_of_peaks_are_capped() -> None:
    rng = np.random.default_rng(4)
    heatmaps = rng.random((50, 200, 200)).astype(np.float32)  # ~4,000 peaks per keypoint map
    poses = decode(heatmaps)
    assert_well_formed(poses)
    assert len(poses) <= 30 * DecodeConfig().max_peaks


@pytest.mark.parametrize(
    "heatmaps",
    [
        np.zeros((49, 10, 10), dtype=np.float32),
        np.zeros((50, 10), dtype=np.float32),
        np.zeros((1, 50, 10, 10), dtype=np.float32),
        np.zeros((50, 0, 10), dtype=np.float32),
        np.zeros((50, 10, 10), dtype=np.int32),
        np.zeros((50, 10, 10), dtype=bool),
        np.zeros((50, 10, 10), dtype=np.complex64),
    ],
    ids=["channels", "2d", "4d", "empty", "int", "bool", "complex"],
)
def test_wrong_shape_or_dtype_raises_decoder_error(heatmaps: np.ndarray) -> None:
    for native in (True, False):
        with pytest.raises(DecoderError):
            decode(heatmaps, native=native)


def test_non_array_raises_decoder_error() -> None:
    with pytest.raises(DecoderError, match="numpy array"):
        decode([[[0.0]]] * 50)


@pytest.mark.parametrize(
    "changes",
    [
        {"peak_threshold": 0.0},
        {"max_peaks": 0},
        {"max_part_samples": 0},
        {"refine_radius": -1},
        {"refinement": "parabola"},
        {"part_proportion_factor": -1.0},
        {"part_proportion_factor": float("nan")},
    ],
)
def test_invalid_config_raises_usage_error(changes: dict) -> None:
    with pytest.raises(UsageError, match=next(iter(changes))):
        dataclasses.replace(DecodeConfig(), **changes)


def test_reference_sanitises_like_the_native_reads() -> None:
    maps = np.array([[np.nan, np.inf, -np.inf, 2e6, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(reference.sanitised(maps), [[0.0, 1e6, -1e6, 1e6, 0.5]])
