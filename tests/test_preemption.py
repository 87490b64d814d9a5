"""Preemption and faults lose no work: SIGTERM checkpoints the current batch and exits non-zero,
``ckpt_path: auto`` resumes from the newest readable checkpoint, and a checkpoint save that
fails part-way leaves the previous one intact."""

from __future__ import annotations

import builtins
import contextlib
import csv
import errno
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train as train_module
from tests.conftest import TINY_STAGE1, compose_config
from tests.signal_helpers import marker_of_rank
from train import train
from training.run import resume_checkpoint

REPO = Path(train_module.__file__).resolve().parent
#: 8 steps over 4 batches per epoch, validation every 2: a SIGTERM after step 5 is mid-epoch,
#: one step after the last validation checkpoint.
RUN = [*TINY_STAGE1, "logger=csv", "trainer.max_steps=8"]


def _losses(run_dir: Path, version: int = 0) -> dict[int, float]:
    rows = csv.DictReader((run_dir / "csv" / f"version_{version}" / "metrics.csv").read_text().splitlines())
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r["train/loss"]}


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_batch_exits_non_zero_and_resumes_exactly(tmp_path):
    run_dir = tmp_path / "run"
    _run_until_sigterm(run_dir, tmp_path, [], "training_batch", step=5, whole_group=False)
    preempted = torch.load(run_dir / "checkpoints" / "preempted.ckpt", weights_only=True)
    assert preempted["global_step"] == 5
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4

    train(compose_config(RUN, tmp_path / "straight"))
    train(compose_config(RUN, run_dir))  # ckpt_path: auto
    straight, interrupted, resumed = _losses(tmp_path / "straight"), _losses(run_dir), _losses(run_dir, version=1)
    assert sorted(interrupted) == [0, 1, 2, 3, 4] and sorted(resumed) == [5, 6, 7]
    for step, loss in {**interrupted, **resumed}.items():
        assert loss == pytest.approx(straight[step], rel=1e-5), step


def _checkpoint(path: Path, step: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step}, path)
    mtime = time.time() - age_s
    os.utime(path, (mtime, mtime))
    return path


def test_auto_resume_takes_the_newest_checkpoint_hpc_and_preempted_included(tmp_path):
    _checkpoint(tmp_path / "checkpoints" / "step0000004.ckpt", 4, age_s=60)
    _checkpoint(tmp_path / "checkpoints" / "last.ckpt", 4, age_s=60)
    hpc = _checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 5, age_s=30)  # SLURM's SIGUSR1
    assert resume_checkpoint("auto", str(tmp_path)) == str(hpc)
    preempted = _checkpoint(tmp_path / "checkpoints" / "preempted.ckpt", 6, age_s=0)
    assert resume_checkpoint("auto", str(tmp_path)) == str(preempted)
    assert resume_checkpoint("auto", str(tmp_path / "fresh")) is None
    assert resume_checkpoint("some/run.ckpt", str(tmp_path)) == "some/run.ckpt"


def test_auto_resume_skips_a_truncated_checkpoint_with_a_warning(tmp_path, caplog):
    step4 = _checkpoint(tmp_path / "checkpoints" / "step0000004.ckpt", 4, age_s=60)
    last = _checkpoint(tmp_path / "checkpoints" / "last.ckpt", 6, age_s=0)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # the disk filled up mid-save
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint("auto", str(tmp_path)) == str(step4)
    assert [r.message for r in caplog.records if "last.ckpt" in r.message and "unreadable" in r.message]
    step4.write_bytes(b"")
    with pytest.raises(RuntimeError, match="none of the checkpoints.*ckpt_path=null"):
        resume_checkpoint("auto", str(tmp_path))


@contextlib.contextmanager
def _disk_fills_up(directory: Path, free_bytes: int, monkeypatch):
    """From the first file opened for writing in ``directory``, writing there fails past
    ``free_bytes``; and the temp dir is on another filesystem, as on clusters (node-local /tmp,
    shared run storage): a rename from another directory fails with EXDEV, so a move copies."""
    real_open, real_rename = builtins.open, os.rename
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wxa") and Path(file).parent == directory:
            resource.setrlimit(resource.RLIMIT_FSIZE, (free_bytes, hard))
        return real_open(file, mode, *args, **kwargs)

    def rename(src, dst, *args, **kwargs):
        if Path(src).parent != Path(dst).parent:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
        return real_rename(src, dst, *args, **kwargs)

    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails, not the process
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "rename", rename)
    try:
        yield
    finally:
        monkeypatch.undo()
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_checkpoint(tiny_stage1_cfg, monkeypatch):
    _, trainer = train(tiny_stage1_cfg)
    checkpoints = Path(tiny_stage1_cfg.paths.output_dir) / "checkpoints"
    last = checkpoints / "last.ckpt"
    before = sorted(checkpoints.iterdir())
    with _disk_fills_up(checkpoints, last.stat().st_size // 2, monkeypatch), pytest.raises(OSError):
        trainer.save_checkpoint(last)
    assert torch.load(last, weights_only=True)["global_step"] == 4, "the previous last.ckpt is intact"
    assert sorted(checkpoints.iterdir()) == before, "no temporary file left behind"


def test_auto_resume_skips_a_checkpoint_whose_bytes_changed_on_disk(tmp_path, caplog):
    """A checkpoint with flipped bytes in its tensors still loads (torch reads the zip's records,
    not the data): the SHA-256 written beside it catches it, and the run resumes from another."""
    train(compose_config([*TINY_STAGE1, "trainer.max_steps=4", "trainer.val_check_interval=2"], tmp_path))
    newest = Path(resume_checkpoint("auto", str(tmp_path)))
    assert (newest.parent / f"{newest.name}.sha256").is_file()
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])  # inside the tensor data
    newest.write_bytes(bytes(data))
    torch.load(newest, weights_only=True)  # the damage does not show when loading
    with caplog.at_level(logging.WARNING):
        chosen = resume_checkpoint("auto", str(tmp_path))
    assert chosen != str(newest) and f"skipping corrupt checkpoint {newest}" in caplog.text


def _run_until_sigterm(run_dir: Path, tmp_path: Path, extra: list[str], at: str, step: int,
                       whole_group: bool, ranks: int = 1) -> str:
    """``python train.py`` with a callback (tests.signal_helpers.WaitForSigterm) that holds every
    rank at ``at`` of step ``step`` until the test's SIGTERM, sent to the main process or to the
    whole process group as schedulers do, has reached it; the run must exit 143."""
    marker = tmp_path / f"{run_dir.name}-waiting"
    waiter = "+callbacks.wait_for_sigterm"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *RUN, *extra, f"hydra.run.dir={run_dir}",
         f"paths.cache_dir={tmp_path / 'cache'}", f"{waiter}._target_=tests.signal_helpers.WaitForSigterm",
         f"{waiter}.step={step}", f"{waiter}.marker={marker}", f"{waiter}.at={at}"],
        cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    waiting = [marker_of_rank(marker, rank) for rank in range(ranks)]
    while not all(m.exists() for m in waiting) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if whole_group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    return output


@pytest.mark.slow
@pytest.mark.parametrize("at, step", [("training_batch", 5), ("validation", 2)])
def test_sigterm_to_the_process_group_with_loader_workers_checkpoints_and_resumes_exactly(tmp_path, at, step):
    """scancel and preemptions signal every process of the job, DataLoader workers included (which
    used to die first and take the run down with "worker killed by signal", no checkpoint); a
    SIGTERM during a validation lets it finish (its metrics and checkpoint are written) and stops
    at the next batch boundary. Either way the resumed run matches an uninterrupted one."""
    extra = ["data.num_workers=2"]
    run_dir = tmp_path / "run"
    _run_until_sigterm(run_dir, tmp_path, extra, at, step, whole_group=True)
    assert torch.load(run_dir / "checkpoints" / "preempted.ckpt", weights_only=True)["global_step"] == step
    if at == "validation":
        assert (run_dir / "checkpoints" / f"step{step:07d}.ckpt").is_file(), "the validation it interrupted finished"
    train(compose_config([*RUN, *extra], tmp_path / "straight"))
    train(compose_config([*RUN, *extra], run_dir))  # ckpt_path: auto
    _assert_resumed_like_straight(run_dir, tmp_path / "straight")


def _assert_resumed_like_straight(run_dir: Path, straight_dir: Path) -> None:
    """The interrupted and the resumed run together logged every step's loss and every validation
    once, with an uninterrupted run's values."""
    straight, interrupted, resumed = _losses(straight_dir), _losses(run_dir), _losses(run_dir, version=1)
    assert sorted({**interrupted, **resumed}) == list(range(8))
    for step, loss in {**interrupted, **resumed}.items():
        assert loss == pytest.approx(straight[step], rel=1e-5), step
    validations = lambda run, version=0: [  # noqa: E731
        (int(r["step"]), float(r["val/psnr"])) for r in csv.DictReader(
            (run / "csv" / f"version_{version}" / "metrics.csv").read_text().splitlines()) if r.get("val/psnr")]
    resumed_validations, straight_validations = validations(run_dir) + validations(run_dir, 1), validations(straight_dir)
    assert [step for step, _ in resumed_validations] == [step for step, _ in straight_validations], "each one once"
    assert [v for _, v in resumed_validations] == pytest.approx([v for _, v in straight_validations], rel=1e-5)


@pytest.mark.slow
def test_sigterm_to_a_ddp_jobs_process_group_stops_every_rank_at_one_batch_and_resumes_exactly(tmp_path):
    """Two DDP ranks with a loader worker each, the whole group signalled during a batch (scancel,
    a preemption). Lightning's own handler broadcasts from inside the signal handler on every rank
    (collectives that do not match) and rank 0 re-sends the signal to rank 1; here the ranks agree
    at the batch's end, checkpoint together and exit 143, and the resumed job matches an
    uninterrupted one."""
    extra = ["trainer=ddp_cpu", "data.num_workers=1"]
    run_dir, straight_dir = tmp_path / "run", tmp_path / "straight"
    output = _run_until_sigterm(run_dir, tmp_path, extra, "training_batch", step=3, whole_group=True, ranks=2)
    assert torch.load(run_dir / "checkpoints" / "preempted.ckpt", weights_only=True)["global_step"] == 3, output[-3000:]
    for directory in (straight_dir, run_dir):  # the second resumes (ckpt_path: auto)
        result = subprocess.run([sys.executable, str(REPO / "train.py"), *RUN, *extra, f"hydra.run.dir={directory}",
                                 f"paths.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    _assert_resumed_like_straight(run_dir, straight_dir)


@pytest.mark.slow
def test_sigterm_during_the_validation_before_training_writes_it_and_the_rerun_trains_as_a_fresh_one(tmp_path):
    extra = ["validate_before_training=true"]
    run_dir = tmp_path / "run"
    _run_until_sigterm(run_dir, tmp_path, extra, "validation", step=0, whole_group=True)
    assert (run_dir / "initial_metrics.json").is_file() and not (run_dir / "checkpoints").exists()
    train(compose_config([*RUN, *extra], tmp_path / "straight"))
    train(compose_config([*RUN, *extra], run_dir))
    assert _losses(run_dir, version=1) == pytest.approx(_losses(tmp_path / "straight"), rel=1e-5)
