"""MoveNet MultiPose over the frames of a video, as one process: the baseline of issue 38.

The frames are decoded as ``posecli video`` decodes them (``posecli.io.sources.VideoSource``,
``--start``/``--end``), each is letterboxed to long side ``--long-side`` (a multiple of 32:
MultiPose's 384 scored best on COCO, ``../shared/teachers/README.md``) and run through
``../shared/teachers/movenet-multipose.onnx`` on onnxruntime with ``--threads`` intra-op threads
(0: onnxruntime's default, as posecli's ``--threads 0``) and onnxruntime's default session
settings, or with ``--no-spinning`` posecli's (``posecli.onnxfile``: idle pool threads sleep
instead of spinning, which on a busy machine saves MultiPose about 40 % of its CPU time, measured
here: 182 → 105 ms per frame); its people scored at least
``--min-score`` are written as JSON lines (``{"frame", "time", "people": [{"keypoints",
"score"}]}``, keypoints ``[x, y, score]`` in image pixels), so that it does the work a
``posecli video --no-video --json`` run does, network aside.

Time it as a whole process beside ``posecli video`` (``bench/pipeline_speed.py`` has it as a
column; e.g. ``/usr/bin/time -v``):

    .venv/bin/python bench/multipose_video.py ../shared/data/media/pedestrians_vtest.avi \\
        --end 20 --json /tmp/multipose.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posecli.io.files import write_atomically
from posecli.io.sources import VideoSource

TEACHER = Path(__file__).resolve().parents[1].parent / "shared/teachers/movenet-multipose.onnx"


class MultiPose:
    """MoveNet MultiPose: int32 ``(1, H, W, 3)`` RGB 0–255 in (H, W multiples of 32),
    ``(1, 6, 56)`` out: per person 17 × ``(y, x, score)`` normalised, a box, a score."""

    def __init__(self, path: Path, long_side: int, threads: int, spinning: bool = True) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.long_side = long_side

    def people(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """``((17, 3) [x, y, score] image pixels, person score)`` of an RGB uint8 ``(H, W, 3)``
        image, all six rows, letterboxed (top left) to the long side."""
        height, width = image.shape[:2]
        scale = self.long_side / max(height, width)
        size = round(width * scale), round(height * scale)
        canvas = np.zeros((-(-size[1] // 32) * 32, -(-size[0] // 32) * 32, 3), dtype=np.int32)
        canvas[: size[1], : size[0]] = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        rows = self.session.run(None, {self.input_name: canvas[None]})[0][0]  # (6, 56)
        factor = np.array(canvas.shape[1::-1], dtype=np.float64) / np.array(size) * (width, height)
        found = []
        for row in rows.astype(np.float64):
            yx = row[:51].reshape(17, 3)  # (17, 3) [y, x, score], normalised
            keypoints = np.column_stack([yx[:, 1::-1] * factor, yx[:, 2]])  # (17, 3) pixels
            found.append((keypoints, float(row[55])))
        return found


def run(args: argparse.Namespace) -> int:
    """Every frame through MultiPose into JSON lines; returns the frames done."""
    model = MultiPose(args.teacher, args.long_side, args.threads, args.spinning)
    lines: list[str] = []
    with VideoSource(str(args.video), start=args.start, end=args.end) as frames:
        for frame in frames:
            people: list[dict[str, Any]] = [
                {"keypoints": np.round(keypoints, 2).tolist(), "score": round(score, 4)}
                for keypoints, score in model.people(frame.image)
                if score >= args.min_score
            ]
            record = {"frame": frame.index, "time": round(frame.time, 6), "people": people}
            lines.append(json.dumps(record))
    if args.json is not None:
        write_atomically(args.json, ("\n".join(lines) + "\n").encode())
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--start", type=float, default=None, help="start at this time, s")
    parser.add_argument("--end", type=float, default=None, help="stop at this time, s")
    parser.add_argument("--long-side", type=int, default=384, help="multiple of 32")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: default)")
    parser.add_argument("--min-score", type=float, default=0.1, help="people scored lower dropped")
    parser.add_argument("--json", type=Path, help="JSON lines to write (default: none)")
    parser.add_argument("--teacher", type=Path, default=TEACHER)
    parser.add_argument("--spinning", action=argparse.BooleanOptionalAction, default=True,
                        help="idle onnxruntime threads spin (its default)")  # fmt: skip
    args = parser.parse_args()
    if args.long_side < 32 or args.long_side % 32:
        parser.error("--long-side must be a positive multiple of 32")
    if not args.teacher.is_file():
        raise SystemExit(f"{args.teacher} is missing (see ../shared/teachers/README.md)")
    print(f"{run(args)} frames through MoveNet MultiPose at long side {args.long_side}")


if __name__ == "__main__":
    main()
