"""posecli: multi-person 2D pose estimation with the Simple Pose method (IMHN + greedy grouping).

The public API is ``load_model``, ``build_estimator`` (an ``Estimator`` assembled from the
loaded model and the stages its settings ask for), ``Pose``, ``Frame`` and ``PoseCliError``.
Heavy modules (torch) are imported on first use, so ``import posecli`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from posecli.errors import PoseCliError
from posecli.pose import Frame, Pose

__version__ = "0.1.0"
__all__ = [
    "Estimator",
    "Frame",
    "Pose",
    "PoseCliError",
    "__version__",
    "build_estimator",
    "load_model",
]

_LAZY = {
    "load_model": "posecli.loader",
    "build_estimator": "posecli.assemble",
    "Estimator": "posecli.estimator",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'posecli' has no attribute {name!r}")
