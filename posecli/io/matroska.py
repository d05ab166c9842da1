"""A minimal Matroska stream of raw RGB frames with timestamps, for ffmpeg's stdin.

A raw-video pipe carries no timestamps; this stream lets ffmpeg keep each frame's time, which
variable frame rates need (``posecli.io.sinks.VideoSink`` writes it). Nothing here runs a process.
"""

from __future__ import annotations


def _ebml(element_id: bytes, payload: bytes) -> bytes:
    return element_id + _ebml_size(len(payload)) + payload


def _ebml_size(size: int) -> bytes:
    for length in range(1, 9):
        if size < (1 << (7 * length)) - 1:
            return (size | (1 << (7 * length))).to_bytes(length, "big")
    raise ValueError(f"EBML element too large: {size} bytes")


def _ebml_uint(element_id: bytes, value: int) -> bytes:
    return _ebml(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


class MatroskaFrames:
    """Raw RGB frames with microsecond timestamps as a Matroska stream, for ffmpeg's stdin.

    A raw-video pipe carries no timestamps; this minimal Matroska (one ``V_UNCOMPRESSED`` track
    with colour space ``RGB\\x18``, i.e. rgb24, one cluster per frame, unknown-size segment) lets
    ffmpeg keep each frame's time, which variable frame rates need.
    """

    _UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"

    @staticmethod
    def header(width: int, height: int) -> bytes:
        ebml = _ebml(
            b"\x1a\x45\xdf\xa3",
            _ebml_uint(b"\x42\x86", 1) + _ebml_uint(b"\x42\xf7", 1)  # EBML (read) version
            + _ebml_uint(b"\x42\xf2", 4) + _ebml_uint(b"\x42\xf3", 8)  # max id / size length
            + _ebml(b"\x42\x82", b"matroska")
            + _ebml_uint(b"\x42\x87", 4) + _ebml_uint(b"\x42\x85", 2),  # DocType versions
        )  # fmt: skip
        info = _ebml(
            b"\x15\x49\xa9\x66",
            _ebml_uint(b"\x2a\xd7\xb1", 1000)  # TimestampScale: 1 µs
            + _ebml(b"\x4d\x80", b"posecli")
            + _ebml(b"\x57\x41", b"posecli"),
        )
        video = _ebml(
            b"\xe0",
            _ebml_uint(b"\xb0", width) + _ebml_uint(b"\xba", height)
            + _ebml(b"\x2e\xb5\x24", b"RGB\x18"),  # ColourSpace: packed rgb24
        )  # fmt: skip
        track = _ebml(
            b"\xae",
            _ebml_uint(b"\xd7", 1) + _ebml_uint(b"\x73\xc5", 1) + _ebml_uint(b"\x83", 1)
            + _ebml(b"\x86", b"V_UNCOMPRESSED") + video,
        )  # fmt: skip
        segment = b"\x18\x53\x80\x67" + MatroskaFrames._UNKNOWN_SIZE
        return ebml + segment + info + _ebml(b"\x16\x54\xae\x6b", track)

    @staticmethod
    def frame_header(time_us: int, frame_bytes: int) -> bytes:
        """Cluster (timestamp ``time_us``) and SimpleBlock headers; the pixels follow them."""
        block_size = 4 + frame_bytes  # track number, relative time (int16), flags
        simple_block = b"\xa3" + _ebml_size(block_size) + b"\x81\x00\x00\x80"
        cluster_body = _ebml_uint(b"\xe7", time_us) + simple_block
        return b"\x1f\x43\xb6\x75" + _ebml_size(len(cluster_body) + frame_bytes) + cluster_body
