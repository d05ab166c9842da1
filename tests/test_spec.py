"""The skeleton spec: orders, flips and the COCO mapping."""

import numpy as np

from posecli import spec


def test_counts_and_channels():
    assert spec.NUM_KEYPOINTS == 18
    assert spec.NUM_BODY_PARTS == 30
    assert spec.NUM_CHANNELS == 50
    assert (spec.MASK_CHANNEL, spec.MAX_KEYPOINT_CHANNEL) == (48, 49)
    assert spec.BODY_PARTS[:3] == ((1, 0), (1, 14), (1, 15))
    assert spec.BODY_PARTS[spec.REDUNDANT_PARTS[0]] == (0, 2)


def test_flip_orders_are_involutions():
    for order in (spec.KEYPOINT_FLIP_ORDER, spec.PART_FLIP_ORDER, spec.CHANNEL_FLIP_ORDER):
        order = np.array(order)
        assert sorted(order) == list(range(len(order)))
        np.testing.assert_array_equal(order[order], np.arange(len(order)))


def test_keypoint_flip_swaps_sides():
    names = spec.KEYPOINTS
    for k, m in enumerate(spec.KEYPOINT_FLIP_ORDER):
        if names[k].startswith("left_"):
            assert names[m] == "right_" + names[k][5:]
        elif names[k] in ("nose", "neck"):
            assert m == k


def test_part_flip_maps_mirrored_ends():
    for p, q in enumerate(spec.PART_FLIP_ORDER):
        a, b = spec.BODY_PARTS[p]
        mirrored = {spec.KEYPOINT_FLIP_ORDER[a], spec.KEYPOINT_FLIP_ORDER[b]}
        assert set(spec.BODY_PARTS[q]) == mirrored
    hips = spec.BODY_PARTS.index((8, 11))
    assert spec.PART_FLIP_ORDER[hips] == hips


def test_coco_mapping_round_trip_and_neck():
    coco = np.zeros((17, 3))
    coco[:, 0] = np.arange(17) * 10.0
    coco[:, 1] = 5.0
    coco[:, 2] = 2
    network = spec.coco_to_network(coco)
    assert network.shape == (18, 3)
    np.testing.assert_array_equal(spec.network_to_coco(network), coco)
    left, right = coco[5], coco[6]
    np.testing.assert_allclose(network[spec.NECK, :2], (left[:2] + right[:2]) / 2)
    assert network[spec.KEYPOINTS.index("left_eye"), 0] == coco[1, 0]


def test_neck_missing_without_both_shoulders():
    coco = np.zeros((2, 17, 3))
    coco[0, 5] = [10, 10, 2]
    coco[1, 5] = [10, 10, 2]
    coco[1, 6] = [20, 10, 1]
    network = spec.coco_to_network(coco)
    np.testing.assert_array_equal(network[0, spec.NECK], 0)
    np.testing.assert_allclose(network[1, spec.NECK], [15, 10, 1])
