"""A small random IMHN saved as a posecli checkpoint: a real model file for CLI and example tests.

Its heatmaps are noise, so it finds few or no people; tests that need people use stand-ins.
"""

from __future__ import annotations

from pathlib import Path

import torch

from posecli.checkpoint import save_checkpoint
from posecli.config import ModelConfig, Preprocessing
from posecli.model import build_network

#: The test network of the brief: one stack, 32 channels (+16 per level), 32-channel heads.
TINY_CONFIG = ModelConfig(stacks=1, width=32, increase=16, head_width=32)


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write a randomly initialised :data:`TINY_CONFIG` network to ``path``; return ``path``."""
    torch.manual_seed(seed)
    network = build_network(TINY_CONFIG)
    return save_checkpoint(path, network, TINY_CONFIG, Preprocessing(), {"source": "random test"})
