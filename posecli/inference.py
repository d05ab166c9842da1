"""The model and inference settings of a run, checked as one record, and the Estimator they load.

:class:`InferenceOptions` is what every inference command (video, webcam, images, eval, batch)
is given; its checks name the command-line option a bad value came from, so that any front end
reports the flag to change. Library code: errors are ``PoseCliError`` subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from posecli.config import DecodeConfig, InferenceConfig
from posecli.errors import UsageError

if TYPE_CHECKING:
    from posecli.estimator import Estimator


@dataclass(frozen=True)
class InferenceOptions:
    """The model and the inference/decoding settings common to every inference command."""

    model: str = "default"
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        """UsageError for settings of the two records that do not go together (each record
        checks its own values)."""
        if self.inference.prn and self.decode.grouping != "prn":
            raise UsageError("--prn is used only with --grouping prn")


def load_estimator(options: InferenceOptions) -> Estimator:
    """Load the model (ModelNotFoundError / CheckpointError) and build the Estimator (which
    applies ``inference.backend`` and ``inference.threads``)."""
    from posecli.assemble import build_estimator
    from posecli.loader import load_model

    model = load_model(options.model, device=options.inference.device)
    return build_estimator(model, options.inference, options.decode)
