"""The pixel size an image file states in its header, read before decoding it.

A small file can state a huge image (a 388 KB PNG of 20000 × 20000 pixels decodes to 1.2 GB),
so :func:`posecli.io.sources.load_image` compares what the header states with its pixel limit
before OpenCV allocates anything. PNG, JPEG, GIF, BMP and WebP are read here; for other formats
(TIFF, JPEG 2000…) :func:`stated_size` answers ``None`` and the decoded size is checked instead.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

#: JPEG start-of-frame markers (baseline, progressive, lossless…), which state the size;
#: 0xC4 (Huffman tables), 0xC8 (reserved) and 0xCC (arithmetic coding) are not frames.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _png(data: bytes) -> tuple[int, int] | None:
    """Width and height of the IHDR chunk, which follows the 8-byte signature."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _gif(data: bytes) -> tuple[int, int] | None:
    """The logical screen's width and height (little-endian) after ``GIF87a``/``GIF89a``."""
    return struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None


def _bmp(data: bytes) -> tuple[int, int] | None:
    """The DIB header's width and height (a negative height: stored top-down)."""
    if len(data) < 26:
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp(data: bytes) -> tuple[int, int] | None:
    """The canvas (VP8X), or the frame of a simple lossy (VP8) or lossless (VP8L) file."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width, height = (int.from_bytes(data[at : at + 3], "little") + 1 for at in (24, 27))
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    """The size of the first start-of-frame segment, walking the segments from the start."""
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # segments without a length
            at += 2
            continue
        at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    return None


#: File signatures and the reader of each format's header.
_READERS: tuple[tuple[tuple[bytes, ...], Callable[[bytes], tuple[int, int] | None]], ...] = (
    ((b"\x89PNG\r\n\x1a\n",), _png),
    ((b"\xff\xd8",), _jpeg),
    ((b"GIF87a", b"GIF89a"), _gif),
    ((b"BM",), _bmp),
)


def stated_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels that the image file ``data`` states, ``None`` for a format
    not read here or a header too short to tell."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    for signatures, reader in _READERS:
        if data.startswith(signatures):
            return reader(data)
    return None
