"""``posecli info``: what is installed (versions, device, native decoder, models, presets)."""

from __future__ import annotations

import platform
import sys

import numpy

from posecli import __version__
from posecli.config import MODEL_PRESETS, PRN_PRESETS, REFINER_PRESETS
from posecli.decode import native_available


def installation_report() -> list[str]:
    """What ``posecli info`` says: versions, device, native decoder, known models, presets."""
    import torch

    from posecli.device import resolve_device
    from posecli.registry import list_models

    cuda = torch.cuda.is_available()
    cuda_note = f"{torch.cuda.device_count()} CUDA device(s)" if cuda else "CUDA not available"
    native = "built" if native_available() else "NOT built (slow NumPy)"
    lines = [
        f"posecli {__version__}",
        f"python  {platform.python_version()} ({sys.executable})",
        f"torch   {torch.__version__}, numpy {numpy.__version__}",
        f"device  {resolve_device('auto')} (auto; {cuda_note})",
        f"native decoder  {native}",
        "models:",
    ]
    for entry in list_models():
        state = "present" if entry.present else "missing"
        lines.append(f"  {entry.name:<20} {state:<8} {entry.path}  ({entry.description})")
    lines.append(f"presets (for train --preset): {', '.join(MODEL_PRESETS)}")
    lines.append(f"refiner presets (train --preset): {', '.join(REFINER_PRESETS)}")
    lines.append(f"PRN presets (train --preset): {', '.join(PRN_PRESETS)}")
    return lines
