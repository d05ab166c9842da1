"""The top-down refiner (issue 16): network, decoding, crop geometry, merge, checkpoints,
training targets and a short training run, all on tiny random networks (no ImageNet weights)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from coco_synthetic import write_people_set
from tiny_model import save_tiny_checkpoint

from posecli.assemble import build_estimator
from posecli.boxes import CropBox, crop_affine, person_box, to_image
from posecli.checkpoint import save_checkpoint
from posecli.cli import run
from posecli.config import AugmentConfig, InferenceConfig, Preprocessing, RefinerConfig, TrainConfig
from posecli.errors import CheckpointError, UsageError
from posecli.loader import load_model, load_refiner
from posecli.model import build_refiner, grow_instances, heatmap_keypoints, resize_crop
from posecli.networks import RefinerModel
from posecli.pose import Pose
from posecli.refine import RefinedPose, Refinement, crop_people, merge_poses
from posecli.spec import COCO_FLIP_ORDER
from posecli.train.refiner import (
    RefinerCropDataset,
    instance_order,
    instance_targets,
    jittered_affine,
)
from posecli.train.trainer import train
from posecli.transforms import normalise

#: A refiner small enough for tests: 64×64 crops (16×16 maps), a 16-channel head.
TINY = RefinerConfig(crop_height=64, crop_width=64, instances=2, head_width=16, embedding=8)
#: The smallest crops, for training runs.
TRAINED = replace(TINY, crop_height=32, crop_width=32)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _modulate_randomly(network: torch.nn.Module, seed: int = 0) -> None:
    """Give the modulation blocks random (non-identity) weights, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.startswith("modulations."):
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))


def _crops(count: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, TINY.crop_height, TINY.crop_width, generator=generator)


# ---------------------------------------------------------------------------------------------
# network


def test_instance_selector_changes_the_output() -> None:
    torch.manual_seed(0)
    network = build_refiner(TINY).eval()
    crops = _crops()
    with torch.no_grad():
        assert network(crops, torch.tensor([0, 0])).shape == (2, 17, 16, 16)
        same = [network(crops, torch.full((2,), k)) for k in range(2)]
        assert torch.equal(same[0], same[1])  # modulation starts as the identity
        _modulate_randomly(network)
        first, second = (network(crops, torch.full((2,), k)) for k in range(2))
    assert (first - second).abs().max() > 1e-3 * first.abs().max()


def test_one_instance_is_a_plain_top_down_network() -> None:
    torch.manual_seed(0)
    plain = build_refiner(replace(TINY, instances=1)).eval()
    multi = build_refiner(TINY).eval()
    assert not any("modulation" in name or "instance" in name for name in plain.state_dict())
    extra = set(multi.state_dict()) - set(plain.state_dict())
    assert extra and all(key.startswith(("modulations.", "instance_embedding.")) for key in extra)
    multi.load_state_dict(plain.state_dict(), strict=False)  # shared weights, identity MIMBs
    crops = _crops()
    with torch.no_grad():
        expected = plain(crops)
        for k in range(TINY.instances):
            torch.testing.assert_close(multi(crops, torch.full((2,), k)), expected)
        with pytest.raises(ValueError, match="λ = 0"):
            plain(crops, torch.tensor([0, 1]))


def test_grown_refiner_keeps_its_weights_and_starts_as_before() -> None:
    """grow_instances: N = 1 → 3 predicts as before for every λ until trained; N = 2 → 3 keeps
    the trained λ embeddings and modulations; shrinking is refused."""
    torch.manual_seed(0)
    plain = build_refiner(replace(TINY, instances=1)).eval()
    grown = grow_instances(plain, 3).eval()
    assert grown.config.instances == 3
    crops = _crops()
    with torch.no_grad():
        for k in range(3):
            torch.testing.assert_close(grown(crops, torch.full((2,), k)), plain(crops))
    two = build_refiner(TINY)
    _modulate_randomly(two)
    three = grow_instances(two, 3)
    with torch.no_grad():
        kept = three.instance_embedding.weight[:2]
        torch.testing.assert_close(kept, two.instance_embedding.weight)
        second = torch.ones(2, dtype=torch.long)
        torch.testing.assert_close(three.eval()(crops, second), two.eval()(crops, second))
    with pytest.raises(ValueError, match="cannot grow"):
        grow_instances(two, 2)


def test_a_resized_refiner_computes_what_its_layers_did_on_the_larger_crop() -> None:
    """resize_crop: same weights, a new accepted crop and output layout; a crop that is not a
    multiple of 32 is refused."""
    torch.manual_seed(0)
    small = build_refiner(replace(TINY, instances=1)).eval()
    height, width = 2 * TINY.crop_height, 2 * TINY.crop_width
    large = resize_crop(small, height, width).eval()
    layout = large.output_layout
    assert (layout.crop_height, layout.crop_width) == (height, width)
    crops = torch.rand(2, 3, height, width)
    with torch.no_grad():
        torch.testing.assert_close(large(crops), small.head(small.encoder(crops)))
    with pytest.raises(ValueError, match="crop"):
        small(crops)
    with pytest.raises(ValueError, match="32"):
        resize_crop(small, 100, 64)


def test_refiner_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        build_refiner(replace(TINY, crop_width=50))
    network = build_refiner(TINY)
    with pytest.raises(ValueError, match="crops"):
        network(torch.zeros(1, 3, 32, 64))


def _gaussian_map(x: float, y: float, rows: int, columns: int, sigma: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:columns]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_sub_pixel_decoding_recovers_gaussian_peaks() -> None:
    peaks = [(5.3, 7.8), (0.2, 3.6), (10.5, 12.45), (2.0, 2.0)]  # (column, row) in cells
    maps = np.stack([0.8 * _gaussian_map(x, y, 16, 12) for x, y in peaks])[None]  # (1, 4, 16, 12)
    found = heatmap_keypoints(torch.from_numpy(maps))[0].numpy()  # (4, 3)
    for (x, y), (px, py, score) in zip(peaks, found, strict=True):
        if x >= 1:  # a peak in the border column decodes to the cell centre
            assert px == pytest.approx(4 * x + 1.5, abs=0.05)
        assert py == pytest.approx(4 * y + 1.5, abs=0.05)
        assert 0.75 < score <= 0.8


# ---------------------------------------------------------------------------------------------
# crop geometry


def _dot_image(x: float, y: float, height: int = 240, width: int = 320) -> np.ndarray:
    """A grey RGB image with a bright Gaussian dot (σ 3 px) centred at image pixel (x, y)."""
    dot = _gaussian_map(x, y, height, width, sigma=3.0)
    return np.repeat((40 + 200 * dot).round().astype(np.uint8)[..., None], 3, axis=2)


def _centroid(crop: np.ndarray) -> np.ndarray:
    weight = np.clip(crop[..., 0].astype(np.float64) - 40, 0, None)
    yy, xx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
    return np.array([(xx * weight).sum(), (yy * weight).sum()]) / weight.sum()


@pytest.mark.parametrize(
    "box", [CropBox(150.3, 110.7, 60.0, 80.0), CropBox(170.0, 90.0, 150.0, 200.0)]
)
def test_crops_map_back_to_image_pixels(box: CropBox) -> None:
    x, y = box.centre_x + 7.4, box.centre_y - 11.2
    affine = crop_affine(box, 128, 96)
    crop = crop_people(_dot_image(x, y), [affine], 128, 96, pad=0)[0]
    back = to_image(_centroid(crop), affine)
    assert np.abs(back - (x, y)).max() < 0.5
    points = np.random.default_rng(0).uniform(0, 300, size=(17, 2))
    crop_points = points @ affine[:, :2].T + affine[:, 2]
    np.testing.assert_allclose(to_image(crop_points, affine), points, atol=1e-9)


def test_training_crops_move_keypoints_with_the_pixels() -> None:
    x, y = 163.6, 121.2
    image = _dot_image(x, y)
    box = CropBox(160.0, 118.0, 60.0, 80.0)
    augment = AugmentConfig(flip_probability=0.5)
    for seed in range(4):
        affine, _ = jittered_affine(np.random.default_rng(seed), box, TINY, augment)
        crop = cv2.warpAffine(image, affine, (TINY.crop_width, TINY.crop_height))
        expected = affine[:, :2] @ (x, y) + affine[:, 2]
        assert np.abs(_centroid(crop) - expected).max() < 0.5
        assert np.abs(to_image(expected, affine) - (x, y)).max() < 1e-9


def test_person_box_has_the_crop_aspect_and_margin(skeleton) -> None:
    person = skeleton(100, 80, 100)  # keypoints spanning ~100 px in height
    found = person[:, :2]
    box = person_box(person, aspect=0.75, scale=1.25)
    assert box is not None and box.width / box.height == pytest.approx(0.75)
    span = found.max(axis=0) - found.min(axis=0)
    assert box.height == pytest.approx(max(span[1], span[0] / 0.75) * 1.25)
    alone = person.copy()
    alone[1:, 2] = 0
    assert person_box(alone, 0.75) is None  # one keypoint: no box


# ---------------------------------------------------------------------------------------------
# merge


def test_merge_keeps_one_pose_per_person(skeleton) -> None:
    first, second, third = skeleton(100, 100, 80), skeleton(220, 100, 80), skeleton(340, 60, 40)
    bottom_up = [Pose(first, 0.8), Pose(second, 0.7), Pose(third, 0.5)]
    jitter = np.zeros((17, 3), dtype=np.float32)
    jitter[:, :2] = 1.5
    refined = [  # both persons found twice: by their own box (λ 0) and the other's (λ 1)
        RefinedPose(Pose(first + jitter, 0.75), source=0, instance=0),
        RefinedPose(Pose(first - jitter, 0.4), source=1, instance=1),
        RefinedPose(Pose(second + jitter, 0.65), source=1, instance=0),
        RefinedPose(Pose(second - jitter, 0.3), source=0, instance=1),
    ]
    config = InferenceConfig()
    merged = merge_poses(bottom_up, refined, {0, 1}, config)
    assert [pose.score for pose in merged] == [0.75, 0.65, 0.5]  # refined replace bottom-up
    assert np.allclose(merged[0].keypoints, first + jitter)
    assert np.allclose(merged[2].keypoints, third)  # the person without a box is kept
    moved = second.copy()
    moved[:, 0] += 60  # the refiner found someone else in the second person's box
    refined[2] = RefinedPose(Pose(moved, 0.65), source=1, instance=0)
    merged = merge_poses(bottom_up, refined[:3], {0, 1}, config)
    assert [pose.score for pose in merged] == [0.75, 0.65, 0.5]  # its own box's λ 0 replaces it
    assert np.allclose(merged[1].keypoints, moved)
    dropped = [RefinedPose(Pose(first + jitter, 0.75), 0, 0), RefinedPose(Pose(first, 0.7), 1, 0)]
    keep = replace(config, refine_keep_score=0.6)
    kept = merge_poses(bottom_up[:2], dropped, {0, 1}, keep)  # λ 0 of box 1 suppressed
    assert [pose.score for pose in kept] == [0.75, 0.7]  # bottom-up 0.7 ≥ refine_keep_score
    kept = merge_poses(bottom_up[:2], dropped, {0, 1}, replace(keep, refine_keep_score=0.8))
    assert [pose.score for pose in kept] == [0.75]


# ---------------------------------------------------------------------------------------------
# checkpoints


def _save_tiny_refiner(path: Path, bias: float = 0.0) -> tuple[Path, torch.nn.Module]:
    """A random :data:`TINY` refiner whose heatmaps are about ``bias`` (its keypoint scores)."""
    torch.manual_seed(0)
    network = build_refiner(TINY)
    _modulate_randomly(network)
    torch.nn.init.constant_(network.head.out.bias, bias)
    shape = TINY
    save_checkpoint(path, network, shape, Preprocessing(), {"source": "random test"})
    return path, network.eval()


def test_refiner_checkpoint_round_trip_and_wrong_kinds(tmp_path: Path) -> None:
    path, network = _save_tiny_refiner(tmp_path / "refiner.pt")
    stored = torch.load(path, weights_only=True)
    assert stored["kind"] == "refiner"
    assert stored["output"] == {
        "kind": "refiner", "crop_height": 64, "crop_width": 64, "stride": 4, "instances": 2,
        "keypoints": "coco-17",
    }  # fmt: skip
    model = load_refiner(path)
    assert model.config == TINY
    crops, selectors = _crops(), torch.tensor([0, 1])
    with torch.no_grad():
        torch.testing.assert_close(model.network(crops, selectors), network(crops, selectors))
    with pytest.raises(CheckpointError, match="'refiner' checkpoint.*--refiner"):
        load_model(path)
    imhn = save_tiny_checkpoint(tmp_path / "imhn.pt")
    with pytest.raises(CheckpointError, match="not a refiner.*--model"):
        load_refiner(imhn)
    stored["state_dict"]["head.out.weight"] = torch.zeros(17, 8, 1, 1)
    torch.save(stored, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"shape of head\.out\.weight"):
        load_refiner(tmp_path / "bad.pt")


# ---------------------------------------------------------------------------------------------
# inference path


def test_estimator_refines_the_bottom_up_people(
    tmp_path: Path, skeleton, monkeypatch: pytest.MonkeyPatch
) -> None:
    refiner_path, _ = _save_tiny_refiner(tmp_path / "refiner.pt", bias=0.5)
    people = [Pose(skeleton(60, 50, 60), 0.9), Pose(skeleton(140, 60, 60), 0.6)]
    monkeypatch.setattr("posecli.estimator.decode_heatmaps", lambda maps, config: list(people))
    model = load_model(save_tiny_checkpoint(tmp_path / "imhn.pt"))
    config = InferenceConfig(box_size=64, device="cpu", refine=True, refiner=str(refiner_path))
    estimator = build_estimator(model, config)
    image = np.random.default_rng(0).integers(0, 256, size=(120, 200, 3), dtype=np.uint8)
    poses = estimator.predict([image])[0]
    assert poses == sorted(poses, key=lambda p: -p.score)
    refined = [
        p for p in poses if not any(np.array_equal(p.keypoints, q.keypoints) for q in people)
    ]
    assert 1 <= len(refined) <= 4  # at most 2 boxes × 2 instance selectors
    for pose in refined:  # scores ≈ 0.5 × the box's person score; keypoints near their box
        assert 0.2 < pose.score < 0.9 * 0.6
        found = pose.keypoints[pose.visible]
        assert len(found) >= 2 and np.all((found[:, :2] > -40) & (found[:, :2] < 240))
    with pytest.raises(UsageError, match="needs the image"):
        estimator.poses(estimator.heatmaps([image])[0])
    with pytest.raises(UsageError, match="instance"):
        build_estimator(model, replace(config, instances=3))


def test_refinement_batches_every_instance(tmp_path: Path, skeleton) -> None:
    _, network = _save_tiny_refiner(tmp_path / "refiner.pt")
    refiner = RefinerModel.from_network(network, TINY)
    config = InferenceConfig(device="cpu", refine=True, refine_batch_size=3, refine_flip=False)
    refinement = Refinement(refiner, config, torch.device("cpu"))
    image = np.random.default_rng(1).integers(0, 256, size=(100, 160, 3), dtype=np.uint8)
    boxes = [CropBox(50, 50, 40, 40), CropBox(110, 50, 60, 60)]
    found = refinement.keypoints(image, boxes)  # (2, 2, 17, 3)
    assert found.shape == (2, 2, 17, 3)
    with torch.no_grad():  # the same as one crop at a time
        crop = crop_people(image, [crop_affine(boxes[1], 64, 64)], 64, 64, 128)
        maps = network(torch.from_numpy(normalise(crop, Preprocessing())), torch.tensor([1]))
    alone = heatmap_keypoints(maps)[0].numpy()
    alone[:, :2] = to_image(alone[:, :2], crop_affine(boxes[1], 64, 64))
    np.testing.assert_allclose(found[1, 1], alone, atol=1e-4)


def test_flip_testing_is_mirror_symmetric(tmp_path: Path) -> None:
    """With refine_flip, a mirrored crop gives the mirrored keypoints (left and right swapped),
    and the heatmaps are the mean of the direct and the mirrored-back pass."""
    _, network = _save_tiny_refiner(tmp_path / "refiner.pt")
    refiner = RefinerModel.from_network(network, TINY)
    config = InferenceConfig(device="cpu", refine=True, refine_flip=True)
    refinement = Refinement(refiner, config, torch.device("cpu"))
    crops = _crops(3, seed=4).numpy()  # (3, 3, 64, 64)
    selectors = np.array([0, 1, 0])
    maps = refinement.heatmaps(crops, selectors)  # (3, 17, 16, 16)
    mirrored = refinement.heatmaps(np.ascontiguousarray(crops[..., ::-1]), selectors)
    swap = list(COCO_FLIP_ORDER)
    torch.testing.assert_close(mirrored, maps.flip(-1)[:, swap], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        direct = network(torch.from_numpy(crops), torch.from_numpy(selectors))
        back = network(torch.from_numpy(crops[..., ::-1].copy()), torch.from_numpy(selectors))
    torch.testing.assert_close(maps, 0.5 * (direct + back.flip(-1)[:, swap]), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(maps, direct, atol=1e-4)  # the mirrored pass counts


def test_cli_refine_options(tmp_path: Path) -> None:
    refiner_path, _ = _save_tiny_refiner(tmp_path / "refiner.pt")
    model = save_tiny_checkpoint(tmp_path / "imhn.pt")
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((48, 64, 3), 90, dtype=np.uint8))
    fast = ["--model", str(model), "--box-size", "64", "--device", "cpu", "--quiet"]
    results = tmp_path / "poses.json"
    base = ["images", str(folder), "--json", str(results), *fast]
    assert run([*base, "--refine", "--refiner", str(refiner_path), "--instances", "2"]) == 0
    assert json.loads(results.read_text()) == []  # the random IMHN finds nobody
    assert run([*base, "--force", "--refine"]) == 0  # the bundled refiner
    assert run([*base, "--force", "--refiner", str(refiner_path)]) == 0  # refining is the default
    assert run([*base, "--force", "--no-refine", "--refiner", str(refiner_path)]) == 2
    assert run([*base, "--force", "--refine", "--refiner", str(model)]) == 1  # not a refiner
    exported = tmp_path / "refiner-fp16.pt"
    assert run(["export", "--model", str(refiner_path), "--out", str(exported), "--quiet"]) == 0
    assert load_refiner(exported).config == TINY


def test_export_averages_fine_tunes_of_one_refiner(tmp_path: Path) -> None:
    first, network = _save_tiny_refiner(tmp_path / "a.pt")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in network.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.5 * torch.randn(tensor.shape, generator=generator))
    second = save_checkpoint(tmp_path / "b.pt", network, TINY, Preprocessing(), {"source": "b"})
    out = tmp_path / "soup.pt"
    args = ["export", "-m", str(first), "-m", str(second), "--out", str(out), "--no-half", "-q"]
    assert run(args) == 0
    states = [torch.load(path, weights_only=True)["state_dict"] for path in (first, second, out)]
    for key, tensor in states[2].items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, (states[0][key] + states[1][key]) / 2)
        else:
            assert torch.equal(tensor, states[0][key])  # BatchNorm batch counters
    assert load_refiner(out).provenance["averaged_from"] == [str(first), str(second)]
    other = replace(TINY, instances=1)
    save_checkpoint(tmp_path / "c.pt", build_refiner(other), other, Preprocessing(), {})
    imhn = save_tiny_checkpoint(tmp_path / "imhn.pt")
    for mismatch in (tmp_path / "c.pt", imhn):
        args = ["export", "-m", str(first), "-m", str(mismatch), "--out", str(tmp_path / "x.pt")]
        assert run([*args, "-q"]) == 2
        assert not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------------------------------------------
# training


def test_instances_are_ordered_by_distance_and_unknown_people_stop_supervision() -> None:
    keypoints = np.zeros((3, 17, 3))
    for person, (x, y) in enumerate([(30, 34), (50, 30), (22, 40)]):
        keypoints[person, :, :2] = (x, y)
        keypoints[person, :, 2] = 2
        keypoints[person, 0, :2] = (x - 4, y - 6)
    scores = np.ones((3, 17))
    scores[1, 3] = 0.1  # a pseudo-label keypoint below the threshold
    shape = replace(TINY, instances=3)
    order = instance_order(keypoints, 0, np.zeros((0, 2)), 64, 64)
    assert order == ([0, 2, 1], None)  # person 2 is nearer the crop centre than person 1
    order = instance_order(keypoints, 1, np.zeros((0, 2)), 64, 64)
    assert order == ([1, 0, 2], None)
    targets, weights = instance_targets(keypoints, scores, ([0, 1], None), shape, 0.3, False)
    assert weights[1, 3] == 0 and weights[1].sum() == 16  # masked pseudo-label keypoint
    np.testing.assert_array_equal(targets[2], targets[0])  # λ ≥ n: the box's person
    assert targets[0].max() > 0.9
    peak = np.unravel_index(targets[1, 5].argmax(), targets[1, 5].shape)
    assert peak == (7, 12)  # person 1's keypoint at (50, 30) → cell (row 7, column 12)
    unknown = np.array([[28.0, 30.0]])  # an ignore region between persons 0 and 2
    order = instance_order(keypoints, 0, unknown, 64, 64)
    assert order == ([0], 1)
    _, weights = instance_targets(keypoints, scores, order, shape, 0.3, False)
    assert weights[0].sum() == 17 and weights[1:].sum() == 0


def test_dataset_serves_crops_targets_and_weights(tmp_path: Path) -> None:
    annotations, images = write_people_set(tmp_path, count=4)
    dataset = RefinerCropDataset(annotations, images, TINY, augment=AugmentConfig())
    assert len(dataset) == 6  # one crop per person
    image, targets, weights = dataset[(0, 1)]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert targets.shape == (2, 17, 16, 16) and weights.shape == (2, 17)
    assert weights[0].sum() > 10  # the box's person is supervised
    again = dataset[(0, 1)]
    assert torch.equal(again[0], image) and torch.equal(again[1], targets)  # seeded draws
    config = TrainConfig(
        annotations=str(annotations),
        images=str(images),
        more_datasets=((str(annotations), str(images)),),
    )
    joined = RefinerCropDataset.from_config(config, TINY, Preprocessing())
    assert len(joined) == 12 and torch.equal(joined[(0, 7)][1], dataset[(0, 1)][1])


def _train_config(tmp_path: Path, out: str, **changes) -> TrainConfig:
    annotations, images = write_people_set(tmp_path / "coco", count=4)
    quiet = AugmentConfig(rotate_degrees=10, flip_probability=0.5, box_scale_jitter=0.1)
    config = TrainConfig(
        annotations=str(annotations), images=str(images), out=str(tmp_path / out),
        refiner=TRAINED, pretrained=False, batch_size=3, workers=0, epochs=6, log_every_steps=1,
        device="cpu", optimizer="adamw", lr=1e-2, augment=quiet,
    )  # fmt: skip
    return replace(config, **changes)


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["event"] == "step"}


def test_a_tiny_refiner_trains_and_resumes(tmp_path: Path) -> None:
    config = _train_config(tmp_path, "run")
    checkpoint = train(config)
    losses = list(_losses(tmp_path / "run").values())
    assert len(losses) == 12  # 6 crops, batch 3: 2 steps per epoch
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3])  # measured: 0.57
    model = load_refiner(checkpoint)
    assert model.config == TRAINED and model.provenance["step"] == 12
    train(replace(config, out=str(tmp_path / "part"), max_steps=3))  # stops mid-epoch 1
    train(replace(config, out=str(tmp_path / "part"), max_steps=5, resume=True))
    straight = {step: loss for step, loss in _losses(tmp_path / "run").items() if step <= 5}
    assert _losses(tmp_path / "part") == straight  # the same steps, bit for bit


def test_training_grows_an_init_refiner_to_more_instances(tmp_path: Path) -> None:
    one = replace(TRAINED, instances=1)
    first = train(_train_config(tmp_path, "one", refiner=one, max_steps=2))
    grown = train(_train_config(tmp_path, "two", refiner=None, init=str(first), init_instances=2,
                                max_steps=2))  # fmt: skip
    assert load_refiner(grown).config == replace(one, instances=2)
    with pytest.raises(UsageError, match="init-instances"):
        train(_train_config(tmp_path, "three", init_instances=2))  # no --init
    with pytest.raises(UsageError, match="cannot grow"):
        train(_train_config(tmp_path, "four", refiner=None, init=str(grown), init_instances=1))


def test_training_an_init_refiner_on_larger_crops(tmp_path: Path) -> None:
    first = train(_train_config(tmp_path, "small", max_steps=2))
    crop = {"init_crop_height": 2 * TRAINED.crop_height, "init_crop_width": 2 * TRAINED.crop_width}
    large = train(_train_config(tmp_path, "large", refiner=None, init=str(first), max_steps=2,
                                **crop))  # fmt: skip
    assert load_refiner(large).config == replace(TRAINED, crop_height=crop["init_crop_height"],
                                                 crop_width=crop["init_crop_width"])  # fmt: skip
    with pytest.raises(UsageError, match="init-crop"):
        train(_train_config(tmp_path, "bad", refiner=None, init=str(first), init_crop_height=48,
                            init_crop_width=32))  # fmt: skip
    with pytest.raises(UsageError, match="needs --init"):
        train(_train_config(tmp_path, "none", **crop))
