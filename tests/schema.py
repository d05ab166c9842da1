"""JSON schemas (a JSON-Schema subset) of the files posecli writes, and a validator for them.

Only the tests check outputs against these; ``posecli.pose`` holds the encoders they describe.
"""

from __future__ import annotations

from posecli.pose import OPENPOSE_VERSION
from posecli.spec import NUM_COCO_KEYPOINTS, NUM_KEYPOINTS


def _numbers(count: int) -> dict:
    return {"type": "array", "items": {"type": "number"}, "minItems": count, "maxItems": count}


_EMPTY = {"type": "array", "maxItems": 0}

#: One line of a ``.jsonl`` track file.
TRACK_LINE_SCHEMA: dict = {
    "type": "object",
    "required": ["frame", "time", "width", "height", "people"],
    "additionalProperties": False,
    "properties": {
        "frame": {"type": "integer", "minimum": 0},
        "time": {"type": "number"},
        "width": {"type": "integer", "minimum": 1},
        "height": {"type": "integer", "minimum": 1},
        "people": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "keypoints", "bbox", "score"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": ["integer", "null"], "minimum": 1},
                    "keypoints": {
                        "type": "array",
                        "items": _numbers(3),
                        "minItems": NUM_COCO_KEYPOINTS,
                        "maxItems": NUM_COCO_KEYPOINTS,
                    },
                    "bbox": _numbers(4),
                    "score": {"type": "number", "minimum": 0},
                },
            },
        },
    },
}

#: One entry of a COCO keypoint results file (the file is a list of these).
COCO_RESULT_SCHEMA: dict = {
    "type": "object",
    "required": ["image_id", "category_id", "keypoints", "score", "bbox"],
    "additionalProperties": False,
    "properties": {
        "image_id": {"type": "integer", "minimum": 0},
        "category_id": {"const": 1},
        "keypoints": _numbers(3 * NUM_COCO_KEYPOINTS),
        "score": {"type": "number", "minimum": 0},
        "bbox": _numbers(4),
        "file_name": {"type": "string"},
    },
}

#: One OpenPose ``*_keypoints.json`` file.
OPENPOSE_SCHEMA: dict = {
    "type": "object",
    "required": ["version", "people"],
    "properties": {
        "version": {"const": OPENPOSE_VERSION},
        "people": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["person_id", "pose_keypoints_2d"],
                "properties": {
                    "person_id": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                    "pose_keypoints_2d": _numbers(3 * NUM_KEYPOINTS),
                    **{
                        f"{part}_keypoints_{dim}": _EMPTY
                        for part in ("face", "hand_left", "hand_right")
                        for dim in ("2d", "3d")
                    },
                    "pose_keypoints_3d": _EMPTY,
                },
            },
        },
    },
}

_JSON_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate_json(instance: object, schema: dict, path: str = "$") -> None:
    """Check ``instance`` (parsed JSON) against ``schema``; raise ``ValueError`` naming the spot.

    Supports the JSON-Schema keywords used by the schemas above: ``type``, ``const``,
    ``properties``, ``required``, ``additionalProperties: false``, ``items``, ``minItems``,
    ``maxItems`` and ``minimum``.
    """
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_JSON_TYPES[name](instance) for name in names):
            raise ValueError(f"{path}: expected {' or '.join(names)}, got {instance!r:.60}")
    if "const" in schema and instance != schema["const"]:
        raise ValueError(f"{path}: expected {schema['const']!r}, got {instance!r:.60}")
    if "minimum" in schema and _JSON_TYPES["number"](instance) and instance < schema["minimum"]:
        raise ValueError(f"{path}: {instance} is below the minimum {schema['minimum']}")
    if isinstance(instance, dict):
        _validate_object(instance, schema, path)
    if isinstance(instance, list):
        _validate_array(instance, schema, path)


def _validate_object(instance: dict, schema: dict, path: str) -> None:
    properties = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in instance:
            raise ValueError(f"{path}: missing {name!r}")
    for name, value in instance.items():
        if name in properties:
            validate_json(value, properties[name], f"{path}.{name}")
        elif schema.get("additionalProperties", True) is False:
            raise ValueError(f"{path}: unexpected {name!r}")


def _validate_array(instance: list, schema: dict, path: str) -> None:
    if len(instance) < schema.get("minItems", 0):
        raise ValueError(f"{path}: {len(instance)} items, expected at least {schema['minItems']}")
    if "maxItems" in schema and len(instance) > schema["maxItems"]:
        raise ValueError(f"{path}: {len(instance)} items, expected at most {schema['maxItems']}")
    if "items" in schema:
        for i, item in enumerate(instance):
            validate_json(item, schema["items"], f"{path}[{i}]")


#: The first line of a ``posecli video/webcam --json`` track file: how the tracks were made.
TRACK_HEADER_SCHEMA: dict = {
    "type": "object",
    "required": ["header"],
    "additionalProperties": False,
    "properties": {
        "header": {
            "type": "object",
            "required": [
                "format",
                "version",
                "posecli",
                "command",
                "source",
                "fps",
                "model",
                "model_name",
                "options",
            ],
            "properties": {
                "format": {"type": "string"},
                "version": {"type": "integer", "minimum": 1},
                "command": {"type": "string"},
                "model": {"type": "string"},
                "options": {"type": "object"},
            },
        }
    },
}


def track_frames(text: str) -> list[dict]:
    """The frame records of a track file's ``text``, its header line checked and dropped."""
    import json

    header, *frames = (json.loads(line) for line in text.splitlines())
    validate_json(header, TRACK_HEADER_SCHEMA)
    return frames
