"""Trainer: exact resume, schedules, metrics and progress, validation, init, 2-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from coco_synthetic import write_people_set

from posecli.config import ModelConfig, TrainConfig
from posecli.errors import OutputError, ResumableInterruptError, UsageError
from posecli.loader import load_model
from posecli.train.optim import lr_factor
from posecli.train.tasks import TASKS, autocast_dtype
from posecli.train.trainer import train

TINY = ModelConfig(stacks=1, width=32, increase=16, head_width=32)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared machine, spinning OpenMP threads slow tiny models 7×."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def people_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_people_set(tmp_path_factory.mktemp("coco"), count=4)


def _config(people_set: tuple[Path, Path], out: Path, **changes) -> TrainConfig:
    annotations, images = people_set
    config = TrainConfig(
        annotations=str(annotations), images=str(images), out=str(out), model=TINY,
        input_size=64, batch_size=2, workers=0, epochs=3, log_every_steps=1, device="cpu",
        optimizer="sgd", lr=1e-3, warmup_steps=2,
    )  # fmt: skip
    return replace(config, **changes)


def _records(run: Path, event: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == event]


def test_resume_gives_the_same_next_steps(people_set, tmp_path: Path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_config(people_set, straight, max_steps=3))
    train(_config(people_set, resumed, max_steps=1))  # stops mid-epoch 0 (2 steps per epoch)
    train(_config(people_set, resumed, max_steps=3, resume=True))  # crosses into epoch 1
    expected = {r["step"]: r["loss"] for r in _records(straight, "step")}
    found = {r["step"]: r["loss"] for r in _records(resumed, "step")}
    assert sorted(found) == [1, 2, 3]
    assert found == expected  # identical losses, bit for bit
    first, second = (
        load_model(straight / "checkpoint-last.pt"),
        load_model(resumed / "checkpoint-last.pt"),
    )
    assert first.provenance["step"] == second.provenance["step"] == 3
    for (name, a), b in zip(
        first.network.state_dict().items(), second.network.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    states = [torch.load(run / "train-state.pt", weights_only=True) for run in (straight, resumed)]
    assert states[0]["scheduler"] == states[1]["scheduler"]
    assert (
        (states[0]["epoch"], states[0]["batch"])
        == (states[1]["epoch"], states[1]["batch"])
        == (1, 1)
    )
    momentum = [s["optimizer"]["state"][0]["momentum_buffer"] for s in states]
    assert torch.equal(*momentum)


def test_ctrl_c_saves_the_step_it_finished_and_resume_continues_exactly(people_set, tmp_path: Path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(_config(people_set, straight, max_steps=4))

    def press_ctrl_c(record: dict) -> None:
        if record["event"] == "batch" and record["step"] == 2:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(ResumableInterruptError, match="step 2 of 4.*--resume"):
        train(_config(people_set, interrupted, max_steps=4), press_ctrl_c)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    state = torch.load(interrupted / "train-state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["batch"]) == (2, 1, 0)
    train(_config(people_set, interrupted, max_steps=4, resume=True))
    expected = {r["step"]: r["loss"] for r in _records(straight, "step")}
    assert {r["step"]: r["loss"] for r in _records(interrupted, "step")} == expected


def test_ctrl_c_in_the_terminal_stops_a_run_with_a_data_worker_resumably(
    people_set, tmp_path: Path
):
    """SIGINT to the whole process group, as a terminal sends it: the worker ignores it."""
    annotations, images = people_set
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "posecli", "train", "--annotations", str(annotations),
        "--images", str(images), "--preset", "imhn-tiny", "--input-size", "64",
        "--batch-size", "2", "--epochs", "1000", "--workers", "1", "--device", "cpu",
        "--threads", "1", "--quiet", "--out", str(run),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not _has_steps(run) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "continue with --resume" in stderr
    state = torch.load(run / "train-state.pt", weights_only=True)
    assert state["step"] >= 1
    assert load_model(run / "checkpoint-last.pt").provenance["step"] == state["step"]


def _has_steps(run: Path) -> bool:
    metrics = run / "metrics.jsonl"
    return metrics.is_file() and '"event": "step"' in metrics.read_text()


def test_a_run_directory_is_not_overwritten(people_set, tmp_path: Path):
    train(_config(people_set, tmp_path / "run", max_steps=1))
    with pytest.raises(OutputError, match="already holds a training run"):
        train(_config(people_set, tmp_path / "run", max_steps=1))


def test_metrics_progress_config_and_validation(people_set, tmp_path: Path):
    annotations, images = people_set
    run = tmp_path / "run"
    events: list[dict] = []
    # one loader worker: validation runs OpenCV in the trainer between two epochs of loading
    config = _config(
        people_set, run, epochs=2, val_annotations=str(annotations), val_images=str(images),
        val_box_size=64, optimizer="adamw", workers=1,
    )  # fmt: skip
    last = train(config, progress=events.append)
    assert last == run / "checkpoint-last.pt" and last.is_file()
    kinds = [event["event"] for event in events]
    assert kinds == ["start"] + ["batch", "step", "batch", "step", "epoch", "val"] * 2
    assert events[0]["total_steps"] == 4 and events[0]["world_size"] == 1
    assert [r["step"] for r in _records(run, "step")] == [1, 2, 3, 4]
    vals = _records(run, "val")
    assert [v["epoch"] for v in vals] == [0, 1]
    assert all(set(v) >= {"AP", "AP50", "AP75", "APM", "APL", "AR"} for v in vals)
    assert (run / "checkpoint-best.pt").is_file()
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == config
    model = load_model(last)
    assert model.config == TINY and model.provenance["trained_by"] == "posecli train"


def test_init_from_a_checkpoint_and_unknown_presets(people_set, tmp_path: Path):
    source = train(_config(people_set, tmp_path / "source", max_steps=1))
    start = load_model(source).network.state_dict()
    # init wins over the model shape: a bigger `model` is ignored
    bigger = ModelConfig(stacks=1, width=64, increase=16, head_width=32)
    follow = train(
        _config(
            people_set,
            tmp_path / "follow",
            max_steps=1,
            init=str(source),
            model=bigger,
            lr=0.0,
            weight_decay=0.0,
        )
    )
    assert load_model(follow).config == TINY
    after = load_model(follow).network.state_dict()
    weights = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(start[k], after[k]) for k in weights)  # lr 0: weights unchanged
    with pytest.raises(UsageError, match="unknown preset"):
        train(_config(people_set, tmp_path / "other", model=None, preset="no-such-preset"))
    with pytest.raises(UsageError, match="BatchNorm"):  # 1 image of 64²: 1×1 at stride 64
        train(_config(people_set, tmp_path / "other", batch_size=1))


def test_cpu_mixed_precision_is_bf16_where_native_and_stays_close_to_fp32(
    people_set, tmp_path: Path
):
    native = torch.cpu._is_avx512_bf16_supported()
    imhn, refiner = TASKS["imhn"], TASKS["refiner"]
    assert autocast_dtype(True, torch.device("cpu"), imhn) == (torch.bfloat16 if native else None)
    assert autocast_dtype(False, torch.device("cpu"), imhn) is None
    assert autocast_dtype(True, torch.device("cpu"), refiner) is None
    assert autocast_dtype(True, torch.device("cuda"), refiner) == torch.float16
    losses = {}
    for amp in (True, False):
        run = train(_config(people_set, tmp_path / f"amp-{amp}", max_steps=2, amp=amp)).parent
        losses[amp] = [record["loss"] for record in _records(run, "step")]
    assert losses[True] == pytest.approx(losses[False], rel=0.05)
    if native:
        assert losses[True] != losses[False]  # the forward pass really ran in bf16
    else:
        assert losses[True] == losses[False]  # amp is ignored where bf16 would be emulated


def test_learning_rate_schedules():
    config = TrainConfig(
        annotations="a",
        images="b",
        epochs=4,
        warmup_steps=10,
        warmup_start_fraction=0.1,
        min_lr_fraction=0.0,
    )
    steps_per_epoch = 10  # 40 steps: 10 warm-up, 30 cosine
    assert lr_factor(0, config, steps_per_epoch) == pytest.approx(0.1)
    assert lr_factor(5, config, steps_per_epoch) == pytest.approx(0.55)
    assert lr_factor(10, config, steps_per_epoch) == pytest.approx(1.0)
    assert lr_factor(25, config, steps_per_epoch) == pytest.approx(0.5)
    assert lr_factor(40, config, steps_per_epoch) == pytest.approx(0.0)
    stepped = replace(config, schedule="step", warmup_steps=0, lr_milestones=(1, 3), lr_gamma=0.1)
    factors = [lr_factor(step, stepped, steps_per_epoch) for step in (0, 9, 10, 29, 30)]
    assert factors == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_two_process_gloo_run_does_two_steps(people_set, tmp_path: Path):
    annotations, images = people_set
    run = tmp_path / "ddp"
    script = tmp_path / "ddp_train.py"
    script.write_text(
        "import sys\n"
        "from posecli.config import ModelConfig, TrainConfig\n"
        "from posecli.train.trainer import train\n"
        "annotations, images, out = sys.argv[1:4]\n"
        f"model = ModelConfig(**{TINY.to_dict()!r})\n"
        "train(TrainConfig(annotations=annotations, images=images, out=out, model=model,\n"
        "                  input_size=64, batch_size=2, workers=0, epochs=2, max_steps=2,\n"
        "                  log_every_steps=1, device='cpu'))\n"
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), str(annotations), str(images), str(run),
    ]  # fmt: skip
    environment = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    finished = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=180
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert [r["step"] for r in _records(run, "step")] == [1, 2]  # rank 0 alone writes
    assert len(_records(run, "epoch")) == 2  # 4 images, 2 processes, 2 per batch: 1 step each
    model = load_model(run / "checkpoint-last.pt")
    assert model.provenance["world_size"] == 2 and model.provenance["step"] == 2
