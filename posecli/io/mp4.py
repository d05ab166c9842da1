"""MP4 encoding with ffmpeg: H.264 (yuv420p, BT.709) from a Matroska stream, timescales, audio.

``posecli.io.sinks.VideoSink`` runs these commands: the encoder reads the
:class:`posecli.io.matroska.MatroskaFrames` stream of rgb24 frames on its stdin and keeps each
frame's timestamp; :func:`add_audio` then muxes the source's audio into a copy of the video.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

from posecli.io.ffmpeg import FfmpegProcess, ffmpeg_path

logger = logging.getLogger(__name__)

#: Audio codecs copied into MP4 as they are (widely playable there); others become AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})


def track_timescale(frame_rate: Fraction, timescale: int | None) -> int:
    """MP4 ticks per second: a multiple of ``timescale`` (or of the rate's numerator) ≥ 10000."""
    base = timescale or (frame_rate.numerator if frame_rate > 0 else 90000)
    return base * math.ceil(10000 / base)


def encoder_args(output: Path, timescale: int, *, crf: int, preset: str) -> list[str]:
    """ffmpeg arguments: Matroska rgb24 frames on stdin → libx264 yuv420p BT.709 MP4 ``output``
    (odd sizes padded by one black pixel, timestamps passed through at ``timescale``)."""
    return [
        "-loglevel", "error", "-f", "matroska", "-i", "pipe:0", "-map", "0:v:0",
        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2,scale=out_color_matrix=bt709:out_range=tv",
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-color_range", "tv", "-fps_mode", "passthrough",
        "-enc_time_base", f"1/{timescale}", "-video_track_timescale", str(timescale),
        "-movflags", "+faststart", "-f", "mp4", "-y", ffmpeg_path(output),
    ]  # fmt: skip


def add_audio(
    video: Path,
    audio_source: str,
    audio_codec: str,
    muxed: Path,
    *,
    start: float,
    duration: float,
    target: Path,
) -> bool:
    """Write ``video`` with the first audio stream of ``audio_source`` (from ``start`` s, for
    ``duration`` s) into ``muxed``: copied when ``audio_codec`` is in :data:`MP4_AUDIO_COPY`,
    else AAC. False (a warning naming ``target``, the final output) when ffmpeg fails."""
    copy = audio_codec in MP4_AUDIO_COPY
    audio = ["-c:a", "copy"] if copy else ["-c:a", "aac", "-b:a", "160k"]
    seek = ["-ss", f"{start:.6f}"] if start > 0 else []
    args = [
        "-nostdin", "-loglevel", "error", "-i", ffmpeg_path(video),
        *seek, "-t", f"{duration:.6f}", "-i", ffmpeg_path(audio_source),
        "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *audio,
        "-movflags", "+faststart", "-f", "mp4", "-y", ffmpeg_path(muxed),
    ]  # fmt: skip
    process = FfmpegProcess(args)
    if process.wait() != 0:
        logger.warning(
            "audio of %s could not be added (%s); %s has no sound",
            audio_source, process.error_message(), target,
        )  # fmt: skip
        return False
    return True
