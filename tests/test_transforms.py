"""Preprocessing geometry, padding, normalisation and the inverse map to image pixels."""

from __future__ import annotations

import numpy as np
import pytest

from posecli.config import Preprocessing
from posecli.errors import InputError, UsageError
from posecli.transforms import (
    MAX_ASPECT_RATIO,
    GridTransform,
    InputGeometry,
    input_geometry,
    long_side_geometry,
    normalise,
    pad_image,
    resize_image,
)

SCALES = (0.5, 1.0, 1.5, 2.0)
BOX_SIZE = 512
# (height, width): landscape, portrait, HD video, tiny, odd sizes
IMAGE_SIZES = ((480, 640), (640, 360), (1080, 1920), (37, 53), (333, 517))


def render_blob(height: int, width: int, x: float, y: float, sigma: float) -> np.ndarray:
    """RGB uint8 image, black with a white Gaussian blob centred at pixel (x, y)."""
    rows, columns = np.mgrid[0:height, 0:width]
    blob = np.exp(-((columns - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))
    grey = np.round(255 * blob).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def centroid(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted ``[x, y]`` of an (H, W, 3) image, pixel-centre coordinates."""
    weights = image[:, :, 0].astype(np.float64)
    rows, columns = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return np.array([(weights * columns).sum(), (weights * rows).sum()]) / weights.sum()


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("height", "width"), IMAGE_SIZES)
def test_geometry_height_follows_scale_and_padding_is_a_multiple_of_64(
    height: int, width: int, scale: float
) -> None:
    geometry = input_geometry(height, width, scale * BOX_SIZE, pad_multiple=64)
    assert geometry.height == scale * BOX_SIZE  # every s·512 here is a multiple of 4
    assert geometry.width % 4 == 0
    assert abs(geometry.width - width * geometry.height / height) <= 2  # aspect kept
    assert geometry.padded_height % 64 == 0 and geometry.padded_width % 64 == 0
    assert 0 <= geometry.padded_height - geometry.height < 64
    assert 0 <= geometry.padded_width - geometry.width < 64


def test_geometry_caps_very_wide_images_and_keeps_tall_ones() -> None:
    wide = input_geometry(100, 10_000, 512)
    assert wide.width == MAX_ASPECT_RATIO * 512
    assert wide.height == 20  # 100 × 2048 / 10 000 = 20.48, to a multiple of 4
    tall = input_geometry(10_000, 100, 512)
    assert (tall.height, tall.width) == (512, 4)  # the thin side never drops below the stride
    assert (tall.padded_height, tall.padded_width) == (512, 64)


def test_geometry_rejects_empty_images_and_bad_settings() -> None:
    with pytest.raises(InputError):
        input_geometry(0, 10, 512)
    with pytest.raises(UsageError):
        input_geometry(10, 10, 2)
    with pytest.raises(UsageError):
        input_geometry(10, 10, 512, pad_multiple=30)
    with pytest.raises(UsageError):
        input_geometry(10, 10, 512).grid_shape(3)


@pytest.mark.parametrize(
    ("height", "width", "resized", "padded"),
    [
        (480, 640, (288, 384), (320, 384)),  # landscape 640×480 → 384×288, padded to 384×320
        (640, 480, (384, 288), (384, 320)),  # portrait
        (384, 384, (384, 384), (384, 384)),  # square, no resizing
        (100, 10_000, (4, 384), (64, 384)),  # panorama: no aspect cap, thin side ≥ the stride
    ],
)
def test_long_side_geometry_fits_the_longer_side(
    height: int, width: int, resized: tuple[int, int], padded: tuple[int, int]
) -> None:
    geometry = long_side_geometry(height, width, 384, pad_multiple=64)
    assert (geometry.height, geometry.width) == resized
    assert (geometry.padded_height, geometry.padded_width) == padded
    half = long_side_geometry(height, width, 0.5 * 384)
    assert max(half.height, half.width) == 192


def test_long_side_geometry_rejects_empty_images_and_bad_settings() -> None:
    with pytest.raises(InputError):
        long_side_geometry(10, 0, 384)
    with pytest.raises(UsageError, match="long side"):
        long_side_geometry(10, 10, 3)
    with pytest.raises(UsageError):
        long_side_geometry(10, 10, 384, pad_multiple=30)


def test_padding_is_right_and_bottom_with_the_pad_value() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 500, 3), dtype=np.uint8)
    geometry = input_geometry(300, 500, 256)
    resized = resize_image(image, geometry)
    assert resized.shape == (256, 428, 3)  # 500 × 256/300 = 426.7 → 428
    padded = pad_image(resized[None], geometry, pad_value=128)[0]
    assert padded.shape == (256, 448, 3)
    np.testing.assert_array_equal(padded[:256, :428], resized)
    assert (padded[:, 428:] == 128).all()
    tall = input_geometry(500, 300, 200)
    padded = pad_image(resize_image(image.transpose(1, 0, 2), tall)[None], tall, pad_value=7)[0]
    assert padded.shape == (256, 128, 3)
    assert (padded[tall.height :] == 7).all() and (padded[:, tall.width :] == 7).all()
    assert (padded[: tall.height, : tall.width] != 7).any()


def test_resize_reaches_the_geometry_size() -> None:
    image = np.zeros((37, 53, 3), dtype=np.uint8)
    for scale in SCALES:
        geometry = input_geometry(37, 53, scale * BOX_SIZE)
        assert resize_image(image, geometry).shape == (geometry.height, geometry.width, 3)
    with pytest.raises(InputError):
        resize_image(image, input_geometry(38, 53, BOX_SIZE))


def test_normalise_honours_colour_order_scale_mean_and_std() -> None:
    image = np.empty((1, 2, 3, 3), dtype=np.uint8)
    image[...] = (10, 20, 30)  # RGB
    bgr = normalise(image, Preprocessing(colour_order="BGR", scale=1.0))
    assert bgr.shape == (1, 3, 2, 3) and bgr.dtype == np.float32
    assert bgr.flags.c_contiguous
    np.testing.assert_allclose(bgr[0, :, 0, 0], [30, 20, 10])
    rgb = normalise(
        image,
        Preprocessing(colour_order="RGB", scale=0.5, mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0)),
    )
    np.testing.assert_allclose(rgb[0, :, 1, 2], [(5 - 1) / 2, (10 - 2) / 4, (15 - 3) / 8])
    default = normalise(image, Preprocessing())  # the published network: BGR in [0, 1]
    np.testing.assert_allclose(default[0, :, 0, 0], np.array([30, 20, 10]) / 255, rtol=1e-6)
    with pytest.raises(UsageError):
        normalise(image, Preprocessing(colour_order="BRG"))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("height", "width"), IMAGE_SIZES)
def test_inverse_map_brings_a_point_back_to_its_pixel(
    height: int, width: int, scale: float
) -> None:
    """Render a blob, resize it as the network input, locate it on a grid, map it back."""
    assert_points_map_back(height, width, input_geometry(height, width, scale * BOX_SIZE))


@pytest.mark.parametrize(("height", "width"), [(480, 640), (640, 480)])
def test_inverse_map_of_the_long_side_geometry(height: int, width: int) -> None:
    assert_points_map_back(height, width, long_side_geometry(height, width, 384))


def assert_points_map_back(height: int, width: int, geometry: InputGeometry) -> None:
    """Blobs rendered, resized per ``geometry`` and located on its grids map back within 0.5 px."""
    smallest_factor = min(geometry.factor_x, geometry.factor_y)
    sigma = max(2.0, 2.0 / smallest_factor)  # at least 2 px in both images
    rng = np.random.default_rng(height * width)
    for _ in range(3):
        x, y = rng.uniform(0.4, 0.6, size=2) * (width - 1, height - 1)
        resized = resize_image(render_blob(height, width, x, y, sigma), geometry)
        u, v = centroid(resized)  # resized-image pixels
        for stride in (4, 2, 1):
            grid_point = (np.array([u, v]) - (stride - 1) / 2) / stride  # cell-centre convention
            back = geometry.grid_transform(stride).apply(grid_point)
            assert np.abs(back - (x, y)).max() < 0.5, (stride, back, (x, y))


def test_grid_transform_is_affine_and_invertible() -> None:
    transform = GridTransform.from_resize(4, factor_x=0.5, factor_y=0.25)
    # stride 4 on an image shrunk 2× horizontally: cell 0 covers original columns 0..7
    np.testing.assert_allclose(transform.apply([[0.0, 0.0]]), [[3.5, 7.5]])
    np.testing.assert_allclose(transform.apply([[1.0, 1.0]]), [[11.5, 23.5]])
    points = np.random.default_rng(1).uniform(-5, 50, size=(4, 6, 2))
    assert transform.apply(points).shape == (4, 6, 2)
    np.testing.assert_allclose(transform.inverse(transform.apply(points)), points)
