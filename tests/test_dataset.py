"""Training dataset: augmentation keeps labels on their pixels, flips, miss-masks, pseudo-labels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from coco_synthetic import (
    noise_images,
    person_annotation,
    person_keypoints,
    region_annotation,
    write_coco,
    write_people_set,
)

from posecli.config import AugmentConfig, Preprocessing, TrainConfig
from posecli.errors import InputError, UsageError
from posecli.spec import (
    CHANNEL_FLIP_ORDER,
    COCO_KEYPOINTS,
    COCO_TO_NETWORK,
    KEYPOINT_CHANNELS,
    KEYPOINT_FLIP_ORDER,
    MASK_CHANNEL,
    MAX_KEYPOINT_CHANNEL,
    NUM_CHANNELS,
)
from posecli.train.dataset import CocoKeypointDataset
from posecli.train.masks import miss_mask_pyramid, scale_shapes

SIZE = 128
SHAPES = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
STRONG = AugmentConfig(scale_min=0.8, scale_max=1.3, rotate_degrees=40, shift_fraction=0.1)


def _dataset(annotations: Path, images: Path, **options) -> CocoKeypointDataset:
    return CocoKeypointDataset(annotations, images, input_size=SIZE, **options)


def test_items_have_the_documented_shapes_and_preprocessing(tmp_path: Path):
    annotations, images = write_people_set(tmp_path, count=2)
    dataset = _dataset(annotations, images, augment=STRONG)
    image, targets, masks = dataset[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert [tuple(t.shape) for t in targets] == [(NUM_CHANNELS, *s) for s in SHAPES]
    assert [tuple(m.shape) for m in masks] == [(1, *s) for s in SHAPES]
    crop = dataset.augmented(0).image  # RGB uint8; default preprocessing: BGR / 255
    expected = torch.from_numpy(crop[..., ::-1].transpose(2, 0, 1) / 255.0).float()
    assert torch.allclose(image, expected)
    assert all(t.max() <= 1.0 and t.min() >= 0.0 for t in targets)
    # coarser scales are average pools of the stride-4 targets
    assert torch.allclose(targets[1], torch.nn.functional.avg_pool2d(targets[0][None], 2)[0])


def test_draws_depend_on_seed_epoch_and_index_only(tmp_path: Path):
    annotations, images = write_people_set(tmp_path, count=2)
    first = _dataset(annotations, images, augment=STRONG, seed=3)
    second = _dataset(annotations, images, augment=STRONG, seed=3)
    assert torch.equal(first[1][0], second[1][0])
    first.set_epoch(1)
    assert not torch.equal(first[1][0], second[1][0])
    second.set_epoch(1)
    assert torch.equal(first[1][0], second[1][0])


def _blob_image(height: int, width: int, centre: tuple[float, float]) -> np.ndarray:
    """Dark grey RGB image with a bright Gaussian blob (σ 2 px) at ``centre``."""
    y, x = np.mgrid[:height, :width]
    blob = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * 2.0**2))
    return np.repeat((40 + 200 * blob).round().astype(np.uint8)[..., None], 3, axis=2)


def _centroid(image: np.ndarray) -> np.ndarray:
    """``[x, y]`` centroid of the pixels brighter than half the brightest one (channel 0)."""
    values = image[..., 0].astype(np.float64)
    weights = np.where(values > (values.max() + values.min()) / 2, values - values.min(), 0.0)
    y, x = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(weights * x).sum(), (weights * y).sum()]) / weights.sum()


@pytest.mark.parametrize("flip_probability", [0.0, 1.0])
def test_augmentation_moves_keypoints_with_their_pixels(tmp_path: Path, flip_probability: float):
    keypoints = person_keypoints((70, 52), scale=1.2)
    wrist = COCO_KEYPOINTS.index("left_wrist")
    image = _blob_image(112, 144, tuple(keypoints[wrist, :2]))
    annotations, images = write_coco(tmp_path, [image], [person_annotation(1, 1, keypoints)])
    augment = AugmentConfig(
        scale_min=0.7, scale_max=1.3, rotate_degrees=40, shift_fraction=0.15,
        flip_probability=flip_probability, brightness=0.2, contrast=0.2, saturation=0.2,
    )  # fmt: skip
    preprocessing = Preprocessing(pad_value=40)
    dataset = _dataset(annotations, images, augment=augment, preprocessing=preprocessing)
    wrist = COCO_TO_NETWORK[wrist]
    labelled_as = KEYPOINT_FLIP_ORDER[wrist] if flip_probability else wrist
    for epoch in range(4):
        dataset.set_epoch(epoch)
        sample = dataset.augmented(0)
        blob = _centroid(sample.image)
        assert np.abs(sample.people[0, labelled_as, :2] - blob).max() < 0.5
        # the target peak of that keypoint sits on the cell holding the blob
        heatmap = dataset[0][1][0][KEYPOINT_CHANNELS.start + labelled_as].numpy()
        row, column = np.unravel_index(heatmap.argmax(), heatmap.shape)
        assert np.abs(np.array([4 * column + 1.5, 4 * row + 1.5]) - blob).max() <= 2.0 + 0.5


def test_mosaic_puts_four_views_in_the_quarters_with_their_labels(tmp_path: Path):
    keypoints = person_keypoints((70, 52), scale=1.2)
    wrist = COCO_KEYPOINTS.index("left_wrist")
    image = _blob_image(112, 144, tuple(keypoints[wrist, :2]))
    scores = np.full(17, 0.9)
    annotations, images = write_coco(
        tmp_path, [image], [person_annotation(1, 1, keypoints, scores)]
    )
    augment = AugmentConfig(
        scale_min=0.6, scale_max=1.6, rotate_degrees=30, shift_fraction=0.3,
        flip_probability=0.0, mosaic_probability=1.0,
    )  # fmt: skip
    preprocessing = Preprocessing(pad_value=40)
    dataset = _dataset(annotations, images, augment=augment, preprocessing=preprocessing)
    wrist, half = COCO_TO_NETWORK[wrist], SIZE // 2
    checked = dropped = 0
    for epoch in range(6):
        dataset.set_epoch(epoch)
        sample = dataset.augmented(0)
        assert sample.image.shape == (SIZE, SIZE, 3) and sample.ignored.shape == (SIZE, SIZE)
        assert sample.people.shape == (4, 18, 3) and sample.scores.shape == (4, 18)
        for tile, person in enumerate(sample.people):  # one person per view, in tile order
            top, left = divmod(tile, 2)
            corner = np.array([left * half, top * half])
            visible = person[person[:, 2] > 0, :2]
            dropped += 18 - len(visible)
            assert np.all((visible >= corner - 0.5) & (visible < corner + half - 0.5))
            if (
                person[wrist, 2] > 0
                and np.all(person[wrist, :2] - corner > 4)
                and np.all(corner + half - person[wrist, :2] > 4)
            ):  # the whole blob is inside the quarter
                quarter = sample.image[corner[1] : corner[1] + half, corner[0] : corner[0] + half]
                assert np.abs(person[wrist, :2] - corner - _centroid(quarter)).max() < 0.5
                checked += 1
        image, targets, masks = dataset[0]
        assert image.shape == (3, SIZE, SIZE)
        assert [tuple(m.shape) for m in masks] == [(NUM_CHANNELS, *s) for s in SHAPES]
    assert checked >= 12 and dropped > 0  # most wrists were checked; some keypoints left


def test_flip_of_targets_equals_targets_of_the_flipped_image(tmp_path: Path):
    annotations, images = write_people_set(tmp_path, count=2)
    plain = _dataset(annotations, images, augment=replace(STRONG, flip_probability=0.0))
    mirrored = _dataset(annotations, images, augment=replace(STRONG, flip_probability=1.0))
    for index in range(2):
        image, targets, _ = plain[index]
        flipped_image, flipped_targets, _ = mirrored[index]
        # same draws, so the flipped crop is the mirror of the plain crop (to interpolation)
        assert (flipped_image - image.flip(-1)).abs().max() <= 2.0 / 255
        for target, flipped in zip(targets, flipped_targets, strict=True):
            expected = target[list(CHANNEL_FLIP_ORDER)].flip(-1)
            assert torch.allclose(flipped, expected, atol=1e-5)
        assert targets[0][KEYPOINT_CHANNELS].max() > 0.9


def test_crowd_and_keypointless_people_are_masked_at_every_scale(tmp_path: Path):
    keypoints = person_keypoints((32, 64), scale=1.2)
    annotations = [
        person_annotation(1, 1, keypoints),
        region_annotation(2, 1, (64.0, 0.0, 64.0, 64.0), crowd=True),  # top-right quarter
        region_annotation(3, 1, (64.0, 64.0, 64.0, 64.0), crowd=False),  # bottom-right, no kps
    ]
    annotations, images = write_coco(tmp_path, noise_images(1, 128, 128), annotations)
    dataset = _dataset(annotations, images)  # no augmentation: the 128² image fills the crop
    _, targets, masks = dataset[0]
    for mask in masks:
        half = mask.shape[-1] // 2
        assert not mask[0, :, half:].any()  # right half ignored (crowd above, no-kp below)
        assert mask[0, :, :half].all()
    assert targets[0][KEYPOINT_CHANNELS].max() > 0.9


def test_miss_mask_ignores_cells_at_least_half_covered():
    ignored = np.zeros((16, 16), dtype=bool)
    ignored[0:4, 0:2] = True  # half of cell (0, 0)
    ignored[0:4, 4:5] = True  # a quarter of cell (0, 1)
    masks = miss_mask_pyramid(ignored, scale_shapes(16, 16, num_scales=3))
    assert masks[0][0, 0, 0] == 0 and masks[0][0, 0, 1] == 1
    assert masks[0].sum() == 16 - 1
    assert masks[1][0, 0, 0] == 1  # 12 of 64 pixels
    assert masks[2].tolist() == [[[1.0]]]


def test_pseudo_labels_ignore_and_weight_keypoints(tmp_path: Path):
    keypoints = person_keypoints((64, 64), scale=1.2)
    scores = np.full(17, 0.9)
    nose, wrist = COCO_KEYPOINTS.index("nose"), COCO_KEYPOINTS.index("right_wrist")
    scores[nose] = 0.1  # below the threshold: ignored
    scores[wrist] = 0.6  # kept, weighted 0.6
    annotations, images = write_coco(
        tmp_path, noise_images(1, 128, 128), [person_annotation(1, 1, keypoints, scores)]
    )
    dataset = _dataset(annotations, images, min_keypoint_score=0.3, weight_by_score=True)
    _, targets, masks = dataset[0]
    assert [tuple(m.shape) for m in masks] == [(NUM_CHANNELS, *s) for s in SHAPES]
    nose_channel = KEYPOINT_CHANNELS.start + COCO_TO_NETWORK[nose]
    wrist_channel = KEYPOINT_CHANNELS.start + COCO_TO_NETWORK[wrist]
    x, y = keypoints[nose, :2]
    row, column = int(y // 4), int(x // 4)
    assert targets[0][nose_channel].max() == 0.0  # not taught present …
    assert masks[0][nose_channel, row, column] == 0.0  # … nor absent
    assert masks[0][MAX_KEYPOINT_CHANNEL, row, column] == 0.0
    assert masks[0][MASK_CHANNEL, row, column] == 0.0
    x, y = keypoints[wrist, :2]
    assert masks[0][wrist_channel, int(y // 4), int(x // 4)] == pytest.approx(0.6)
    assert targets[0][wrist_channel].max() > 0.9
    assert masks[0][wrist_channel, 0, 0] == 1.0  # far away
    assert masks[0][KEYPOINT_CHANNELS.start + 2].min() == pytest.approx(0.9)  # right shoulder


def test_people_whose_keypoints_are_all_doubtful_become_ignore_regions(tmp_path: Path):
    keypoints = person_keypoints((64, 64), scale=1.2)
    annotations, images = write_coco(
        tmp_path, noise_images(1, 128, 128),
        [person_annotation(1, 1, keypoints, np.full(17, 0.9)),
         person_annotation(2, 1, person_keypoints((20, 40), scale=0.5), np.full(17, 0.1))],
    )  # fmt: skip
    dataset = _dataset(annotations, images, min_keypoint_score=0.3)
    entry = dataset.entries[0]
    assert len(entry.people) == 1 and len(entry.ignore_annotations) == 1
    _, _, masks = dataset[0]
    assert masks[0][:, 40 // 4, 20 // 4].max() == 0.0  # inside the doubtful person's box


def test_a_warning_when_the_threshold_masks_keypoints_the_labeller_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    keypoints = person_keypoints((64, 64), scale=1.2)
    annotations, images = write_coco(
        tmp_path, noise_images(1, 128, 128), [person_annotation(1, 1, keypoints, np.full(17, 0.9))]
    )
    labelled = json.loads(annotations.read_text())
    info = {"label_settings": {"keep_keypoint": 0.15}}  # as posecli label writes it
    annotations.write_text(json.dumps({**labelled, "info": info}))
    _dataset(annotations, images, min_keypoint_score=0.15)
    assert "masked out" not in caplog.text
    _dataset(annotations, images, min_keypoint_score=0.3)
    assert "keeps keypoints scored from 0.15, but those below 0.3 are masked out" in caplog.text


def test_rgb_preprocessing_and_bad_inputs(tmp_path: Path):
    annotations, images = write_people_set(tmp_path, count=2)
    preprocessing = Preprocessing(colour_order="RGB", scale=1.0, mean=(1.0, 2.0, 3.0))
    dataset = _dataset(annotations, images, preprocessing=preprocessing)
    crop = dataset.augmented(0).image
    image = dataset[0][0]
    assert torch.allclose(image[2], torch.from_numpy(crop[..., 2].astype(np.float32)) - 3.0)
    with pytest.raises(UsageError, match="multiple of 64"):
        CocoKeypointDataset(annotations, images, input_size=100)
    with pytest.raises(InputError, match="cannot read annotations"):
        CocoKeypointDataset(tmp_path / "missing.json", images)
    (images / "0001.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot decode image"):
        dataset[0]


def test_several_datasets_are_served_as_one_in_order(tmp_path: Path):
    plain_annotations, plain_images = write_people_set(tmp_path / "plain", count=2)
    keypoints = person_keypoints((64, 64), scale=1.2)
    scored = [person_annotation(1, 1, keypoints, np.full(17, 0.9))]
    scored_annotations, scored_images = write_coco(
        tmp_path / "scored", noise_images(1, 128, 128), scored
    )
    config = TrainConfig(
        annotations=str(plain_annotations),
        images=str(plain_images),
        more_datasets=((str(scored_annotations), str(scored_images)),),
        input_size=SIZE,
        augment=STRONG,
    )
    joined = CocoKeypointDataset.from_config(config, Preprocessing())
    plain = _dataset(plain_annotations, plain_images, augment=STRONG)
    scored_set = _dataset(scored_annotations, scored_images, augment=STRONG)
    assert len(joined) == len(plain) + len(scored_set) == 3
    assert torch.equal(joined[(2, 1)][0], plain[(2, 1)][0])
    assert torch.equal(joined[(2, 2)][0], scored_set[(2, 0)][0])
    # one part carries pseudo-label scores: every part yields per-channel masks
    assert joined[0][2][0].shape == (NUM_CHANNELS, *SHAPES[0])
    with pytest.raises(IndexError):
        joined[3]
    restored = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
