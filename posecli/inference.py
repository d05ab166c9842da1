"""The model and inference settings of a run, checked as one record, and the Estimator they load.

:class:`InferenceOptions` is what every inference command (video, webcam, images, eval, batch)
is given; its checks name the command-line option a bad value came from, so that any front end
reports the flag to change. Library code: errors are ``PoseCliError`` subclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from posecli.config import DecodeConfig, InferenceConfig
from posecli.errors import UsageError

if TYPE_CHECKING:
    from posecli.estimator import Estimator


#: Smallest ``long_side`` (other than 0, off), pixels.
MIN_INPUT_SIZE = 16


@dataclass(frozen=True)
class InferenceOptions:
    """The model and the inference/decoding settings common to every inference command."""

    model: str = "default"
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        """UsageError for settings no run can use (the CLI names the option)."""
        decode, inference = self.decode, self.inference
        if not 0 < decode.peak_threshold < math.inf:
            raise UsageError(f"--peak-threshold must be a number > 0, got {decode.peak_threshold}")
        numbers = {
            "--part-threshold": decode.part_threshold,
            "--min-part-score": decode.min_mean_part_score,
            "--min-score": decode.min_person_score,
        }
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise UsageError(f"{name} must be a number, got {value}")
        if 0 < inference.long_side < MIN_INPUT_SIZE:
            low = f"at least {MIN_INPUT_SIZE}"
            raise UsageError(f"--long-side must be 0 (off) or {low}, got {inference.long_side}")
        if inference.refiner and not inference.refine:
            raise UsageError("--refiner is used only with --refine")
        if inference.prn and decode.grouping != "prn":
            raise UsageError("--prn is used only with --grouping prn")


def load_estimator(options: InferenceOptions) -> Estimator:
    """Load the model (ModelNotFoundError / CheckpointError) and build the Estimator (which
    applies ``inference.backend`` and ``inference.threads``)."""
    from posecli.estimator import Estimator
    from posecli.weights import load_model

    model = load_model(options.model, device=options.inference.device)
    return Estimator(model, options.inference, options.decode)
