"""λ schedules, their keying on batches, and their state across a resume."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch

from callbacks.rate_annealing import (ConstantLambda, CosineLambda, ExponentialLambda, LinearLambda, RateAnnealing,
                                      StepLambda, TargetRate, TwoLevelTargetRate)
from lightning_modules.objective import RateDistortionObjective
from osdic.checks import ConfigError
from tests.conftest import TINY_STAGE1, compose_config
from train import train


@pytest.mark.parametrize(
    "schedule, expected",
    [
        (ConstantLambda(lambda_start=2.0), {0: 2.0, 50: 2.0}),
        (LinearLambda(lambda_start=1.0, lambda_end=3.0, num_steps=10), {0: 1.0, 5: 2.0, 10: 3.0, 99: 3.0}),
        (CosineLambda(lambda_start=1.0, lambda_end=3.0, num_steps=10), {0: 1.0, 5: 2.0, 10: 3.0}),
        (ExponentialLambda(lambda_start=1.0, lambda_end=16.0, num_steps=8), {0: 1.0, 2: 2.0, 4: 4.0, 8: 16.0}),
        (StepLambda(lambda_start=1.0, lambda_end=16.0, milestones=[10, 20]), {9: 1.0, 10: 4.0, 20: 16.0}),
        (LinearLambda(lambda_start=1.0, lambda_end=3.0, num_steps=10, start_step=5), {5: 1.0, 10: 2.0}),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, dict) else "",
)
def test_schedule_values(schedule, expected):
    for batch, value in expected.items():
        assert schedule.value(batch) == pytest.approx(value), batch


def test_two_level_target_switches_on_the_measured_rate():
    schedule = TwoLevelTargetRate(target_bpp=0.1, lambda_above=4.0, lambda_below=0.5, bpp_ema=0.0)
    assert schedule.value() == 4.0  # nothing measured yet: push the rate down
    schedule.measured_bpp = 0.05
    assert schedule.value() == 0.5
    schedule.measured_bpp = 0.2
    assert schedule.value() == 4.0


def test_target_rate_controller_answers_at_once_and_holds_lambda_once_on_goal():
    controller = TargetRate(target_bpp=0.1, lambda_start=1.0, integral_gain=0.1, proportional_gain=0.5, bpp_ema=0.0)
    controller.measure(0.2)  # above the goal: λ up at once, by more than the integral alone
    assert controller.value() == pytest.approx(math.exp(0.1 * math.log(2) + 0.5 * math.log(2)))
    controller.measure(0.1)  # on goal: the proportional part is gone, the integral stays
    assert controller.value() == pytest.approx(math.exp(0.1 * math.log(2)))
    controller.measure(0.05)  # below: λ down
    assert controller.value() < math.exp(0.1 * math.log(2))


def test_target_rate_gains_grow_as_the_learning_rate_decays_up_to_their_cap():
    """With the learning rate at a quarter of its initial value a batch moves the weights a quarter
    as far, so both gains are 4× (the loop's speed and damping stay as at the start); at 0 they stop
    at ``gain_boost_cap``; a cap of 1 keeps them fixed."""
    def step_of_log_lambda(cap: float, learning_rate: float) -> tuple[float, float]:
        controller = TargetRate(target_bpp=0.1, lambda_start=1.0, integral_gain=0.1, proportional_gain=0.5,
                                bpp_ema=0.0, gain_boost_cap=cap)
        group = {"lr": learning_rate, "initial_lr": 1e-3}
        trainer = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[group])], global_step=1,
                                  strategy=SimpleNamespace(reduce=lambda value, reduce_op: value))
        objective = RateDistortionObjective()
        objective.training_bpp = torch.tensor(0.2)
        module = SimpleNamespace(device="cpu", log=lambda *args, **kwargs: None, training_logs_written=lambda: True,
                                 objective=objective)
        controller.on_train_batch_end(trainer, module, None, None, 0)
        return controller.integral, math.log(controller.value())

    e = math.log(2)  # the rate at twice its goal
    assert step_of_log_lambda(10.0, 1e-3) == pytest.approx((0.1 * e, 0.6 * e))
    assert step_of_log_lambda(10.0, 2.5e-4) == pytest.approx((0.4 * e, 2.4 * e))
    assert step_of_log_lambda(10.0, 0.0) == pytest.approx((1.0 * e, 6.0 * e))
    assert step_of_log_lambda(1.0, 2.5e-4) == pytest.approx((0.1 * e, 0.6 * e))


def _trainer_after_validation(**fields) -> SimpleNamespace:
    """What TargetRate reads of the trainer when a validation ends."""
    return SimpleNamespace(**{"sanity_checking": False, "loggers": [], "global_step": 0, **fields})


def _module_after_validation(real_bpp: float) -> SimpleNamespace:
    """A module whose objective recorded ``real_bpp`` as its last validation's real files."""
    objective = RateDistortionObjective()
    objective.record_validation(real_bpp)
    return SimpleNamespace(objective=objective)


def test_target_rate_compares_the_real_files_with_the_mean_training_rate_of_its_window():
    controller = TargetRate(target_bpp=0.1, ratio_window=4, ratio_ema=0.5)
    for bpp in [0.9, 0.9, 0.10, 0.12, 0.08, 0.10]:  # the first two fall out of the window
        controller.measure(bpp)
    trainer, module = _trainer_after_validation(), _module_after_validation(0.125)
    controller.on_validation_end(trainer, module)
    assert controller.real_over_estimate == pytest.approx(1.25)  # the real files run 25 % above
    assert controller.training_goal == pytest.approx(0.08)
    module.objective.record_validation(0.2)  # measured again: 2 ×
    controller.on_validation_end(trainer, module)
    assert controller.real_over_estimate == pytest.approx(math.sqrt(1.25 * 2.0))  # halfway, in log


def test_the_default_window_keeps_the_crops_content_out_of_c(tmp_path):
    """One batch's rate is ~40 % off the model's mean by content alone (Kodak, two 256² crops):
    c from the configured window must stay within ~3 % (RMS) of the real ratio, where a 50-batch
    window left ±6 % and moved the goal by as much."""
    window = compose_config(["callbacks/rate_annealing=target_bpp"], tmp_path).callbacks.rate_annealing.ratio_window
    generator = torch.Generator().manual_seed(0)
    errors = []
    for _ in range(40):
        controller = TargetRate(target_bpp=0.1, ratio_window=window)
        noise = torch.exp(0.4 * torch.randn(400, generator=generator) - 0.08)  # mean 1
        for factor in noise.tolist():
            controller.measure(0.1 * factor)
        controller.on_validation_end(_trainer_after_validation(), _module_after_validation(0.09))
        errors.append(math.log(controller.real_over_estimate / 0.9))
    assert math.sqrt(sum(e * e for e in errors) / len(errors)) < 0.035


def _lagging_rate(controller: TargetRate, batches: int, seed: int = 0) -> list[float]:
    """A stand-in for training: the rate relaxes towards 0.25·(λ/0.02)^−½ bpp over 40 batches
    and is measured with ±15 % batch-to-batch noise (how the tiny HiFiC answers λ)."""
    generator = torch.Generator().manual_seed(seed)
    rate, rates = 0.6, []
    for _ in range(batches):
        rate += (0.25 * (controller.value() / 0.02) ** -0.5 - rate) / 40
        rates.append(rate)
        controller.measure(rate * (1 + 0.15 * float(torch.randn((), generator=generator))))
        controller.step += 1
    return rates


@pytest.mark.parametrize("target", [0.25, 0.5])
def test_target_rate_lands_a_lagging_noisy_rate_and_holds_it(target):
    """From one λ_start both targets are reached within 3 % and held within 5 % over the second
    half of the run, whatever the noise."""
    for seed in range(3):
        rates = _lagging_rate(TargetRate(target_bpp=target, lambda_start=0.012), 800, seed)
        assert rates[-1] == pytest.approx(target, rel=0.03)
        assert max(abs(rate / target - 1) for rate in rates[400:]) < 0.05


def test_a_run_that_misses_its_target_says_so_and_why(caplog):
    """Within ``tolerance`` of the target the run ends quietly; outside, it warns, naming λ's bound
    when λ sat there (the target was out of reach) — and it logs the error at every validation."""
    for real, warns in [(0.51, False), (0.3, True)]:
        logged = []
        logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.append(metrics))
        trainer = _trainer_after_validation(loggers=[logger], is_global_zero=True, optimizers=[])
        controller = TargetRate(target_bpp=0.5, lambda_start=1e-3, lambda_min=1e-4, integral_gain=1.0, bpp_ema=0.0)
        for _ in range(3):  # a rate far under the goal: the integrator runs into λ_min
            controller.measure(0.1)
            controller.step += 1
        controller.on_validation_end(trainer, _module_after_validation(real))
        assert logged == [{"val/bpp_target_error": pytest.approx(real / 0.5 - 1)}]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="callbacks.rate_annealing"):
            controller.on_train_end(trainer, None)
        assert bool(caplog.records) == warns  # +2 % is within the default ±3 %
    message = caplog.records[0].getMessage()
    assert "-40.0 %" in message and "out of this codec's reach" in message and "0.0001" in message


def test_target_rate_resumes_a_checkpoint_written_before_it_kept_its_landing():
    """Checkpoints of runs started before ``last_real_bpp``/``batches_at_bound`` existed resume."""
    controller = TargetRate(target_bpp=0.1)
    state = controller.state_dict()
    del state["last_real_bpp"], state["batches_at_bound"]
    controller.load_state_dict(state)
    assert controller.last_real_bpp is None and controller.batches_at_bound == 0


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: LinearLambda(lambda_start=1.0, lambda_end=2.0, num_steps=0), "num_steps"),
        (lambda: ExponentialLambda(lambda_start=1.0, lambda_end=0.0, num_steps=10), "lambda_end"),
        (lambda: StepLambda(lambda_start=1.0, lambda_end=2.0, milestones=[5, 3]), "milestones"),
        (lambda: TwoLevelTargetRate(target_bpp=0, lambda_above=1.0, lambda_below=0.1), "target_bpp"),
        (lambda: TargetRate(target_bpp="/nonexistent/run"), "target_bpp"),
        (lambda: TargetRate(target_bpp=0.1, ratio_window=0), "ratio_window"),
        (lambda: TargetRate(target_bpp=0.1, ratio_ema=1.0), "ratio_ema"),
        (lambda: TargetRate(target_bpp=0.1, proportional_gain=-1.0), "proportional_gain"),
        (lambda: TargetRate(target_bpp=0.1, gain_boost_cap=0.5), "gain_boost_cap"),
        (lambda: ConstantLambda(lambda_start=-1.0), "lambda_start"),
    ],
)
def test_invalid_schedules_name_the_key(build, key):
    with pytest.raises(ConfigError) as error:
        build()
    assert error.value.key == key


LINEAR = [
    "callbacks/rate_annealing=linear",
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
    assert annealing.step == 4 and trainer.global_step == 4
    assert metrics["train/lambda"] == pytest.approx(annealing.value(3))  # λ used by the 4th batch
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["callbacks"]  # λ state is in the checkpoint

    resumed_cfg = compose_config([*TINY_STAGE1, *LINEAR, "trainer.max_steps=6", f"ckpt_path={checkpoint}"], tmp_path / "resumed")
    metrics, trainer = train(resumed_cfg)
    assert _annealing(trainer).step == 6 and trainer.global_step == 6
    assert metrics["train/lambda"] == pytest.approx(1.0 + 5 / 10)
    assert not math.isnan(metrics["train/loss"])


def test_joint_training_at_matched_bpp_targets_the_annealed_runs_final_rate(tmp_path):
    """Strategy (ii) of the training-strategy table lands on the rate the rate-annealing run
    reached: its target is that run's final val/bpp_real, read from the run's directory."""
    annealed = tmp_path / "annealed"
    annealed.mkdir(parents=True)
    (annealed / "final_metrics.json").write_text('{"val/bpp_real": 0.0421, "val/psnr": 30.0}')
    cfg = compose_config(["experiment=sodec_stage3", "callbacks/rate_annealing=target_bpp",
                          f"callbacks.rate_annealing.target_bpp={annealed}", "trainer=cpu"], tmp_path / "run")
    from training.config import instantiate_node

    controller = instantiate_node(cfg.callbacks.rate_annealing, "callbacks.rate_annealing")
    assert isinstance(controller, TargetRate) and controller.target_bpp == pytest.approx(0.0421)


def test_target_rate_steers_the_rounded_rate_a_training_run_logs(tmp_path):
    """The controller reads the rounded rate the objective measured every batch (the rate the
    module logs as ``train/bpp_rounded``) and logs the goal it steers that rate to."""
    cfg = compose_config([*TINY_STAGE1, "callbacks/rate_annealing=target_bpp", "callbacks.rate_annealing.target_bpp=0.5",
                          "trainer.max_steps=2"], tmp_path)
    metrics, trainer = train(cfg)
    controller = _annealing(trainer)
    assert controller.step == 2 and controller.measured_bpp is not None
    assert metrics["train/rate_goal"] == pytest.approx(0.5)  # c = 1 until the first validation, at the end
    assert metrics["train/bpp_rounded"] != pytest.approx(metrics["train/bpp"], rel=1e-6)  # rounding, not noise
    # where it landed is in the final metrics, which a sweep's score is read from
    assert metrics["val/bpp_target_error"] == pytest.approx(metrics["val/bpp_real"] / 0.5 - 1, rel=1e-5)
    assert metrics["val/bpp_target_tolerance"] == pytest.approx(0.03)
