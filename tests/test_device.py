"""Device names: auto, cpu, cuda, cuda:N, and clear refusals."""

from __future__ import annotations

import pytest
import torch

from posecli.device import resolve_device
from posecli.errors import UsageError
from posecli.weights import load_model


def test_devices_resolve_or_fail_clearly() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected_auto
    for nonsense in ("gpu", "cuda:x", "cpu:0", ""):
        with pytest.raises(UsageError, match="unknown device"):
            resolve_device(nonsense)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda:0")
        with pytest.raises(UsageError):
            load_model("default", device="cuda")
