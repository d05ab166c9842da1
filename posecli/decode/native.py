"""The door to the compiled decoder ``posecli.decode._native`` (built from pyx/decode_native.pyx).

This is the only module that imports the extension. It passes the configuration as plain
numbers, by keyword (the extension takes them keyword-only, so no reordering of its parameters
can swap two thresholds); the extension takes arrays in and gives arrays out, and releases the
GIL while it works.
"""

from __future__ import annotations

import numpy as np

from posecli.config import DecodeConfig

try:
    from posecli.decode import _native

    _IMPORT_ERROR = ""
except ImportError as error:  # not built: `python setup.py build_ext --inplace` or `pip install`
    _native = None
    _IMPORT_ERROR = str(error)


#: The ``DecodeConfig`` fields the compiled decoder takes, by name and as they are.
NATIVE_FIELDS = (
    "peak_threshold",
    "part_threshold",
    "part_sample_ratio",
    "max_part_samples",
    "long_part_fraction",
    "part_length_factor",
    "part_proportion_factor",
    "merge_ratio",
    "min_parts",
    "min_mean_part_score",
    "max_people",
    "max_peaks",
    "refine_radius",
    "completion_reach",
)


def available() -> bool:
    """Whether the extension is built and importable."""
    return _native is not None


def import_error() -> str:
    """Why the extension could not be imported ("" when it could)."""
    return _IMPORT_ERROR


def decode_poses(
    heatmaps: np.ndarray,
    body_parts: np.ndarray,
    part_lengths: np.ndarray,
    num_keypoints: int,
    output_keypoints: np.ndarray,
    config: DecodeConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The people of :func:`posecli.decode.reference.decode_people`, ready for output.

    Args:
        heatmaps: ``(C, H, W)`` C-contiguous float32 (NaN and ±inf read as in the reference).
        body_parts: ``(B, 2)`` intc keypoint pairs; part maps are channels ``0…B-1``, keypoint
            maps ``B…B+num_keypoints-1``.
        part_lengths: ``(B,)`` float64, typical length of each part (torso lengths; 0: exempt
            from the proportion rule).
        output_keypoints: ``(J,)`` intc, the network keypoint of each output keypoint.

    Returns:
        ``keypoints`` ``(P, J, 3)`` float32 ``[x, y, conf]`` (grid coordinates, zeros for a
        missing keypoint) and ``scores`` ``(P,)`` float32, sorted by score descending (ties in
        assembly order) and cut to ``config.max_people`` when that is > 0.
    """
    settings = {name: getattr(config, name) for name in NATIVE_FIELDS}
    return _native.decode_poses(
        heatmaps,
        body_parts,
        part_lengths,
        num_keypoints,
        output_keypoints,
        centroid_refinement=config.refinement == "centroid",
        **settings,
    )
