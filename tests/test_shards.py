"""Prepared shards: a preparation that survives bad files and interruptions and loses no pixel,
crops that are the image-folder loader's crops, training from shards, exact mid-epoch resume,
and DDP ranks that read disjoint samples."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from litdata import StreamingDataset
from omegaconf import open_dict
from PIL import Image

import train as train_module
from datamodules import shards
from datamodules.images import RandomCrop
from datamodules.shards import prepare_shards, random_crop
from datamodules.tiles import TiledImage, encode_tiles
from tests.conftest import TINY_STAGE1, compose_config
from train import train
from training.config import instantiate_node
from osdic.checks import ConfigError

GOOD = 8
SETTINGS = dict(tile=32, images_per_part=3, chunk_bytes="40KB", workers=1)


def _labelled_photo(label: int, height: int, width: int) -> np.ndarray:
    """Noise whose red channel is constant: any crop of it, even resampled, tells its label."""
    pixels = np.random.default_rng(label).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[..., 0] = 16 * (label + 1)
    return pixels


def labels(batch: torch.Tensor) -> list[int]:
    return [round(float(red) * 255) // 16 - 1 for red in batch[:, 0, 0, 0]]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for label in range(GOOD):
        Image.fromarray(_labelled_photo(label, 90 + 7 * label, 140 - 5 * label)).save(root / f"photo{label}.png")
    Image.fromarray(np.full((100, 100), 16 * (GOOD + 1), np.uint8), "L").save(root / "grey.png")
    good = (root / "photo0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image")
    return root


SKIPPED = {"truncated.png", "empty.png", "notes.jpg"}


@pytest.fixture(scope="module")
def prepared(photos, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("prepared") / "shards"
    with pytest.warns(RuntimeWarning) as caught:
        report = prepare_shards([photos], output, **SETTINGS)
    return output, {"report": report, "warnings": [str(w.message) for w in caught]}


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("val")
    Image.fromarray(_labelled_photo(0, 64, 64)).save(root / "val.png")
    return root


def test_preparation_keeps_every_decodable_pixel_and_lists_bad_files(photos, prepared):
    output, prep = prepared
    report = prep["report"]
    assert report["images"] == GOOD + 1  # the greyscale photo is converted, not dropped
    assert {Path(f).name for f, _ in report["skipped"]} == SKIPPED
    assert [Path(f).name for f, _ in report["converted"]] == ["grey.png"]
    for name in SKIPPED | {"grey.png"}:
        assert sum(name in message for message in prep["warnings"]) == 1, (name, prep["warnings"])
    assert json.loads((output / shards.REPORT).read_text()) == report
    stored = {}
    for record in StreamingDataset(str(output)):
        image = TiledImage(record)
        pixels = image.region(0, 0, image.width, image.height)
        stored[int(pixels[0, 0, 0]) // 16 - 1] = pixels
    assert sorted(stored) == list(range(GOOD + 1))
    for label in range(GOOD):
        assert np.array_equal(stored[label], np.asarray(Image.open(photos / f"photo{label}.png"))), label


def test_interrupted_preparation_continues_where_it_stopped(photos, prepared, tmp_path, monkeypatch):
    output = tmp_path / "shards"
    real_part, prepared_parts = shards._prepare_part, []

    def interrupted_at_third_part(task):
        if len(prepared_parts) == 2:
            (output / f"chunk-{task[0]}-0.bin").write_bytes(b"half a chunk")
            raise KeyboardInterrupt
        prepared_parts.append(task[0])
        return real_part(task)

    monkeypatch.setattr(shards, "_prepare_part", interrupted_at_third_part)
    warnings.simplefilter("ignore", RuntimeWarning)  # the bad files: the test above counts them
    with pytest.raises(KeyboardInterrupt):
        prepare_shards([photos], output, **SETTINGS)
    assert not (output / "index.json").exists()
    with pytest.raises(ValueError, match="tile"):
        prepare_shards([photos], output, **{**SETTINGS, "tile": 64})

    monkeypatch.setattr(shards, "_prepare_part", lambda task: prepared_parts.append(task[0]) or real_part(task))
    report = prepare_shards([photos], output, **SETTINGS)
    total_parts = -(-(GOOD + 1 + len(SKIPPED)) // SETTINGS["images_per_part"])
    assert sorted(prepared_parts) == list(range(total_parts)), "each part prepared exactly once"
    one_go = prepared[0]
    assert report == prepared[1]["report"]
    assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in one_go.iterdir())
    for chunk in one_go.glob("chunk-*.bin"):
        assert (output / chunk.name).read_bytes() == chunk.read_bytes(), chunk.name


def test_a_part_record_cut_short_is_no_record_and_the_part_is_prepared_again(photos, prepared, tmp_path, monkeypatch):
    output, real_replace = tmp_path / "shards", os.replace

    def killed_while_recording_part_1(source, target):
        if Path(target).name == "1.json":
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_while_recording_part_1)
    warnings.simplefilter("ignore", RuntimeWarning)  # the bad files: the first test counts them
    with pytest.raises(KeyboardInterrupt):
        prepare_shards([photos], output, **SETTINGS)
    assert sorted(p.name for p in (output / shards._PARTS).iterdir()) == ["0.json", "settings.json"], \
        "part 1 has no record, whole or partial, and nothing else there looks like one"
    monkeypatch.setattr(os, "replace", real_replace)
    assert prepare_shards([photos], output, **SETTINGS) == prepared[1]["report"]


@pytest.mark.slow
def test_parallel_preparation_writes_the_same_shards(photos, prepared, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = prepare_shards([photos], tmp_path / "shards", **{**SETTINGS, "workers": 2})
    assert report == prepared[1]["report"]
    assert sorted(str(w.message) for w in caught if w.category is RuntimeWarning) == sorted(prepared[1]["warnings"])
    for chunk in prepared[0].glob("chunk-*.bin"):
        assert (tmp_path / "shards" / chunk.name).read_bytes() == chunk.read_bytes(), chunk.name


@pytest.mark.parametrize("codec", ["png", "raw"])
def test_crops_are_the_image_folder_crops_and_exact_copies_at_scale_one(tmp_path, codec):
    source = np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "photo.png")
    tiled = TiledImage(encode_tiles(source, 48, codec))
    for downscale in (False, True):
        crop = RandomCrop(64, random_downscale=downscale, min_scale=0.25)
        for seed in range(6):
            expected, _ = crop(tmp_path / "photo.png", random.Random(seed))
            got = random_crop(crop, tiled, random.Random(seed))
            if downscale:
                assert (got - expected).abs().max() <= 1 / 255 + 1e-6, seed
                continue
            assert torch.equal(got, expected), seed
            pixels = (got * 255).round().byte().permute(1, 2, 0).numpy()
            found = [
                (top, left)
                for view in (pixels, pixels[:, ::-1])
                for top, left in zip(*np.nonzero((source[:-63, :-63] == view[0, 0]).all(-1)))
                if np.array_equal(source[top : top + 64, left : left + 64], view)
            ]
            assert found, "a crop at scale 1 is source pixels, bit for bit"


def _shard_run(prepared, val_folder, *overrides: str) -> list[str]:
    return [
        *TINY_STAGE1,
        "data=shards",
        f"data.train_shards={prepared[0]}",
        f"data.val_dirs=[{val_folder}]",
        "data.pin_memory=false",
        "+callbacks.record._target_=tests.test_shards.BatchRecorder",
        *overrides,
    ]


class BatchRecorder(pl.Callback):
    """Keeps every training batch; with ``directory``, writes their labels to labels-<rank>.json there."""

    def __init__(self, directory: str | None = None):
        self.directory, self.batches = directory, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch.detach().cpu().clone())

    def on_train_end(self, trainer, pl_module):
        if self.directory:
            target = Path(self.directory) / f"labels-{trainer.global_rank}.json"
            target.write_text(json.dumps([labels(b) for b in self.batches]))


def _batches(trainer) -> list[torch.Tensor]:
    return next(cb for cb in trainer.callbacks if isinstance(cb, BatchRecorder)).batches


def test_missing_shards_are_reported_before_training(tmp_path):
    cfg = compose_config([*TINY_STAGE1, "data=lsdir_shards"], tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "no-data-here")
    with pytest.raises(ConfigError, match=r"data\.train_shards: no prepared shards at .*no-data-here/LSDIR/shards"):
        instantiate_node(cfg.data, "data")


def test_two_training_steps_from_shards(prepared, val_folder, tmp_path):
    metrics, trainer = train(compose_config(_shard_run(prepared, val_folder, "trainer.max_steps=2"), tmp_path / "run"))
    assert trainer.global_step == 2 and np.isfinite(metrics["train/loss"])
    batches = _batches(trainer)
    assert [b.shape for b in batches] == [(2, 3, 64, 64)] * 2
    assert len(set(labels(torch.cat(batches)))) == 4, "four different photos"


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_mid_epoch_continues_with_the_same_batches(prepared, val_folder, tmp_path, workers):
    """4 batches an epoch: stopped after 3, resumed to 7, the run sees the batches an
    uninterrupted run saw, across the epoch boundary too."""
    common = _shard_run(prepared, val_folder, f"data.num_workers={workers}", "trainer.val_check_interval=3")
    _, straight = train(compose_config([*common, "trainer.max_steps=7"], tmp_path / "straight"))
    train(compose_config([*common, "trainer.max_steps=3"], tmp_path / "first"))
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    _, resumed = train(compose_config([*common, "trainer.max_steps=7", f"ckpt_path={checkpoint}"], tmp_path / "resumed"))
    expected, got = _batches(straight)[3:], _batches(resumed)
    assert len(got) == len(expected) == 4
    for step, (a, b) in enumerate(zip(expected, got), 3):
        assert torch.equal(a, b), f"batch of step {step} differs after the resume"


@pytest.mark.slow
def test_two_ddp_ranks_read_disjoint_samples(prepared, val_folder, tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    overrides = _shard_run(prepared, val_folder, "trainer=ddp_cpu", "trainer.max_steps=2", "logger=csv",
                           f"+callbacks.record.directory={run_dir}")
    result = subprocess.run(
        [sys.executable, str(Path(train_module.__file__).resolve().parent / "train.py"), *overrides,
         f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [sum(json.loads((run_dir / f"labels-{rank}.json").read_text()), []) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 4  # 2 steps of 2 crops on each rank
    assert not set(seen[0]) & set(seen[1]), seen
    assert len(set(seen[0] + seen[1])) == 8, "no photo read twice in the epoch"
