"""Preprocessing of images for the network and the inverse map back to image pixels.

NumPy and OpenCV only. The Estimator (and anything that must feed the network exactly as the
Estimator does, such as benchmarks and evaluation) goes through these functions:

1. ``input_geometry`` (target height) or ``long_side_geometry`` (target longer side) decides the
   resized and padded size of an image for one search scale;
2. ``resize_image`` resizes an RGB uint8 image to that size, ``pad_image`` pads it right and
   bottom with the checkpoint's pad value;
3. ``normalise`` turns a batch of padded RGB uint8 images into the float32 NCHW tensor layout the
   checkpoint expects (channel order, scale, mean, std);
4. ``InputGeometry.grid_transform`` gives the ``GridTransform`` from a heatmap grid back to
   pixels of the original image.

Coordinates: integer values at pixel centres, x right, y down. A heatmap cell ``(i, j)`` of
stride ``s`` has its centre at input pixel ``(s*j + (s-1)/2, s*i + (s-1)/2)``. Resizing follows
OpenCV's pixel-centre convention: resized pixel ``u`` ↔ original ``(u + 0.5) / f - 0.5`` with
``f`` the per-axis resize factor (resized size / original size).

The resized sizes are multiples of the network stride (4), so that every stride-4 cell covers
exactly 4×4 pixels of the image and no padding: every heatmap grid of every scale then spans the
original image exactly, mirroring a heatmap mirrors the image, and grids of different scales
align under ``align_corners=False`` resampling. The per-axis factors are kept exactly (they may
differ by a fraction of a percent), so this rounding costs no accuracy in the inverse map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from posecli.config import InferenceConfig, Preprocessing
from posecli.errors import InputError, UsageError
from posecli.spec import STRIDE

#: Default cap on the resized width relative to the target height: an image wider than this
#: aspect ratio (a panorama, a strip) is scaled so that its width is ``MAX_ASPECT_RATIO ×``
#: the target height instead, and its height comes out smaller than the target. This keeps the
#: network input (and its memory) bounded for absurd shapes; 4:1 leaves every common photo and
#: video format (up to 32:9) untouched. Tall images need no cap: their long side is the height.
MAX_ASPECT_RATIO = 4.0

#: Largest network input of one image at one search scale, pixels (4096 × 4096). The default
#: network takes about 0.35 GB per megapixel of input on the CPU (``posecli images`` of a 1×1
#: image: 0.48 GB at --long-side 512, 0.76 GB at 1024), so this bounds a run near 6 GB, where
#: --long-side 8192 asked for 25 GB; a larger input is refused before anything is allocated.
MAX_NETWORK_PIXELS = 4096 * 4096

COLOUR_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class GridTransform:
    """Affine map from heatmap-grid coordinates to original image pixels, per axis.

    ``x_image = scale_x * x_grid + offset_x`` and ``y_image = scale_y * y_grid + offset_y``,
    with grid coordinates ``(x, y) = (column, row)`` of cell centres and image coordinates in
    pixels of the original image (integer = pixel centre).
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    @classmethod
    def from_resize(cls, stride: int, factor_x: float, factor_y: float) -> GridTransform:
        """The transform of a stride-``stride`` grid laid on an image resized by the factors.

        Cell ``j`` has its centre at resized pixel ``u = stride*j + (stride-1)/2``, which is
        original pixel ``(u + 0.5) / factor - 0.5 = stride * (j + 0.5) / factor - 0.5``.
        """
        return cls(
            scale_x=stride / factor_x,
            scale_y=stride / factor_y,
            offset_x=0.5 * stride / factor_x - 0.5,
            offset_y=0.5 * stride / factor_y - 0.5,
        )

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` grid points ``[x, y]`` to ``(..., 2)`` float64 image pixels."""
        points = np.asarray(points, dtype=np.float64)
        return points * (self.scale_x, self.scale_y) + (self.offset_x, self.offset_y)

    def inverse(self, points: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` image pixels ``[x, y]`` to ``(..., 2)`` float64 grid coordinates."""
        points = np.asarray(points, dtype=np.float64)
        return (points - (self.offset_x, self.offset_y)) / (self.scale_x, self.scale_y)


@dataclass(frozen=True)
class InputGeometry:
    """Sizes of one image on its way into the network at one search scale.

    Attributes:
        image_height, image_width: the original image, pixels.
        height, width: the resized image, multiples of the network stride (4).
        padded_height, padded_width: the network input after right/bottom padding.
    """

    image_height: int
    image_width: int
    height: int
    width: int
    padded_height: int
    padded_width: int

    @property
    def factor_x(self) -> float:
        """Horizontal resize factor, resized width / original width."""
        return self.width / self.image_width

    @property
    def factor_y(self) -> float:
        """Vertical resize factor, resized height / original height."""
        return self.height / self.image_height

    def grid_shape(self, stride: int = STRIDE) -> tuple[int, int]:
        """``(rows, columns)`` of the stride-``stride`` grid over the resized (unpadded) image."""
        if STRIDE % stride:
            raise UsageError(f"grid stride must divide the network stride {STRIDE}, got {stride}")
        return self.height // stride, self.width // stride

    def grid_transform(self, stride: int = STRIDE) -> GridTransform:
        """The map from the stride-``stride`` grid of the resized image to original pixels."""
        return GridTransform.from_resize(stride, self.factor_x, self.factor_y)


def _round_to_stride(length: float) -> int:
    """Nearest positive multiple of the network stride."""
    return max(STRIDE, STRIDE * round(length / STRIDE))


def _round_up(length: int, multiple: int) -> int:
    return multiple * math.ceil(length / multiple)


def input_geometry(
    image_height: int,
    image_width: int,
    target_height: float,
    pad_multiple: int = 64,
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
) -> InputGeometry:
    """Resized and padded sizes of an image for a target height (search scale × box size).

    The height becomes ``target_height`` and the width follows with the aspect ratio, both
    rounded to the nearest multiple of the network stride (4). An image wider than
    ``max_aspect_ratio`` × its target height is fitted by its width instead (see
    ``MAX_ASPECT_RATIO``). Padding (right and bottom) brings both sides to multiples of
    ``pad_multiple``.
    """
    _check_sizing(image_height, image_width, target_height, pad_multiple, "input height")
    factor = target_height / image_height
    max_width = max_aspect_ratio * target_height
    if image_width * factor > max_width:
        factor = max_width / image_width
    return _resized_geometry(image_height, image_width, factor, pad_multiple)


def long_side_geometry(
    image_height: int, image_width: int, target_long_side: float, pad_multiple: int = 64
) -> InputGeometry:
    """Resized and padded sizes of an image whose longer side becomes ``target_long_side``.

    The longer side becomes ``target_long_side`` (search scale × long side) and the other
    follows with the aspect ratio, both rounded to the nearest multiple of the network stride
    (4, at least 4), e.g. 640×480 (width × height) at 384 → 384×288. No aspect-ratio cap is
    needed: both sides are bounded by the target. Padding as in ``input_geometry``.
    """
    _check_sizing(image_height, image_width, target_long_side, pad_multiple, "input long side")
    factor = target_long_side / max(image_height, image_width)
    return _resized_geometry(image_height, image_width, factor, pad_multiple)


def _check_sizing(
    image_height: int, image_width: int, target: float, pad_multiple: int, name: str
) -> None:
    """InputError for an empty image, UsageError for a target or pad multiple that cannot work."""
    if image_height < 1 or image_width < 1:
        raise InputError(f"image has no pixels: {image_height}×{image_width}")
    if target < STRIDE:
        raise UsageError(f"{name} {target:g} is below the network stride {STRIDE}")
    if pad_multiple < 1 or pad_multiple % STRIDE:
        raise UsageError(f"pad multiple must be a multiple of {STRIDE}, got {pad_multiple}")


def _resized_geometry(
    image_height: int, image_width: int, factor: float, pad_multiple: int
) -> InputGeometry:
    """The geometry of an image resized by ``factor``, sides rounded to the stride, padded."""
    height = _round_to_stride(image_height * factor)
    width = _round_to_stride(image_width * factor)
    return InputGeometry(
        image_height=image_height,
        image_width=image_width,
        height=height,
        width=width,
        padded_height=_round_up(height, pad_multiple),
        padded_width=_round_up(width, pad_multiple),
    )


def check_network_input(geometry: InputGeometry) -> None:
    """UsageError when ``geometry``'s network input passes :data:`MAX_NETWORK_PIXELS`: the
    sizing options (--long-side, --box-size, --scales) ask too much of this image."""
    pixels = geometry.padded_height * geometry.padded_width
    if pixels > MAX_NETWORK_PIXELS:
        raise UsageError(
            f"a {geometry.image_width}×{geometry.image_height} image would become a network "
            f"input of {geometry.padded_width}×{geometry.padded_height} pixels "
            f"({pixels / 1e6:.0f} MP, at most {MAX_NETWORK_PIXELS / 1e6:.1f} MP): lower "
            "--long-side, --box-size or --scales"
        )


def network_geometry(
    config: InferenceConfig, height: int, width: int, scale: float = 1.0
) -> InputGeometry:
    """Network input sizes of a ``height × width`` image at one search scale of ``config``:
    longer side ``scale × long_side`` if set, else height ``scale × box_size``."""
    if config.long_side:
        target = scale * config.long_side
        return long_side_geometry(height, width, target, pad_multiple=config.pad_multiple)
    target = scale * config.box_size
    return input_geometry(height, width, target, pad_multiple=config.pad_multiple)


def check_network_inputs(config: InferenceConfig, height: int, width: int) -> None:
    """:func:`check_network_input` of a ``height × width`` image at every search scale of
    ``config`` and at scale 1 (the grid the scales are averaged on): before any work of that
    size, and for a video before the model loads (a size of 0, unknown: nothing to check)."""
    if not (height and width):
        return
    for scale in (1.0, *config.scales):
        check_network_input(network_geometry(config, height, width, scale))


def resize_image(image: np.ndarray, geometry: InputGeometry) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image (any channel order) to ``(height, width, 3)`` uint8.

    Area averaging when shrinking (no aliasing), bilinear when enlarging; both follow OpenCV's
    pixel-centre convention that ``GridTransform`` inverts.
    """
    if image.shape[:2] != (geometry.image_height, geometry.image_width):
        raise InputError(
            f"image is {image.shape[0]}×{image.shape[1]}, geometry expects "
            f"{geometry.image_height}×{geometry.image_width}"
        )
    size = (geometry.width, geometry.height)  # OpenCV takes (width, height)
    if size == (geometry.image_width, geometry.image_height):
        return image
    shrinking = geometry.width * geometry.height < geometry.image_width * geometry.image_height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def pad_image(images: np.ndarray, geometry: InputGeometry, pad_value: int) -> np.ndarray:
    """Pad resized images right and bottom to the padded size with the uint8 ``pad_value``.

    Args:
        images: ``(..., height, width, 3)`` uint8, any channel order.

    Returns:
        ``(..., padded_height, padded_width, 3)`` uint8; the image sits at the top-left.
    """
    pad_rows = geometry.padded_height - images.shape[-3]
    pad_columns = geometry.padded_width - images.shape[-2]
    if pad_rows == 0 and pad_columns == 0:
        return images
    widths = [(0, 0)] * (images.ndim - 3) + [(0, pad_rows), (0, pad_columns), (0, 0)]
    return np.pad(images, widths, mode="constant", constant_values=pad_value)


def normalise(images: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Turn RGB uint8 images into the network's input convention.

    Args:
        images: ``(N, H, W, 3)`` uint8, RGB.
        preprocessing: the checkpoint's convention, ``(x[..., order] * scale - mean) / std``.

    Returns:
        ``(N, 3, H, W)`` float32, C-contiguous, channels in ``preprocessing.colour_order``.
    """
    if preprocessing.colour_order not in COLOUR_ORDERS:
        raise UsageError(
            f"unknown colour order {preprocessing.colour_order!r}, expected one of "
            f"{', '.join(COLOUR_ORDERS)}"
        )
    if preprocessing.colour_order == "BGR":
        images = images[..., ::-1]
    mean = np.asarray(preprocessing.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(preprocessing.std, dtype=np.float32).reshape(1, 3, 1, 1)
    scale = np.float32(preprocessing.scale)
    tensor = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)  # (N, 3, H, W)
    tensor *= scale
    tensor -= mean
    tensor /= std
    return tensor
