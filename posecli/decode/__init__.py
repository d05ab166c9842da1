"""Heatmaps → people: peak finding, body-part scoring and greedy keypoint assignment.

``decode(heatmaps)`` takes the 50-channel stack of one image on the heatmap grid and returns the
people in it. Two implementations of one algorithm live here: ``reference.py`` (readable NumPy,
the specification) and the compiled ``_native`` extension built from ``pyx/decode_native.pyx``
(the default: same results, orders of magnitude faster, releases the GIL while it works). The
algorithm is described step by step in :mod:`posecli.decode.reference`.

Where we differ from the published Simple Pose code, and why:

* **Grid.** The published code upsamples the heatmaps to image size (cubic) and decodes there;
  we decode on the heatmap grid itself with sub-cell refinement, so lengths, the refinement
  window and the part samples are in grid cells (the long-part penalty is a ratio and does not
  change). The caller maps grid coordinates to pixels (stride 4: ``x_px = 4·x + 1.5``).
* **Ties.** The published NMS keeps every cell equal to its 3×3 maximum, so a plateau (a keypoint
  midway between two cells, an fp16 map) gives two peaks and splits the person. A cell here must
  also be strictly greater than the neighbours before it in raster order: one peak per plateau.
* **Refinement.** By default a Gaussian is fitted per axis to the peak and its two neighbours
  (a parabola through their logs): exact for the Gaussian peaks the network is trained on, where
  a 5×5-cell centroid pulls every keypoint towards its cell centre (σ = 9 px: 0.66 px per axis
  on average, up to 1.3 px; costly for small people, whose OKS tolerance is ~2 px). On
  rendered ground truth (bench/oracle_ap.py) it lifts AP from 0.862 to 0.886 on cocomini-train.
  ``refinement="centroid"`` keeps the published weighted centroid, corrected: the published code
  swaps row and column offsets; ours does not, clips the window to the map instead of skipping
  refinement at the border, and weighs by ``max(value, 0)``.
* **Peak score.** The published score is the mean of a 5×5-*pixel* window of the upsampled map,
  which is within a few percent of the peak value; on the grid a 5×5-*cell* window mean would be
  ~0.7 of it and shift every threshold tuned on the published scores, so we take the peak value.
* **Rounding.** Sample counts and sample cells round half up (the published ``round`` rounds half
  to even), so the two implementations and every platform agree.
* **Symmetric assembly.** The published assembly only brings in a part's second end; when the
  person holds the second end and not the first, the first end was dropped. We bring in
  whichever end is missing (it rescues people whose neck is missing on ground truth).
* **Merge length check** uses the longer of the two people's longest parts (published: the
  first person's only).
* **Proportion** (new, ``part_proportion_factor``): a part joins a person, or merges two, only
  if its length over its type's typical length (:data:`PART_LENGTHS`) is below 3.5 × the
  largest such ratio among the person's parts; a part that would start a person, the same
  against the median ratio of the other parts at its ends. The published code only refuses a
  part 16 × the person's longest; in a crowd, a hip–hip or shoulder part drawn across a row of
  people passes the part-map test (every sample lies on someone's part) and chained people
  hundreds of pixels wide.
* **Completion** (new step 5, ``completion_reach``): fragments and lone keypoints that no body
  part can link to a person (a wrist whose elbow is hidden, an arm without its shoulder) join
  the nearest person they complete. On rendered ground truth: AP 0.886 → 0.923 (cocomini-train),
  0.990 → 1.000 (mmpose-coco).
* **Person score** is ``1 - 1/total`` as published, clipped at 0: the filter keeps totals down to
  0.9, where the published score is negative.
* **Caps and robustness.** At most ``max_peaks`` candidates per keypoint type (highest first)
  keep the time bounded on noise; a NaN reads as 0 and values are clipped to ±1e6 (so ±inf).
* **Ordering.** People are sorted by score (descending, ties in assembly order); candidate parts
  by rank with ties broken by peak order, so results are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecli.config import DecodeConfig
from posecli.decode import native as native_backend
from posecli.decode import reference
from posecli.errors import DecoderError
from posecli.spec import BODY_PARTS, COCO_TO_NETWORK, NUM_CHANNELS, NUM_KEYPOINTS

__all__ = ["PART_LENGTHS", "DecodedPoses", "decode", "native_available"]

#: Sub-cell peak refinements (DecodeConfig.refinement).
#: The defaults of DecodeConfig (frozen, so one shared instance is safe).
DEFAULT_CONFIG = DecodeConfig()
_BODY_PARTS = np.array(BODY_PARTS, dtype=np.intc)  # (30, 2) network-order keypoint pairs
_COCO_TO_NETWORK = np.array(COCO_TO_NETWORK, dtype=np.intc)  # (17,)

#: Typical length of each body part of ``posecli.spec.BODY_PARTS``, in torso lengths (neck to
#: hip = 1), for the proportion rule (``DecodeConfig.part_proportion_factor``): per part, the
#: median over labelled people of its length over the person's median ratio (iterated to a
#: fixed point), left and right averaged, on the ground truth of the shared eval sets
#: (cocomini-train, mmpose-coco, mmpose-ochuman: 97 people with two parts or more). The four
#: parts inside the head are exempt (0): nose–eye 0.09 and eye–ear 0.17 are a cell or two for
#: most people, so peak noise and head turns rule their lengths. ``(30,)`` float64.
PART_LENGTHS = np.array(
    [0.40, 0.45, 0.45, 0.40, 0.40, 0.0, 0.0, 0.0, 0.0,  # neck–head, nose–eyes, eyes–ears
     0.30, 0.53, 0.44, 0.30, 0.53, 0.44,  # neck–shoulders, arms
     1.00, 0.77, 0.75, 1.00, 0.77, 0.75,  # neck–hips, legs
     0.52, 0.52, 0.99, 0.88, 0.99, 0.88, 0.42, 0.42, 0.39],  # redundant parts
    dtype=np.float64,
)  # fmt: skip


@dataclass(frozen=True)
class DecodedPoses:
    """The people of one heatmap stack.

    ``keypoints``: ``(P, 17, 3)`` float32 ``[x, y, conf]`` in COCO-17 order, heatmap-grid
    coordinates (cell ``(i, j)`` is ``x = j, y = i``); ``conf`` is the keypoint's peak value,
    0 for a missing keypoint (then ``x = y = 0``). ``scores``: ``(P,)`` float32 in [0, 1],
    sorted descending.
    """

    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def native_available() -> bool:
    """Whether the compiled decoder extension is built and importable."""
    return native_backend.available()


def decode(
    heatmaps: np.ndarray, config: DecodeConfig = DEFAULT_CONFIG, native: bool = True
) -> DecodedPoses:
    """Decode one ``(50, H, W)`` heatmap stack (float16/32/64) into people.

    Raises:
        DecoderError: wrong type, shape or dtype, or ``native=True`` without the extension.
    """
    maps = _checked_heatmaps(heatmaps)
    if native:  # sorts, cuts and reorders natively as _ranked does
        keypoints, scores = _native_module().decode_poses(
            maps, _BODY_PARTS, PART_LENGTHS, NUM_KEYPOINTS, _COCO_TO_NETWORK, config
        )
    else:
        keypoints, scores = _ranked(
            *reference.decode_people(maps, _BODY_PARTS, PART_LENGTHS, NUM_KEYPOINTS, config),
            config.max_people,
        )
    return DecodedPoses(keypoints=keypoints, scores=scores)


def _ranked(
    keypoints: np.ndarray, scores: np.ndarray, max_people: int
) -> tuple[np.ndarray, np.ndarray]:
    """People in assembly order (network-order ``(P, K, 3)`` keypoints, ``(P,)`` scores) →
    sorted by score descending (ties in assembly order), the best ``max_people`` when > 0, and
    keypoints in COCO-17 order ``(P, 17, 3)``."""
    order = np.argsort(-scores, kind="stable")
    if max_people > 0:
        order = order[:max_people]
    return keypoints[order[:, None], _COCO_TO_NETWORK], scores[order]


def _native_module():  # the posecli.decode.native module, or DecoderError
    if not native_backend.available():
        raise DecoderError(f"native decoder not built: {native_backend.import_error()}")
    return native_backend


def _checked_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    """The heatmap stack validated, as C-contiguous float32 (a view when it already is)."""
    if not isinstance(heatmaps, np.ndarray):
        raise DecoderError(f"heatmaps must be a numpy array, got {type(heatmaps).__name__}")
    if heatmaps.dtype not in (np.float16, np.float32, np.float64):
        raise DecoderError(f"heatmaps must be float16, float32 or float64, got {heatmaps.dtype}")
    if heatmaps.ndim != 3 or heatmaps.shape[0] != NUM_CHANNELS:
        raise DecoderError(
            f"heatmaps must have shape ({NUM_CHANNELS}, H, W), got {tuple(heatmaps.shape)}"
        )
    if heatmaps.shape[1] == 0 or heatmaps.shape[2] == 0:
        raise DecoderError(f"heatmaps are empty: shape {tuple(heatmaps.shape)}")
    return np.ascontiguousarray(heatmaps, dtype=np.float32)
