"""Device names: auto, cpu, cuda, cuda:N, and clear refusals."""

from __future__ import annotations

import pytest
import torch

from posecli.device import resolve_device
from posecli.errors import DeviceError, UsageError
from posecli.loader import load_model


def test_devices_resolve_or_fail_clearly() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected_auto
    for nonsense in ("gpu", "cuda:x", "cpu:0", ""):
        with pytest.raises(UsageError, match="unknown device"):
            resolve_device(nonsense)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")
        with pytest.raises(DeviceError):
            load_model("default", device="cuda")


def test_a_missing_device_is_the_environment_not_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available") as missing:
        resolve_device("cuda")
    assert missing.value.exit_code == 1  # like a missing camera; a wrong name stays 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match="only 1 CUDA device"):
        resolve_device("cuda:3")
