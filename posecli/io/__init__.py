"""Input and output: video/image/camera sources, video and JSON sinks, skeleton drawing.

This package never imports the network (``posecli.model``) or the decoder (``posecli.decode``).
"""

from posecli.io.cameras import CameraSource
from posecli.io.draw import draw_fps, draw_poses
from posecli.io.ffmpeg import VideoInfo, probe_video
from posecli.io.sinks import (
    CocoResultsSink,
    ImageDirectorySink,
    JsonLinesSink,
    OpenPoseSink,
    Sink,
    VideoSink,
)
from posecli.io.sources import (
    ImageSource,
    SourceFrame,
    VideoSource,
    expand_image_inputs,
    image_ids,
    load_image,
)

__all__ = [
    "CameraSource",
    "CocoResultsSink",
    "ImageDirectorySink",
    "ImageSource",
    "JsonLinesSink",
    "OpenPoseSink",
    "Sink",
    "SourceFrame",
    "VideoInfo",
    "VideoSink",
    "VideoSource",
    "draw_fps",
    "draw_poses",
    "expand_image_inputs",
    "image_ids",
    "load_image",
    "probe_video",
]
