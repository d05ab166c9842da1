"""`posecli eval` fed ground-truth heatmaps scores what `bench/oracle_ap.py` scores.

A stand-in network recognises each image of an annotated set by its network input and emits the
targets of that image's people rendered at the input's geometry. `posecli eval` then runs its
whole path (image loading, preprocessing, Estimator, decoder, COCO results, pycocotools) and its
printed AP is compared with the oracle's, which renders the same people at the image's own size
and shares everything after the network (``decode_heatmaps``, ``to_coco_result``,
``coco_keypoint_ap``).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from coco_synthetic import noise_images, person_annotation, person_keypoints, write_coco

from posecli import loader
from posecli.cli import run
from posecli.config import ModelConfig, Preprocessing
from posecli.evaluate import SUMMARY_KEYS, load_annotations
from posecli.io.sources import load_image
from posecli.networks import PoseModel
from posecli.spec import STRIDE
from posecli.train.targets import render_heatmaps
from posecli.transforms import input_geometry, normalise, pad_image, resize_image

REPO = Path(__file__).resolve().parents[1]
MMPOSE_COCO = REPO.parent / "shared" / "data" / "eval" / "mmpose-coco"
PAD_MULTIPLE = 64  # InferenceConfig.pad_multiple, which `posecli eval` leaves at its default
SCALES = 5  # network outputs per stack: strides 4, 8, 16, 32, 64


@pytest.fixture(scope="module")
def oracle() -> Iterator[ModuleType]:
    """``bench/oracle_ap.py`` as a module (bench/ holds scripts, not a package).

    Registered in ``sys.modules`` while the tests run: its dataclass needs its module there.
    """
    spec = importlib.util.spec_from_file_location("oracle_ap", REPO / "bench" / "oracle_ap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        yield module


class GroundTruthNetwork(torch.nn.Module):
    """Emits the ground-truth heatmaps of whichever image of a known set it is given.

    Each image is known by its network input at one box size (resized, padded and normalised
    with ``posecli.transforms`` as the Estimator does); an input is matched to the known input
    of equal shape nearest to it, which must be the same within float rounding. Its targets are
    the image's people with keypoints mapped into the resized image (OpenCV's pixel-centre
    convention, ``u = (x + 0.5)·f - 0.5``), rendered on the stride-4 grid of the resized image
    and zero over the padding.
    """

    def __init__(self, annotations: Path, images: Path, box_size: int, oracle: ModuleType) -> None:
        super().__init__()
        coco = load_annotations(annotations)
        preprocessing = Preprocessing()
        self.known: list[tuple[torch.Tensor, torch.Tensor]] = []
        for image_id, record in coco.imgs.items():
            image = load_image(images / record["file_name"])  # (H, W, 3) RGB uint8
            geometry = input_geometry(*image.shape[:2], box_size, pad_multiple=PAD_MULTIPLE)
            resized = resize_image(image, geometry)[None]  # (1, height, width, 3)
            padded = pad_image(resized, geometry, preprocessing.pad_value)
            network_input = torch.from_numpy(normalise(padded, preprocessing))[0]  # (3, H', W')
            people = oracle.annotated_people(coco, image_id)  # (P, 18, 3) image pixels
            people[..., :2] = (people[..., :2] + 0.5) * (geometry.factor_x, geometry.factor_y)
            people[..., :2] -= 0.5
            maps = render_heatmaps(people, geometry.height, geometry.width, STRIDE)
            targets = torch.zeros(maps.shape[0], *(s // STRIDE for s in padded.shape[1:3]))
            targets[:, : maps.shape[1], : maps.shape[2]] = torch.from_numpy(maps)
            self.known.append((network_input, targets))  # (3, H', W'), (50, H'/4, W'/4)

    def forward(self, inputs: torch.Tensor) -> list[list[torch.Tensor]]:
        """``(N, 3, H', W')`` → one stack of 5 scales of ``(N, 50, H'/4·2^-j, W'/4·2^-j)``."""
        finest = torch.stack([self._targets(network_input) for network_input in inputs])
        return [[finest] + [F.avg_pool2d(finest, 2**j) for j in range(1, SCALES)]]

    def _targets(self, network_input: torch.Tensor) -> torch.Tensor:
        candidates = [
            (float((network_input - known).abs().max()), targets)
            for known, targets in self.known
            if known.shape == network_input.shape
        ]
        distance, targets = min(candidates, key=lambda candidate: candidate[0], default=(-1, None))
        if targets is None or distance > 1e-4:
            raise LookupError(f"unknown network input {tuple(network_input.shape)}")
        return targets


def eval_with_ground_truth(
    annotations: Path,
    images: Path,
    box_size: int,
    oracle: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    metrics: Path,
) -> dict[str, float]:
    """The figures `posecli eval` prints with the ground-truth network in place of a model
    (metrics and detections also written to ``metrics``, ``*.detections.json``)."""
    network = GroundTruthNetwork(annotations, images, box_size, oracle)
    model = PoseModel.from_network(network, ModelConfig(), name="ground-truth")
    monkeypatch.setattr(loader, "load_model", lambda name, device="cpu": model)
    args = ["eval", "--annotations", str(annotations), "--images", str(images)]
    options = ["--box-size", str(box_size), "--device", "cpu", "--quiet", "--no-refine"]  # decoder
    assert run([*args, *options, "--metrics", str(metrics)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0::2] == list(SUMMARY_KEYS)
    return {key: float(value) for key, value in zip(printed[0::2], printed[1::2], strict=True)}


def crowded_set(root: Path) -> tuple[Path, Path]:
    """Four 96×128 noise images: one person, or two people 6 px apart (the decoder merges and
    splits them, so AP is well below 1 and every result matters)."""
    annotations = []
    for image_id in range(1, 5):
        centres = [(64, 50)] if image_id % 2 else [(56, 50), (62, 52)]
        for centre in centres:
            keypoints = person_keypoints(centre, scale=0.9)
            annotations.append(person_annotation(len(annotations) + 1, image_id, keypoints))
    return write_coco(root, noise_images(4, 96, 128), annotations)


def detected(results: list[dict]) -> list[tuple]:
    """``(image_id, score, keypoints)`` of COCO results, sorted."""
    return sorted((r["image_id"], r["score"], tuple(r["keypoints"])) for r in results)


def test_eval_equals_the_oracle_on_a_synthetic_set(
    oracle: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Box size = image height: resize factor 1, the very maps the oracle decodes, so the very
    same detections and figures."""
    annotations, images = crowded_set(tmp_path / "set")
    metrics = tmp_path / "metrics.json"
    printed = eval_with_ground_truth(annotations, images, 96, oracle, monkeypatch, capsys, metrics)
    expected = oracle.oracle_ap(annotations)
    assert 0.3 < expected.figures["AP"] < 0.9
    written = json.loads((tmp_path / "metrics.detections.json").read_text())
    assert detected(written) == detected(expected.results)
    assert json.loads(metrics.read_text()) == expected.figures
    assert printed == {key: round(expected.figures[key], 4) for key in SUMMARY_KEYS}


def test_eval_agrees_with_the_oracle_on_mmpose_coco(
    oracle: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Real images at the default box size (512): the maps are rendered at a resize factor of
    1.19–1.54 and decoded on that grid, so the AP may differ from the oracle's by grid rounding.
    """
    annotations = MMPOSE_COCO / "person_keypoints.json"
    if not annotations.is_file():
        pytest.skip(f"shared eval set not present: {MMPOSE_COCO}")
    images = MMPOSE_COCO / "images"
    metrics = tmp_path / "metrics.json"
    printed = eval_with_ground_truth(annotations, images, 512, oracle, monkeypatch, capsys, metrics)
    expected = oracle.oracle_ap(annotations).figures
    assert printed["AP"] == pytest.approx(expected["AP"], abs=0.01)
    assert printed["AR"] == pytest.approx(expected["AR"], abs=0.01)
