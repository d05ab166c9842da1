"""``posecli batch``: many videos and images in one job, in this process or on a Ray cluster.

Each video goes through the ``video`` command's path (:func:`posecli.streams.track_stream`, the
same ``--start/--end/--every`` and outputs) into ``DIR/STEM.jsonl`` (``DIR/STEM.mp4`` with
``mp4``, ``DIR/STEM_openpose/`` with ``openpose``); the images go through the ``images``
command's path (:func:`posecli.images.detect_images`) into one COCO results file
``DIR/images.json`` and its listing ``DIR/images.images.json``, same ids and content. Without a
Ray address everything runs here, one model loaded once; with one, every video is a Ray task
(retried by Ray when its worker dies) and the images go in batches to pose actors that load the
model once each.

One job per ``DIR`` at a time (:func:`batch_lock`). Outputs are written into the hidden staging
folder ``DIR/.posecli-batch`` and renamed into ``DIR`` only when the input is done (tracks and
the image listing last), so a killed worker or an input that fails leaves nothing under a final
name; the job's end removes the staging folder. An input whose outputs all exist is skipped
(resume); images that failed before are run again. Every run writes ``DIR/batch_summary.json``
(atomically), also when interrupted: inputs done, failed with their errors, skipped, pending,
seconds. On a cluster, inputs and ``DIR`` must have the same paths on every node.

Modules, by job: :mod:`.plan` (inputs, outputs, resume), :mod:`.job` (lock, staging, summary
file), :mod:`.videos`, :mod:`.images`, :mod:`.cluster` (Ray), :mod:`.summary` (the account).
Library code: errors are ``PoseCliError`` subclasses, progress goes through a callback.
"""

from posecli.batch.cluster import Cluster
from posecli.batch.job import LOCK_NAME, SUMMARY_NAME, batch_lock, run_batch
from posecli.batch.plan import (
    STAGING_NAME,
    BatchOutputs,
    BatchPlan,
    ImageJob,
    VideoJob,
    VideoSettings,
    plan_batch,
    split_inputs,
    unique_stems,
)
from posecli.batch.summary import BatchProgress, BatchSummary, InputResult

__all__ = [
    "LOCK_NAME",
    "STAGING_NAME",
    "SUMMARY_NAME",
    "BatchOutputs",
    "BatchPlan",
    "BatchProgress",
    "BatchSummary",
    "Cluster",
    "ImageJob",
    "InputResult",
    "VideoJob",
    "VideoSettings",
    "batch_lock",
    "plan_batch",
    "run_batch",
    "split_inputs",
    "unique_stems",
]
