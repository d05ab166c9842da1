"""The Estimator on stand-in networks whose heatmaps are known analytically."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import posecli.estimator as estimator_module
from posecli.assemble import build_estimator
from posecli.config import DecodeConfig, InferenceConfig, ModelConfig, Preprocessing
from posecli.decode import DecodedPoses
from posecli.errors import CheckpointError, InputError, UsageError
from posecli.estimator import Heatmaps
from posecli.networks import PoseModel
from posecli.spec import (
    CHANNEL_FLIP_ORDER,
    KEYPOINT_CHANNELS,
    NUM_CHANNELS,
    NUM_SCALES,
    PART_CHANNELS,
    STRIDE,
    coco_to_network,
)
from posecli.train.targets import render_heatmaps
from posecli.transforms import GridTransform, input_geometry, normalise

CPU = InferenceConfig(device="cpu", box_size=128)


class StandInNetwork(nn.Module):
    """Heatmaps computed from the input's content, in the network's output layout.

    Per stride-4 cell, the brightness of the input (mean over channels, minus ``threshold``,
    clipped at 0, averaged over the cell's 4×4 pixels) is spread by one Gaussian kernel per output
    channel, shifted horizontally by ``shifts[c]`` cells. With ``shifts[CHANNEL_FLIP_ORDER[c]]
    == -shifts[c]`` the network is exactly flip-equivariant: the mirrored image gives the mirrored
    maps with the channels permuted by ``CHANNEL_FLIP_ORDER``. Coarser scales are average-pooled.
    Stack 0 holds a left-to-right ramp (not flip-equivariant); only the last stack is right.
    """

    def __init__(self, shifts: np.ndarray, threshold: float = 0.6, sigma: float = 1.0) -> None:
        super().__init__()
        radius = int(np.abs(shifts).max() + 3 * sigma)
        offsets = np.arange(-radius, radius + 1)
        rows = np.exp(-(offsets[None, :, None] ** 2) / (2 * sigma**2))  # (1, k, 1)
        columns = np.exp(-((offsets[None, None, :] - shifts[:, None, None]) ** 2) / (2 * sigma**2))
        kernels = rows * columns  # (50, k, k)
        kernels /= kernels.sum(axis=(1, 2), keepdims=True)
        self.register_buffer("kernels", torch.tensor(kernels, dtype=torch.float32)[:, None])
        self.threshold = threshold
        self.radius = radius

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        brightness = (x.mean(dim=1, keepdim=True) - self.threshold).clamp(min=0)  # (N, 1, H, W)
        cells = F.avg_pool2d(brightness, STRIDE)  # (N, 1, H/4, W/4)
        finest = F.conv2d(cells, self.kernels.to(cells.dtype), padding=self.radius)
        ramp = torch.linspace(0, 1, finest.shape[-1], dtype=x.dtype, device=x.device)
        ramp = ramp.expand_as(finest)  # (N, 50, H/4, W/4)
        stacks = []
        for maps in (ramp, finest):  # (N, 50, H/4, W/4)
            stacks.append([F.avg_pool2d(maps, 2**j) if j else maps for j in range(NUM_SCALES)])
        return stacks


class BrightnessNetwork(nn.Module):
    """Scale-consistent stand-in: every channel is the input's mean brightness per 4×4 cell."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.linspace(0.5, 1.5, NUM_CHANNELS).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        finest = F.avg_pool2d(x.mean(dim=1, keepdim=True), STRIDE) * self.weights  # (N, 50, ., .)
        return [[F.avg_pool2d(finest, 2**j) if j else finest for j in range(NUM_SCALES)]]


def mirror_shifts() -> np.ndarray:
    """Per-channel shifts in cells, opposite for channels that swap under mirroring."""
    shifts = np.zeros(NUM_CHANNELS)
    for channel, mirrored in enumerate(CHANNEL_FLIP_ORDER):
        if channel < mirrored:
            shifts[channel] = 1 + channel % 3
            shifts[mirrored] = -shifts[channel]
    return shifts


def wrap(network: nn.Module, preprocessing: Preprocessing | None = None) -> PoseModel:
    preprocessing = preprocessing or Preprocessing()
    return PoseModel.from_network(network, ModelConfig(), preprocessing=preprocessing, name="stub")


def dots_image(height: int, width: int, seed: int) -> np.ndarray:
    """RGB uint8, black with a few white squares at random places (asymmetric content)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for _ in range(5):
        y, x = rng.integers(0, height - 12), rng.integers(0, width - 12)
        size = rng.integers(4, 12)
        image[y : y + size, x : x + size] = 255
    return image


def blobs_image(height: int, width: int, centres: list[tuple[float, float]], sigma: float):
    """RGB uint8, Gaussian blobs (peak 255) at the given (x, y) pixel centres."""
    rows, columns = np.mgrid[0:height, 0:width]
    grey = np.zeros((height, width))
    for x, y in centres:
        grey += np.exp(-((columns - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.round(255 * np.clip(grey, 0, 1)).astype(np.uint8)[..., None], 3, axis=2)


def test_single_scale_heatmaps_are_the_last_stack_at_stride_4() -> None:
    network = StandInNetwork(mirror_shifts())
    image = dots_image(128, 192, seed=0)  # box 128: no resizing, no padding
    (heatmaps,) = build_estimator(wrap(network), CPU).heatmaps([image])
    with torch.inference_mode():
        expected = network(torch.from_numpy(normalise(image[None], Preprocessing())))[-1][0][0]
    assert heatmaps.maps.shape == (NUM_CHANNELS, 32, 48) and heatmaps.maps.dtype == np.float32
    np.testing.assert_allclose(heatmaps.maps, expected.numpy(), atol=1e-6)
    assert heatmaps.transform == GridTransform(4.0, 4.0, 1.5, 1.5)
    assert heatmaps.maps[KEYPOINT_CHANNELS].max() > 0.1


def test_colour_order_of_the_checkpoint_is_honoured() -> None:
    """A network reading only its first input channel sees blue for BGR, red for RGB."""

    class FirstChannel(nn.Module):
        def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
            cells = F.avg_pool2d(x[:, :1], STRIDE).expand(-1, NUM_CHANNELS, -1, -1)
            return [[F.avg_pool2d(cells, 2**j) for j in range(NUM_SCALES)]]

    image = np.zeros((128, 128, 3), dtype=np.uint8)
    image[..., 0], image[..., 2] = 200, 50  # red 200, blue 50
    for order, value in (("BGR", 50), ("RGB", 200)):
        model = wrap(FirstChannel(), Preprocessing(colour_order=order))
        (heatmaps,) = build_estimator(model, CPU).heatmaps([image])
        np.testing.assert_allclose(heatmaps.maps, value / 255, rtol=1e-5)


@pytest.mark.parametrize(("height", "width"), [(100, 170), (90, 61), (128, 192)])
def test_flip_averaging_of_a_flip_equivariant_network_changes_nothing(
    height: int, width: int
) -> None:
    """Sizes chosen so that the resized width leaves right padding (217 → 216 + 40, 88 + 40)."""
    model = wrap(StandInNetwork(mirror_shifts()))
    image = dots_image(height, width, seed=height)
    (plain,) = build_estimator(model, CPU).heatmaps([image])
    (flipped,) = build_estimator(model, replace(CPU, flip=True)).heatmaps([image])
    assert np.abs(plain.maps).max() > 0.1
    np.testing.assert_allclose(flipped.maps, plain.maps, atol=1e-5)
    assert flipped.transform == plain.transform


@pytest.mark.parametrize(
    "wrong_order",
    [
        tuple(range(NUM_CHANNELS)),  # no channel swap at all
        tuple(range(PART_CHANNELS.stop)) + CHANNEL_FLIP_ORDER[PART_CHANNELS.stop :],  # parts kept
        CHANNEL_FLIP_ORDER[: KEYPOINT_CHANNELS.start]  # keypoints kept
        + tuple(range(KEYPOINT_CHANNELS.start, NUM_CHANNELS)),
    ],
    ids=["identity", "parts-unswapped", "keypoints-unswapped"],
)
def test_a_wrong_flip_order_changes_the_result(
    monkeypatch: pytest.MonkeyPatch, wrong_order: tuple[int, ...]
) -> None:
    model = wrap(StandInNetwork(mirror_shifts()))
    image = dots_image(100, 170, seed=3)
    (plain,) = build_estimator(model, CPU).heatmaps([image])
    monkeypatch.setattr(estimator_module, "CHANNEL_FLIP_ORDER", wrong_order)
    (flipped,) = build_estimator(model, replace(CPU, flip=True)).heatmaps([image])
    assert np.abs(flipped.maps - plain.maps).max() > 0.05


def test_multi_scale_averaging_of_a_scale_consistent_network_changes_nothing() -> None:
    """Brightness maps of a smooth image agree across scales up to bilinear resampling error.

    A grid misaligned by half a cell at any scale shifts a blob by ≥ 2 px (σ = 24 px) and moves
    the maps by several percent of their peak; the tolerance is 2 %.
    """
    model = wrap(BrightnessNetwork())
    centres = [(70.0, 60.0), (190.0, 130.0), (260.0, 90.0)]
    image = blobs_image(200, 330, centres, sigma=24.0)
    config = replace(CPU, box_size=256)
    (single,) = build_estimator(model, config).heatmaps([image])
    peak = single.maps.max()
    for scales in [(0.5,), (1.5,), (2.0,), (0.5, 1.0, 1.5, 2.0)]:
        (averaged,) = build_estimator(model, replace(config, scales=scales)).heatmaps([image])
        assert averaged.maps.shape == single.maps.shape == (50, 64, 106)
        assert averaged.transform == single.transform
        assert np.abs(averaged.maps - single.maps).max() < 0.02 * peak, scales


@pytest.mark.parametrize("decode_stride", [4, 2])
@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5, 2.0])
def test_heatmap_peaks_map_back_to_image_pixels(scale: float, decode_stride: int) -> None:
    """The blob's centroid on the common grid, through the transform, is the blob's centre."""
    model = wrap(BrightnessNetwork())
    x, y = 151.3, 83.7
    image = blobs_image(180, 310, [(x, y)], sigma=16.0)
    config = replace(CPU, box_size=192, scales=(scale,), decode_stride=decode_stride)
    (heatmaps,) = build_estimator(model, config).heatmaps([image])
    maps = heatmaps.maps[0]
    assert maps.shape == (192 // decode_stride, 332 // decode_stride)  # 310 × 192/180 → 332
    rows, columns = np.mgrid[0 : maps.shape[0], 0 : maps.shape[1]]
    weights = np.clip(maps - 0.05 * maps.max(), 0, None)  # background-free centroid
    grid_point = np.array([(weights * columns).sum(), (weights * rows).sum()]) / weights.sum()
    np.testing.assert_allclose(heatmaps.transform.apply(grid_point), [x, y], atol=0.5)


class InputRecorder(BrightnessNetwork):
    """``BrightnessNetwork`` that records the ``(H, W)`` of every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.input_sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        self.input_sizes.append((x.shape[2], x.shape[3]))
        return super().forward(x)


@pytest.mark.parametrize(
    ("height", "width", "padded", "grid"),
    [(480, 640, (320, 384), (72, 96)), (640, 480, (384, 320), (96, 72))],
    ids=["landscape", "portrait"],
)
def test_long_side_sizes_the_input_and_peaks_map_back(
    height: int, width: int, padded: tuple[int, int], grid: tuple[int, int]
) -> None:
    """Long side 384: 640×480 → 384×288 (padded 384×320), 480×640 → 288×384, at any scales."""
    x, y = 0.55 * width + 0.3, 0.4 * height + 0.7
    image = blobs_image(height, width, [(x, y)], sigma=16.0)
    single = replace(CPU, box_size=512, long_side=384)
    for config in (single, replace(single, scales=(0.5, 1.0), flip=True)):
        network = InputRecorder()
        (heatmaps,) = build_estimator(wrap(network), config).heatmaps([image])
        assert network.input_sizes[-1] == padded  # scale 1, the last one searched
        assert heatmaps.maps.shape == (NUM_CHANNELS, *grid)  # the valid 384×288 region / 4
        maps = heatmaps.maps[0]
        rows, columns = np.mgrid[0 : maps.shape[0], 0 : maps.shape[1]]
        weights = np.clip(maps - 0.05 * maps.max(), 0, None)  # background-free centroid
        grid_point = np.array([(weights * columns).sum(), (weights * rows).sum()]) / weights.sum()
        np.testing.assert_allclose(heatmaps.transform.apply(grid_point), [x, y], atol=0.5)


def test_batching_gives_the_same_maps_as_one_by_one() -> None:
    model = wrap(StandInNetwork(mirror_shifts()))
    sizes = [(100, 170), (90, 61), (100, 170), (100, 170), (90, 61)]
    images = [dots_image(h, w, seed=k) for k, (h, w) in enumerate(sizes)]
    config = replace(CPU, flip=True, scales=(0.5, 1.0))
    one_by_one = [build_estimator(model, config).heatmaps([image])[0] for image in images]
    batched = build_estimator(model, replace(config, batch_size=3)).heatmaps(images)
    assert len(batched) == len(images)
    for single, batch in zip(one_by_one, batched, strict=True):
        assert batch.maps.shape == single.maps.shape
        np.testing.assert_allclose(batch.maps, single.maps, atol=1e-6)
        assert batch.transform == single.transform


def test_predict_maps_keypoints_to_pixels_and_sorts_by_score(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grid_keypoints = np.zeros((2, 17, 3), dtype=np.float32)
    grid_keypoints[0, 0] = (10.0, 5.0, 0.9)  # weaker person: nose only
    grid_keypoints[1, 5] = (2.0, 3.0, 0.8)  # stronger person: left shoulder and right hip
    grid_keypoints[1, 12] = (4.5, 7.25, 0.7)
    calls = []

    def fake_decode(maps: np.ndarray, config: DecodeConfig, native: bool = True) -> DecodedPoses:
        calls.append((maps.shape, config, native))
        return DecodedPoses(grid_keypoints, np.array([0.4, 0.6], dtype=np.float32))

    monkeypatch.setattr(estimator_module, "decode", fake_decode)
    decode_config = DecodeConfig(peak_threshold=0.2)
    estimator = build_estimator(wrap(StandInNetwork(mirror_shifts())), CPU, decode_config)
    image = dots_image(64, 96, seed=1)  # box 128: resized ×2, stride-4 cell = 2 image pixels
    (poses,) = estimator.predict([image])
    assert calls == [((NUM_CHANNELS, 32, 48), decode_config, True)]
    assert [pose.score for pose in poses] == pytest.approx([0.6, 0.4])
    strong, weak = poses
    np.testing.assert_allclose(strong.keypoints[5], [2 * 2 + 0.5, 2 * 3 + 0.5, 0.8])
    np.testing.assert_allclose(strong.keypoints[12], [2 * 4.5 + 0.5, 2 * 7.25 + 0.5, 0.7])
    np.testing.assert_allclose(weak.keypoints[0], [2 * 10 + 0.5, 2 * 5 + 0.5, 0.9])
    missing = np.ones(17, dtype=bool)
    missing[[5, 12]] = False
    assert (strong.keypoints[missing] == 0).all()
    assert strong.visible.sum() == 2 and weak.visible.sum() == 1


class GroundTruthNetwork(nn.Module):
    """Outputs the target heatmaps of known people, as the Estimator would see them at scale 1.

    ``people``: ``(P, 17, 3)`` COCO-17 ``[x, y, v]`` in pixels of an image of ``image_size``.
    """

    def __init__(self, people: np.ndarray, image_size: tuple[int, int], box_size: int) -> None:
        super().__init__()
        geometry = input_geometry(*image_size, box_size)
        network_order = coco_to_network(people)  # (P, 18, 3) image pixels
        factors = np.array([geometry.factor_x, geometry.factor_y])
        network_order[..., :2] = (network_order[..., :2] + 0.5) * factors - 0.5  # input pixels
        maps = render_heatmaps(network_order, geometry.height, geometry.width, stride=STRIDE)
        self.register_buffer("maps", torch.from_numpy(maps)[None])  # (1, 50, h/4, w/4)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        rows, columns = x.shape[2] // STRIDE, x.shape[3] // STRIDE
        padding = (0, columns - self.maps.shape[3], 0, rows - self.maps.shape[2])
        finest = F.pad(self.maps, padding).expand(len(x), -1, -1, -1)  # (N, 50, H/4, W/4)
        return [[F.avg_pool2d(finest, 2**j) if j else finest for j in range(NUM_SCALES)]]


def test_predict_finds_rendered_people_at_their_pixels() -> None:
    """Ground-truth heatmaps through the real decoder come back as the same people."""
    rng = np.random.default_rng(7)
    skeleton = np.array(
        [[0, -70], [-6, -76], [6, -76], [-14, -72], [14, -72], [-24, -45], [24, -45],
         [-32, -10], [32, -10], [-36, 22], [36, 22], [-16, 20], [16, 20], [-18, 70],
         [18, 70], [-20, 118], [20, 118]],
        dtype=np.float64,
    )  # fmt: skip  # COCO-17 offsets of a standing person, facing the camera, image pixels
    people = np.zeros((2, 17, 3))
    for person, centre in zip(people, [(120.0, 160.0), (330.0, 150.0)], strict=True):
        person[:, :2] = centre + skeleton * rng.uniform(0.9, 1.1) + rng.normal(0, 1.5, (17, 2))
        person[:, 2] = 2
    people[1, 3] = 0  # an unlabelled keypoint stays missing
    image_size = (300, 450)
    config = replace(CPU, box_size=256)
    estimator = build_estimator(wrap(GroundTruthNetwork(people, image_size, 256)), config)
    (poses,) = estimator.predict([np.zeros((*image_size, 3), dtype=np.uint8)])
    assert len(poses) == 2
    assert poses[0].score >= poses[1].score
    found = sorted(poses, key=lambda pose: pose.keypoints[0, 0])  # left person first
    for pose, person in zip(found, people, strict=True):
        labelled = person[:, 2] > 0
        np.testing.assert_array_equal(pose.visible, labelled)
        errors = np.linalg.norm(pose.keypoints[labelled, :2] - person[labelled, :2], axis=1)
        assert errors.max() < 1.5, errors  # grid cell = 4 / (256/300) ≈ 4.7 image pixels
        assert (pose.keypoints[~labelled] == 0).all()


def test_invalid_images_and_settings_fail_clearly() -> None:
    estimator = build_estimator(wrap(StandInNetwork(mirror_shifts())), CPU)
    with pytest.raises(InputError, match="image 1"):
        estimator.heatmaps([dots_image(64, 64, 0), np.zeros((64, 64), dtype=np.uint8)])
    with pytest.raises(InputError):
        estimator.heatmaps([np.zeros((64, 64, 3), dtype=np.float32)])
    with pytest.raises(InputError):
        estimator.heatmaps([np.zeros((0, 64, 3), dtype=np.uint8)])
    assert estimator.heatmaps([]) == []
    bad = [
        {"scales": ()},
        {"scales": (0.0,)},
        {"batch_size": 0},
        {"decode_stride": 3},
        {"pad_multiple": 30},
        {"long_side": -1},
        {"long_side": 3},
        {"long_side": 16, "scales": (0.2, 1.0)},
        {"follow_edge": 0.5},
        {"follow_edge": -0.01},
    ]
    for changes in bad:  # the record refuses them, naming the field, before any estimator
        with pytest.raises(UsageError, match=next(iter(changes))):
            replace(CPU, **changes)


def test_a_network_with_the_wrong_output_shape_is_refused() -> None:
    class Stride8(nn.Module):
        def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
            maps = F.avg_pool2d(x[:, :1], 8).expand(-1, NUM_CHANNELS, -1, -1)
            return [[maps] * NUM_SCALES]

    with pytest.raises(CheckpointError, match="network output"):
        build_estimator(wrap(Stride8()), CPU).heatmaps([dots_image(64, 64, 0)])


def test_real_imhn_runs_end_to_end_on_cpu() -> None:
    from posecli.model import build_network

    config = ModelConfig(stacks=1, width=32, increase=16, head_width=32)
    model = PoseModel.from_network(build_network(config), config, name="random")
    estimator = build_estimator(model, replace(CPU, flip=True, scales=(0.5, 1.0), batch_size=2))
    images = [dots_image(70, 90, seed=k) for k in range(3)]
    heatmaps = estimator.heatmaps(images)
    assert [h.maps.shape for h in heatmaps] == [(NUM_CHANNELS, 32, 41)] * 3
    assert all(np.isfinite(h.maps).all() for h in heatmaps)
    assert next(model.network.parameters()).device.type == "cpu"
    poses = estimator.predict(images)
    assert len(poses) == 3 and all(isinstance(people, list) for people in poses)
    assert isinstance(heatmaps[0], Heatmaps)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_precision_on_cuda_matches_float32() -> None:
    model = wrap(StandInNetwork(mirror_shifts()))
    image = dots_image(100, 170, seed=5)
    (full,) = build_estimator(model, replace(CPU, device="cpu", flip=True)).heatmaps([image])
    half = build_estimator(model, replace(CPU, device="cuda", half=True, flip=True))
    assert half.dtype == torch.float16 and half.device.type == "cuda"
    (result,) = half.heatmaps([image])
    assert result.maps.dtype == np.float32
    np.testing.assert_allclose(result.maps, full.maps, atol=1e-2)


def test_following_finds_people_in_their_predicted_boxes_and_counts_the_lost(
    skeleton, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posecli.boxes import person_box
    from posecli.config import RefinerConfig
    from posecli.model import build_refiner
    from posecli.networks import RefinerModel
    from posecli.pose import Pose
    from posecli.refine import Refinement

    tiny = RefinerConfig(crop_height=64, crop_width=64, head_width=16, embedding=8)
    refiner = RefinerModel.from_network(build_refiner(tiny), tiny)
    config = replace(CPU, refine=True, refine_flip=False)
    estimator = build_estimator(wrap(BrightnessNetwork()), config, refiner=refiner)
    one_point = np.zeros((17, 3), dtype=np.float32)
    one_point[0] = [30, 30, 0.9]
    people = [
        Pose(skeleton(60, 50, 60), 0.6),  # A: seen as well as before
        Pose(skeleton(140, 50, 60), 0.5),  # B: the refiner no longer sees them: lost
        Pose(skeleton(62, 50, 60), 0.3),  # C: found on A: a duplicate, dropped, not lost
        Pose(one_point, 0.9),  # D: no box: lost
        Pose(skeleton(220, 50, 60, confidence=0.25), 0.2),  # E: never seen well, still as well
        Pose(skeleton(292, 50, 60), 0.5),  # F: no longer seen at the right edge: left, not lost
    ]
    seen = {0: 0.8, 1: 0.2, 2: 0.7, 4: 0.22, 5: 0.1}  # mean refined keypoint score, by person
    calls = []

    def refined(self, image, boxes, instances=0):
        calls.append((boxes, instances))
        found = np.array([people[i].keypoints for i in seen], dtype=np.float64)  # (5, 17, 3)
        found[2] = people[0].keypoints  # C's box holds A
        found[:, :, :2] += 2.0  # everybody moved 2 px
        found[:, :, 2] = np.array(list(seen.values()))[:, None]
        return found[:, None]  # (5, 1, 17, 3): λ = 0 only

    monkeypatch.setattr(Refinement, "keypoints", refined)
    image = np.zeros((120, 300, 3), dtype=np.uint8)
    found, lost = estimator.follow(image, people)
    ((boxes, instances),) = calls
    assert instances == 1 and len(boxes) == 5  # D has too few keypoints for a box
    wider = person_box(people[0].keypoints, 1.0, config.follow_box_scale, config.refine_min_box)
    assert boxes[0] == wider and config.follow_box_scale > config.refine_box_scale
    assert lost == 2  # B and D; C is A's duplicate; F left the frame
    assert [pose.score for pose in found] == pytest.approx([0.6 / 0.9 * 0.8, 0.2 / 0.25 * 0.22])
    np.testing.assert_allclose(found[0].keypoints[:, 0], people[0].keypoints[:, 0] + 2)
    strict = build_estimator(wrap(BrightnessNetwork()), config, DecodeConfig(min_person_score=0.2),
                       refiner=refiner)  # fmt: skip
    calls.clear()
    shown, lost = strict.follow(image, people)
    assert len(shown) == 1 and lost == 2  # E is followed but not shown below --min-score
    anywhere = build_estimator(wrap(BrightnessNetwork()), replace(config, follow_edge=0.0),
                               refiner=refiner)  # fmt: skip
    calls.clear()
    assert anywhere.follow(image, people)[1] == 3  # without the edge rule F counts as lost
    assert not build_estimator(wrap(BrightnessNetwork()), CPU).can_follow
    with pytest.raises(UsageError, match="refine"):
        build_estimator(wrap(BrightnessNetwork()), CPU).follow(image, people)
