"""Models known by name: the files of the repository's ``weights/`` folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from posecli.errors import ModelNotFoundError

#: Folder of the registered model files: ``weights/`` at the repository root, package data
#: of posecli as ``posecli/_weights`` (a link to it in the repository, a folder once installed).
WEIGHTS_DIR = Path(__file__).resolve().parent / "_weights"

#: Name of the bundled default model.
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class RegisteredModel:
    """A model known by name: ``filename`` inside ``WEIGHTS_DIR``."""

    name: str
    filename: str
    description: str


#: Models known by name. Their files live in ``weights/`` (see weights/README.md).
REGISTERED_MODELS: tuple[RegisteredModel, ...] = (
    RegisteredModel(DEFAULT_MODEL, "posecli-default.pt", "bundled default model"),
    RegisteredModel(
        "refiner", "posecli-refiner.pt", "bundled top-down refiner (--refine, weights/README.md)"
    ),
    RegisteredModel(
        "refiner-int8",
        "posecli-refiner-int8.onnx",
        "the bundled refiner in int8 for onnxruntime (video, webcam; --refine-int8)",
    ),
    RegisteredModel(
        "prn", "posecli-prn.pt", "bundled Pose Residual Network (--grouping prn, weights/README.md)"
    ),
    RegisteredModel(
        "simplepose-official",
        "PoseNet_52_epoch.pth",
        "published Simple Pose checkpoint (4-stack IMHN); download it into weights/ yourself",
    ),
)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model and whether its file is present (for ``posecli info``)."""

    name: str
    path: Path
    present: bool
    description: str


def list_models() -> list[ModelEntry]:
    """Registered models, with whether their file is present in ``WEIGHTS_DIR``."""
    entries = []
    for model in REGISTERED_MODELS:
        path = WEIGHTS_DIR / model.filename
        entries.append(ModelEntry(model.name, path, path.is_file(), model.description))
    return entries


def locate(name_or_path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The file of a registered name or an existing path, and the model's name."""
    registered = {model.name: model for model in REGISTERED_MODELS}
    text = os.fspath(name_or_path)
    if text in registered:
        model = registered[text]
        path = WEIGHTS_DIR / model.filename
        if path.is_file():
            return path, model.name
        if model.name == DEFAULT_MODEL:
            raise ModelNotFoundError(
                f"no trained default weights are bundled yet ({path} is missing); "
                "pass a checkpoint file with --model PATH"
            )
        raise ModelNotFoundError(
            f"model {text!r} is registered but {path} is missing: {model.description}"
        )
    path = Path(text).expanduser()
    if path.is_file():
        return path, path.stem
    if path.exists():
        raise ModelNotFoundError(f"{path} is not a checkpoint file")
    raise ModelNotFoundError(
        f"unknown model {text!r}: not a registered name ({', '.join(registered)}) and no such file"
    )
