"""The Pose Residual Network grouping (issue 20): network, grouping, checkpoints, options,
synthetic training samples and a short resumable training run, on ground-truth heatmaps."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from coco_synthetic import person_annotation, person_keypoints, write_coco
from tiny_model import save_tiny_checkpoint

from posecli.assemble import build_estimator
from posecli.boxes import person_box
from posecli.checkpoint import DEFAULT_PREPROCESSING, save_checkpoint
from posecli.config import DecodeConfig, InferenceConfig, PRNConfig, TrainConfig
from posecli.errors import CheckpointError, DecoderError, UsageError
from posecli.estimator import Heatmaps
from posecli.group import PRNGrouping
from posecli.loader import load_model, load_prn, load_refiner
from posecli.model import build_prn
from posecli.networks import PRNModel
from posecli.options import inference_options
from posecli.pose import Pose
from posecli.registry import WEIGHTS_DIR
from posecli.spec import coco_to_network
from posecli.train.prn import PRNSampleDataset
from posecli.train.targets import render_heatmaps
from posecli.train.trainer import train
from posecli.transforms import GridTransform

TINY = PRNConfig(crop_height=14, crop_width=9, hidden=16, dropout=0.0)
BUNDLED = WEIGHTS_DIR / "posecli-prn.pt"


#: Identity PRNs' softmax is nearly flat (logits in [0, 1]): keep every pick.
EVERY_PICK = DecodeConfig(grouping="prn", prn_min_probability=0.0)


def identity_prn(config: PRNConfig = TINY) -> PRNModel:
    """A PRN whose MLP adds nothing: its logits are its input (the residual alone)."""
    network = build_prn(config)
    torch.nn.init.zeros_(network.out.weight)
    torch.nn.init.zeros_(network.out.bias)
    return PRNModel.from_network(network, config, name="identity")


def ground_truth(people: list[np.ndarray], height: int = 240, width: int = 320) -> Heatmaps:
    """Stride-4 rendered targets of ``(17, 3)`` COCO people, image size, resize factor 1."""
    network = coco_to_network(np.stack(people))  # (P, 18, 3)
    maps = render_heatmaps(network, height, width, 4)  # (50, h, w)
    return Heatmaps(maps=maps, transform=GridTransform.from_resize(4, 1.0, 1.0))


def box_of(person: np.ndarray, config: PRNConfig):
    return person_box(person, config.crop_width / config.crop_height, 1.25, 32.0)


def test_one_persons_peaks_come_back() -> None:
    person = person_keypoints((160, 120), scale=1.2)  # (17, 3)
    heatmaps = ground_truth([person])
    grouping = PRNGrouping(identity_prn(), EVERY_PICK, torch.device("cpu"))
    found = grouping.keypoints(heatmaps.maps, heatmaps.transform, [box_of(person, TINY)])
    assert found.shape == (1, 17, 3)
    assert np.abs(found[0, :, :2] - person[:, :2]).max() < 0.5  # snapped to the refined peaks
    assert (found[0, :, 2] > 0.9).all()  # confidences: the peak values
    poses = grouping.group(heatmaps.maps, heatmaps.transform, [Pose(person.copy(), 0.8)])
    assert len(poses) == 1 and np.abs(poses[0].keypoints[:, :2] - person[:, :2]).max() < 0.5


@pytest.mark.skipif(not BUNDLED.is_file(), reason=f"no bundled PRN: {BUNDLED}")
def test_two_overlapping_people_give_the_boxs_own_person() -> None:
    own = person_keypoints((150, 125), scale=1.3)
    other = person_keypoints((178, 118), scale=1.2)  # overlaps most of the own box
    heatmaps = ground_truth([own, other])
    grouping = PRNGrouping(load_prn("prn"), DecodeConfig(grouping="prn"), torch.device("cpu"))
    box = box_of(own, grouping.prn.config)
    found = grouping.keypoints(heatmaps.maps, heatmaps.transform, [box])[0]  # (17, 3)
    to_own = np.linalg.norm(found[:, :2] - own[:, :2], axis=1)
    to_other = np.linalg.norm(found[:, :2] - other[:, :2], axis=1)
    assert ((found[:, 2] > 0) & (to_own < 1.0)).sum() >= 15  # measured: 17 of 17
    assert (to_other < 1.0).sum() <= 1


def test_no_boxes_and_wrong_inputs() -> None:
    grouping = PRNGrouping(identity_prn(), DecodeConfig(grouping="prn"), torch.device("cpu"))
    heatmaps = ground_truth([person_keypoints((160, 120))])
    assert grouping.keypoints(heatmaps.maps, heatmaps.transform, []).shape == (0, 17, 3)
    assert grouping.group(heatmaps.maps, heatmaps.transform, []) == []
    with pytest.raises(DecoderError, match=r"shape \(50, H, W\)"):
        grouping.keypoints(heatmaps.maps[:48], heatmaps.transform, [])
    with pytest.raises(DecoderError, match="non-empty floats"):
        grouping.keypoints(heatmaps.maps.astype(np.int32), heatmaps.transform, [])
    with pytest.raises(ValueError, match=r"PRN expects \(B, 17, 14, 9\) heatmaps"):
        build_prn(TINY)(torch.zeros(2, 17, 28, 18))
    with pytest.raises(UsageError, match="grouping: must be one of greedy, prn, got 'mst'"):
        PRNGrouping(identity_prn(), DecodeConfig(grouping="mst"), torch.device("cpu"))
    with pytest.raises(ValueError, match="dropout"):
        build_prn(PRNConfig(dropout=1.0))


def test_checkpoints_state_their_kind_and_layout(tmp_path: Path) -> None:
    network = build_prn(TINY)
    path = save_checkpoint(tmp_path / "prn.pt", network, TINY, DEFAULT_PREPROCESSING, {}, half=True)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["kind"] == "prn" and checkpoint["output"]["crop_height"] == 14
    loaded = load_prn(path)
    assert loaded.config == TINY and loaded.network.hidden.weight.dtype == torch.float32
    with pytest.raises(CheckpointError, match="use it with --grouping prn --prn"):
        load_model(path)
    with pytest.raises(CheckpointError, match="'prn' checkpoint, not a refiner network"):
        load_refiner(path)
    with pytest.raises(CheckpointError, match="'imhn' checkpoint, not a grouping network"):
        load_prn(save_tiny_checkpoint(tmp_path / "tiny.pt"))
    checkpoint["state_dict"]["out.bias"] = torch.zeros(3)
    torch.save(checkpoint, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"shape of out.bias is \(3,\)"):
        load_prn(tmp_path / "bad.pt")


def test_the_estimator_regroups_with_a_prn(tmp_path: Path) -> None:
    model = load_model(save_tiny_checkpoint(tmp_path / "tiny.pt"))
    decode = replace(EVERY_PICK, peak_threshold=0.01, min_mean_part_score=0.0)
    estimator = build_estimator(model, InferenceConfig(backend="torch"), decode, prn=identity_prn())
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    heatmaps = estimator.heatmaps([image])[0]
    greedy = build_estimator(
        model, InferenceConfig(backend="torch"), replace(decode, grouping="greedy")
    )
    assert estimator.grouping is not None and greedy.grouping is None
    poses = estimator.poses(heatmaps)
    assert all(pose.keypoints.shape == (17, 3) and 0 <= pose.score <= 1 for pose in poses)


def test_options_choose_the_grouping() -> None:
    options = inference_options(grouping="prn", prn="my-prn.pt")
    assert options.decode.grouping == "prn" and options.inference.prn == "my-prn.pt"
    assert inference_options().decode.grouping == "greedy"
    with pytest.raises(UsageError, match="--prn is used only with --grouping prn"):
        inference_options(prn="my-prn.pt")


def _two_people_set(root: Path) -> Path:
    own, other = person_keypoints((60, 50), 0.9), person_keypoints((80, 48), 0.9)
    alone = person_keypoints((64, 48), 0.9)
    alone[10:, 2] = 0  # lower body not labelled
    annotations = [person_annotation(i + 1, 1, p) for i, p in enumerate((own, other))]
    annotations.append(person_annotation(3, 2, alone))
    images = [np.zeros((96, 128, 3), np.uint8)] * 2  # never read
    return write_coco(root, images, annotations)[0]


def test_samples_hold_every_person_and_target_the_own_one(tmp_path: Path) -> None:
    dataset = PRNSampleDataset(_two_people_set(tmp_path), TINY)
    assert len(dataset) == 3
    inputs, targets, weights = dataset[0]
    assert inputs.shape == targets.shape == (17, 14, 9) and weights.shape == (17,)
    assert torch.allclose(targets.sum(dim=(1, 2)), torch.ones(17), atol=1e-5)
    assert ((inputs > 0.5) & (targets < 1e-6)).any()  # the other person's peaks: input only
    cells = 14 * 9
    present = targets.flatten(1).max(dim=1).values > 2 / cells  # (17,) not dropped (uniform)
    assert present.sum() >= 12
    for k in np.flatnonzero(present.numpy()):  # the own target peaks where the input does
        assert inputs[k].flatten()[targets[k].flatten().argmax()] > 0.05  # off-centre peaks
    _, targets, _ = dataset[2]
    assert torch.allclose(targets[10:], torch.full((7, 14, 9), 1 / cells))  # absent: uniform
    again = dataset[(0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(again, dataset[(0, 1)], strict=True))


def test_a_tiny_prn_trains_and_resumes(tmp_path: Path) -> None:
    annotations = str(_two_people_set(tmp_path / "data"))
    config = TrainConfig(
        annotations=annotations, images=str(tmp_path), out=str(tmp_path / "run"), prn=TINY,
        epochs=4, batch_size=2, workers=0, optimizer="adamw", lr=1e-3, log_every_steps=1,
    )  # fmt: skip
    checkpoint = train(config)
    assert load_prn(checkpoint).provenance["step"] == 8
    train(replace(config, out=str(tmp_path / "part"), max_steps=3))
    train(replace(config, out=str(tmp_path / "part"), max_steps=5, resume=True))

    def losses(run: str) -> dict[int, float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        return {r["step"]: r["loss"] for r in records if r["event"] == "step" and r["step"] <= 5}

    assert losses("part") == losses("run")  # the same steps, bit for bit
    with pytest.raises(UsageError, match="not validated while training"):
        train(replace(config, out=str(tmp_path / "val"), val_annotations=annotations))
