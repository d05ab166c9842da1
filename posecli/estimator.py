"""The Estimator: the one inference path that video, webcam, images and evaluation share.

RGB uint8 images → resize/pad/normalise (``posecli.transforms``) → network → the 50-channel
heatmaps of the last stack at stride 4 → averaged over search scales and the mirrored pass on one
common grid per image → ``posecli.decode`` → poses in image pixels.

The common grid is the ``decode_stride`` grid of the image resized to the box size (or, with
``long_side``, to that long side) at search scale 1, whatever scales are searched, so the decoder
sees the same resolution for the same settings. All heatmap work stays on the network's device;
only the final common-grid maps are copied to the CPU.

Decode grid: ``InferenceConfig.decode_stride`` 4 (the default) decodes the native stride-4 grid;
2 upsamples ×2 first. ``bench/decode_grid.py`` measured both on ground-truth heatmaps of the shared
COCO-format sets: equal AP within the sets' noise, and stride 2 costs ~20× the time per frame,
mostly in the upsampling itself.

Refinement (issue 16, ``InferenceConfig.refine``): the decoded people of each image are refined
top-down by a refiner and merged with the bottom-up ones, see ``posecli.refine``; ``poses`` then
needs the image.

Grouping (issue 20, ``DecodeConfig.grouping``): ``"greedy"`` keeps the decoder's people;
``"prn"`` regroups them with a Pose Residual Network inside their boxes, see ``posecli.group``,
before any refinement.

The stages (network, refinement, grouping) come loaded: ``posecli.assemble.build_estimator``
loads what the configs name and assembles the Estimator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from posecli.backends import NetworkStage
from posecli.config import DecodeConfig, InferenceConfig
from posecli.decode import decode
from posecli.errors import CheckpointError, InputError, UsageError
from posecli.group import PRNGrouping
from posecli.model import KINDS, IMHNLayout
from posecli.model.kinds import BOTTOM_UP_ROLE
from posecli.networks import PoseModel
from posecli.pose import Pose
from posecli.refine import Refinement
from posecli.spec import CHANNEL_FLIP_ORDER, NUM_CHANNELS, STRIDE
from posecli.transforms import (
    GridTransform,
    InputGeometry,
    check_network_inputs,
    network_geometry,
    normalise,
    pad_image,
    resize_image,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Heatmaps:
    """The averaged heatmaps of one image on its common grid.

    Attributes:
        maps: ``(50, h, w)`` float32, channels as in ``posecli.spec`` (0–29 body parts, 30–47
            keypoints in network order, 48 person mask, 49 max keypoint map); cell ``(i, j)``
            covers the image region that ``transform`` maps its centre into.
        transform: grid coordinates ``[x, y]`` (column, row) → original image pixels.
    """

    maps: np.ndarray
    transform: GridTransform


def decode_heatmaps(heatmaps: Heatmaps, config: DecodeConfig, native: bool = True) -> list[Pose]:
    """Decode one image's heatmaps and map the keypoints to its pixels.

    Args:
        heatmaps: the image's ``(50, h, w)`` float32 maps and their grid → pixel transform.
        config: decoder settings.
        native: use the compiled decoder (``False``: the NumPy reference).

    Returns:
        People, highest score first: COCO-17 ``[x, y, confidence]`` keypoints in original
        image pixels, float32, confidences in [0, 1] (heatmap peaks may overshoot 1: clipped);
        a missing keypoint is ``(0, 0, 0)``.
    """
    decoded = decode(heatmaps.maps, config, native=native)
    keypoints = np.array(decoded.keypoints, dtype=np.float32)  # (P, 17, 3) grid coordinates
    np.clip(keypoints[..., 2], 0.0, 1.0, out=keypoints[..., 2])
    found = keypoints[..., 2:] > 0  # (P, 17, 1)
    pixels = heatmaps.transform.apply(keypoints[..., :2])  # (P, 17, 2)
    keypoints[..., :2] = np.where(found, pixels, 0.0)
    poses = [
        Pose(keypoints=person, score=float(score))
        for person, score in zip(keypoints, decoded.scores, strict=True)
    ]
    return sorted(poses, key=lambda pose: pose.score, reverse=True)


def _shown(poses: list[Pose], min_score: float) -> list[Pose]:
    """The people to report: scores and keypoint confidences in [0, 1], none scoring below
    ``min_score``."""
    shown = []
    for pose in poses:
        pose.score = min(max(pose.score, 0.0), 1.0)
        if pose.score >= min_score:
            np.clip(pose.keypoints[:, 2], 0.0, 1.0, out=pose.keypoints[:, 2])
            shown.append(pose)
    return shown


def resample_heatmaps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample ``(N, C, h, w)`` heatmaps to ``(N, C, *size)``, bilinear, on their device.

    Both grids must span the same image region (true of every grid the Estimator makes), which
    is what ``align_corners=False`` assumes. Shrinking is antialiased.
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False, antialias=True)


#: What the decoder reads: heatmaps in ``posecli.spec`` channel order at stride ``STRIDE``.
DECODABLE = {"channels": NUM_CHANNELS, "stride": STRIDE, "channel_order": "posecli-50"}


def _decodable_layout(model: PoseModel) -> IMHNLayout:
    """The model's typed output layout (an ``IMHNLayout`` or another bottom-up kind's);
    CheckpointError unless it is a bottom-up kind's that the decoder can read
    (:data:`DECODABLE`)."""
    layout = model.layout
    stated = layout.to_dict()
    kind = KINDS.get(stated.get("kind"))
    differing = [key for key, value in DECODABLE.items() if stated.get(key) != value]
    if kind is None or kind.role != BOTTOM_UP_ROLE:
        differing.insert(0, "kind")
    if differing:
        found = ", ".join(f"{key} {stated.get(key)!r}" for key in differing)
        raise CheckpointError(f"model {model.name} outputs what the decoder cannot read ({found})")
    return layout


def _check_stages(
    config: InferenceConfig,
    decode_config: DecodeConfig,
    refinement: Refinement | None,
    grouping: PRNGrouping | None,
) -> None:
    """UsageError unless the stages are there exactly when the configs ask for them."""
    if config.refine != (refinement is not None):
        raise UsageError(
            "refinement is there exactly when config.refine is on (posecli.assemble builds it)"
        )
    if (decode_config.grouping == "prn") != (grouping is not None):
        raise UsageError(
            "the PRN grouping is there exactly when decode_config.grouping is 'prn' "
            "(posecli.assemble builds it)"
        )


def _check_image(image: object, index: int) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` array, C-contiguous, or an InputError naming the image."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image {index} is a {type(image).__name__}, expected a numpy array")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"image {index} must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image {index} has no pixels: {image.shape}")
    return np.ascontiguousarray(image)


class Estimator:
    """Images in, heatmaps and poses out, for one model and one set of inference settings.

    Assembled from stages already loaded (``posecli.assemble.build_estimator`` loads and
    assembles them; this constructor loads, exports and writes nothing): ``network``, the
    bottom-up model on its backend (``posecli.backends.NetworkStage``: on torch the model's
    network itself, moved to the device, channels-last on CPU, float16 with ``config.half`` on
    CUDA, in place; on onnxruntime a CPU session of its ONNX file or of its cached export);
    ``refinement``, the top-down refinement of the people (``posecli.refine``), there exactly
    when ``config.refine``; ``grouping``, the PRN regrouping (``posecli.group``), there exactly
    when ``decode_config.grouping == "prn"``.
    """

    def __init__(
        self,
        network: NetworkStage,
        config: InferenceConfig = InferenceConfig(),  # noqa: B008 (frozen record)
        decode_config: DecodeConfig = DecodeConfig(),  # noqa: B008 (frozen record)
        refinement: Refinement | None = None,
        grouping: PRNGrouping | None = None,
    ) -> None:
        _check_stages(config, decode_config, refinement, grouping)
        self.layout = _decodable_layout(network.model)
        self.model = network.model
        self.config = config
        self.decode_config = decode_config
        self.backend, self.device, self.dtype = network.backend, network.device, network.dtype
        self.runner = network.runner
        self._flip_channels = torch.tensor(CHANNEL_FLIP_ORDER, device=self.device)
        self.refinement = refinement
        self.grouping = grouping
        logger.debug(
            "Estimator: model %s on %s (%s, %s), box %d, long side %d, scales %s, flip %s, "
            "decode stride %d",
            self.model.name, self.device, self.backend, self.dtype, config.box_size,
            config.long_side, config.scales, config.flip, config.decode_stride,
        )  # fmt: skip

    @torch.inference_mode()
    def heatmaps(self, images: Sequence[np.ndarray]) -> list[Heatmaps]:
        """Averaged heatmaps per image.

        Args:
            images: RGB uint8 ``(H, W, 3)`` arrays; images of equal size are batched together
                (``config.batch_size`` per forward pass, twice that with ``flip``).

        Returns:
            One ``Heatmaps`` per image, in input order: ``(50, h, w)`` float32 maps on the
            common grid (``h, w`` = resized size at scale 1 / ``decode_stride``) and its
            transform to image pixels.
        """
        checked = [_check_image(image, index) for index, image in enumerate(images)]
        results: list[Heatmaps | None] = [None] * len(checked)
        for indices in self._batches(checked):
            batch = np.stack([checked[index] for index in indices])  # (N, H, W, 3)
            for index, heatmaps in zip(indices, self._batch_heatmaps(batch), strict=True):
                results[index] = heatmaps
        return results  # type: ignore[return-value]  # every slot is filled

    def predict(self, images: Sequence[np.ndarray]) -> list[list[Pose]]:
        """Poses per image: RGB uint8 ``(H, W, 3)`` arrays in, people (highest score first) out.

        Keypoints are COCO-17 ``[x, y, confidence]`` in pixels of each original image.
        """
        checked = [_check_image(image, index) for index, image in enumerate(images)]
        heatmaps = self.heatmaps(checked)
        return [self.poses(maps, image) for maps, image in zip(heatmaps, checked, strict=True)]

    def poses(self, heatmaps: Heatmaps, image: np.ndarray | None = None) -> list[Pose]:
        """Decode one image's heatmaps into poses in its pixels (see ``decode_heatmaps``),
        regrouped by the PRN and refined top-down when the configs say so (refining needs the
        RGB uint8 ``(H, W, 3)`` ``image`` the heatmaps come from)."""
        poses = decode_heatmaps(heatmaps, self.decode_config)
        if self.grouping is not None:
            poses = self.grouping.group(heatmaps.maps, heatmaps.transform, poses)
        if self.refinement is not None:
            if image is None:
                raise UsageError("refining poses needs the image they come from")
            poses = self.refinement.refine(image, poses)
        return _shown(poses, self.decode_config.min_person_score)

    @property
    def can_follow(self) -> bool:
        """Whether :meth:`follow` can run: the people are refined (issue 38)."""
        return self.refinement is not None

    def follow(self, image: np.ndarray, people: Sequence[Pose]) -> tuple[list[Pose], int]:
        """``people`` predicted from earlier frames found again in the RGB uint8 ``(H, W, 3)``
        ``image`` by the refiner alone (``Refinement.follow``): the people found, highest score
        first (those below ``min_person_score`` not shown), and how many the refiner lost.
        Needs :attr:`can_follow`."""
        if self.refinement is None:
            raise UsageError("following people needs refinement (--refine)")
        found, lost = self.refinement.follow(image, people)
        return _shown(found, self.decode_config.min_person_score), lost

    def _batches(self, images: Sequence[np.ndarray]) -> Iterator[list[int]]:
        """Indices of images batched together: equal sizes, at most ``batch_size`` each."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        size = self.config.batch_size
        for indices in by_shape.values():
            for start in range(0, len(indices), size):
                yield indices[start : start + size]

    def _batch_heatmaps(self, images: np.ndarray) -> list[Heatmaps]:
        """Heatmaps of ``(N, H, W, 3)`` RGB uint8 images of one size, averaged over scales."""
        height, width = images.shape[1:3]
        stride = self.config.decode_stride
        check_network_inputs(self.config, height, width)  # before anything of their size
        reference = self.geometry(height, width, 1.0)
        grid = reference.grid_shape(stride)
        total = torch.zeros((len(images), NUM_CHANNELS, *grid), device=self.device)  # (N, 50, h, w)
        for scale in self.config.scales:
            geometry = self.geometry(height, width, scale)
            total += resample_heatmaps(self._scale_heatmaps(images, geometry), grid)
        total /= len(self.config.scales)
        transform = reference.grid_transform(stride)
        return [Heatmaps(maps=maps, transform=transform) for maps in total.cpu().numpy()]

    def geometry(self, height: int, width: int, scale: float = 1.0) -> InputGeometry:
        """Network input sizes of a ``height × width`` image at one search scale: longer side
        ``scale × long_side`` if set, else height ``scale × box_size``."""
        return network_geometry(self.config, height, width, scale)

    def _scale_heatmaps(self, images: np.ndarray, geometry: InputGeometry) -> torch.Tensor:
        """Stride-4 heatmaps of the valid region at one scale, flip-averaged when configured.

        Args:
            images: ``(N, H, W, 3)`` RGB uint8.

        Returns:
            ``(N, 50, height/4, width/4)`` float32 on the device.
        """
        count = len(images)
        resized = np.stack([resize_image(image, geometry) for image in images])  # (N, h, w, 3)
        if self.config.flip:
            # Mirror before padding, so the padding stays right and the mirror is exact.
            resized = np.concatenate([resized, resized[:, :, ::-1]])  # (2N, h, w, 3)
        padded = pad_image(resized, geometry, self.model.preprocessing.pad_value)
        inputs = normalise(padded, self.model.preprocessing)  # (B, 3, H', W') float32
        finest = self.runner(inputs)  # (B, 50, H'/4, W'/4), the decoder's output
        stride = self.layout.stride
        grid = (inputs.shape[2] // stride, inputs.shape[3] // stride)
        expected = (len(resized), NUM_CHANNELS, *grid)
        if tuple(finest.shape) != expected:
            raise CheckpointError(
                f"network output is {tuple(finest.shape)}, expected {expected} for an input of "
                f"{tuple(inputs.shape)}"
            )
        rows, columns = geometry.grid_shape(stride)
        maps = finest[:, :, :rows, :columns].float()  # (B, 50, height/4, width/4)
        if not self.config.flip:
            return maps
        mirrored = maps[count:].flip(-1)[:, self._flip_channels]  # (N, 50, height/4, width/4)
        return (maps[:count] + mirrored) / 2
