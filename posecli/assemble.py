"""Assembling an Estimator from loaded stages: the one place inference loads a refiner or a
PRN by name and makes the runners (which, on onnxruntime, may export a ``.pt`` model to the
ONNX cache).

``build_estimator(model, config, decode_config, refiner=None, prn=None)``: the bottom-up
``model`` on the backend ``config`` asks for; with ``config.refine`` the refinement stage with
``refiner``, or else the refiner ``config.refiner`` names (default: the bundled ``refiner``, or
``refiner-int8`` with ``config.refine_int8`` where the network runs on onnxruntime); with
``decode_config.grouping == "prn"`` the grouping stage with ``prn``, or else the PRN
``config.prn`` names (default: the bundled ``prn``).
"""

from __future__ import annotations

from posecli.backends import ONNXRUNTIME, NetworkStage, network_stage
from posecli.config import DecodeConfig, InferenceConfig
from posecli.estimator import Estimator
from posecli.group import PRNGrouping
from posecli.loader import load_prn, load_refiner
from posecli.networks import PoseModel, PRNModel, RefinerModel
from posecli.refine import Refinement

#: The registered names of the bundled refiner, float and int8 (``posecli.registry``).
BUNDLED_REFINER, BUNDLED_REFINER_INT8 = "refiner", "refiner-int8"

#: The registered name of the bundled PRN.
BUNDLED_PRN = "prn"


def build_estimator(
    model: PoseModel,
    config: InferenceConfig = InferenceConfig(),  # noqa: B008 (frozen record)
    decode_config: DecodeConfig = DecodeConfig(),  # noqa: B008 (frozen record)
    refiner: RefinerModel | None = None,
    prn: PRNModel | None = None,
) -> Estimator:
    """The Estimator of ``model`` with the stages the configs ask for (module docstring).

    Raises:
        UsageError: invalid settings (an unknown backend, torch for an ONNX file...).
        MissingDependencyError: onnxruntime asked for by name but not installed.
        ModelNotFoundError, CheckpointError: a refiner or PRN that cannot be loaded.
    """
    network = network_stage(model, config)
    refinement = _refinement(network, config, refiner) if config.refine else None
    grouping = None
    if decode_config.grouping == "prn":
        prn = prn or load_prn(config.prn or BUNDLED_PRN, device=str(network.device))
        grouping = PRNGrouping(prn, decode_config, network.device)
    return Estimator(network, config, decode_config, refinement, grouping)


def _refinement(
    network: NetworkStage, config: InferenceConfig, refiner: RefinerModel | None
) -> Refinement:
    """The refinement stage beside ``network``: ``refiner``, or the one ``config`` names."""
    if refiner is None:
        int8 = config.refine_int8 and network.backend == ONNXRUNTIME
        bundled = BUNDLED_REFINER_INT8 if int8 else BUNDLED_REFINER
        refiner = load_refiner(config.refiner or bundled, device=str(network.device))
    return Refinement(refiner, config, network.device, network.dtype, network.backend)
