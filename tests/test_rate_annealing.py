"""λ schedules, their keying on batches, and their state across a resume."""

from __future__ import annotations

import math

import pytest
import torch

from callbacks.rate_annealing import RateAnnealing
from tests.conftest import TINY_STAGE1, compose_config
from train import train
from utils.config import ConfigError


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(schedule="constant", lambda_start=2.0), {0: 2.0, 50: 2.0}),
        (dict(schedule="linear", lambda_start=1.0, lambda_end=3.0, num_steps=10), {0: 1.0, 5: 2.0, 10: 3.0, 99: 3.0}),
        (dict(schedule="cosine", lambda_start=1.0, lambda_end=3.0, num_steps=10), {0: 1.0, 5: 2.0, 10: 3.0}),
        (dict(schedule="exponential", lambda_start=1.0, lambda_end=16.0, num_steps=8), {0: 1.0, 2: 2.0, 4: 4.0, 8: 16.0}),
        (dict(schedule="step", lambda_start=1.0, lambda_end=16.0, milestones=[10, 20]), {9: 1.0, 10: 4.0, 20: 16.0}),
        (dict(schedule="linear", lambda_start=1.0, lambda_end=3.0, num_steps=10, start_step=5), {5: 1.0, 10: 2.0}),
    ],
)
def test_schedule_values(kwargs, expected):
    annealing = RateAnnealing(**kwargs)
    for batch, value in expected.items():
        assert annealing.value(batch) == pytest.approx(value), batch


def test_target_bpp_switches_on_the_measured_rate():
    annealing = RateAnnealing(schedule="target_bpp", target_bpp=0.1, lambda_above=4.0, lambda_below=0.5, bpp_ema=0.0)
    assert annealing.value() == 4.0  # nothing measured yet: push the rate down
    annealing.measured_bpp = 0.05
    assert annealing.value() == 0.5
    annealing.measured_bpp = 0.2
    assert annealing.value() == 4.0


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(schedule="linear", lambda_end=2.0, num_steps=0), "num_steps"),
        (dict(schedule="exponential", num_steps=10), "lambda_end"),
        (dict(schedule="step", lambda_end=2.0, milestones=[5, 3]), "milestones"),
        (dict(schedule="target_bpp", lambda_above=1.0, lambda_below=0.1), "target_bpp"),
        (dict(schedule="sawtooth"), "schedule"),
    ],
)
def test_invalid_schedules_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as error:
        RateAnnealing(**kwargs)
    assert error.value.key == key


LINEAR = [
    "callbacks.rate_annealing.schedule=linear",
    "callbacks.rate_annealing.lambda_start=1.0",
    "callbacks.rate_annealing.lambda_end=2.0",
    "callbacks.rate_annealing.num_steps=10",
]


def _annealing(trainer) -> RateAnnealing:
    return next(cb for cb in trainer.callbacks if isinstance(cb, RateAnnealing))


def test_lambda_is_keyed_on_batches_and_restored_on_resume(tmp_path):
    """Two optimizers step per batch; λ and max_steps still count batches, and a resumed run
    continues the schedule where the checkpoint left it."""
    first_cfg = compose_config([*TINY_STAGE1, *LINEAR, "trainer.max_steps=4"], tmp_path / "first")
    metrics, trainer = train(first_cfg)
    annealing = _annealing(trainer)
    assert annealing.batches_seen == 4 and trainer.global_step == 4
    assert metrics["train/lambda"] == pytest.approx(annealing.value(3))  # λ used by the 4th batch
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["callbacks"]  # λ state is in the checkpoint

    resumed_cfg = compose_config([*TINY_STAGE1, *LINEAR, "trainer.max_steps=6", f"ckpt_path={checkpoint}"], tmp_path / "resumed")
    metrics, trainer = train(resumed_cfg)
    assert _annealing(trainer).batches_seen == 6 and trainer.global_step == 6
    assert metrics["train/lambda"] == pytest.approx(1.0 + 5 / 10)
    assert not math.isnan(metrics["train/loss"])
