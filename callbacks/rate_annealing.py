"""The rate-annealing callbacks: the schedulers of λ, the weight of the rate term.

λ itself belongs to the module's rate–distortion objective (lightning_modules/objective.py); a
schedule sets it through ``objective.set_lambda`` before every batch (and before a validation) and
reads the rates the objective observed. λ is a function of the training batch, which is
``trainer.global_step`` (only the main optimizer's step counts: the aux and discriminator
optimizers step uncounted), identical on every DDP rank; a schedule's own state (a controller's
measurements) is saved in and restored from checkpoints.

Each schedule is a subclass (one config file each in conf/callbacks/rate_annealing/); with
progress p = clip((batch − start_step) / num_steps, 0, 1):
  ConstantLambda      λ_start
  LinearLambda        λ_start + (λ_end − λ_start)·p
  CosineLambda        λ_end + (λ_start − λ_end)·(1 + cos πp)/2
  ExponentialLambda   λ_start·(λ_end/λ_start)^p                  (geometric, natural for λ)
  StepLambda          λ_start·(λ_end/λ_start)^(k/K) after k of the K milestones (batch counts)
  TwoLevelTargetRate  HiFiC/ILLM: λ_above while the measured bpp is above the target, λ_below otherwise
  TargetRate          a controller that lands on a requested bpp of the real files (see its doc)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl

from osdic.checks import ConfigError, require_positive

log = logging.getLogger(__name__)

#: what a run with the λ controller (:class:`TargetRate`) ends with: its last validation's
#: val/bpp_real ÷ target_bpp − 1, and the tolerance it was given
TARGET_ERROR_KEY, TARGET_TOLERANCE_KEY = "val/bpp_target_error", "val/bpp_target_tolerance"


class RateAnnealing(pl.Callback):
    """The hooks and the state every schedule shares; subclasses define :meth:`value`."""

    def __init__(self, lambda_start: float = 1.0, start_step: int = 0):
        self.lambda_start = require_positive("lambda_start", lambda_start)
        if start_step < 0:
            raise ConfigError("start_step", f"must be >= 0, got {start_step}")
        self.start_step = start_step
        #: the training batch λ is for: the trainer's global_step, copied at each hook (not a count of its own)
        self.step = 0

    def value(self, batch: int | None = None) -> float:
        """λ for the given training batch (default: the current one)."""
        raise NotImplementedError

    def progress(self, batch: int | None, num_steps: int) -> float:
        batch = self.step if batch is None else batch
        return min(max((batch - self.start_step) / num_steps, 0.0), 1.0)

    def final_metrics(self) -> dict[str, float]:
        """What the schedule adds to the run's final metrics (a controller: where it landed)."""
        return {}

    def _set_lambda(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.step = trainer.global_step
        pl_module.objective.set_lambda(self.value())

    # ------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_lambda(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._set_lambda(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._set_lambda(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        # validation before the first batch (sanity check) or after a resume still needs λ
        self._set_lambda(trainer, pl_module)

class ConstantLambda(RateAnnealing):
    """λ fixed for the whole run."""

    def value(self, batch: int | None = None) -> float:
        return self.lambda_start


class _Annealed(RateAnnealing):
    """From λ_start to λ_end over ``num_steps`` batches after ``start_step``, then held."""

    def __init__(self, lambda_start: float, lambda_end: float, num_steps: int, start_step: int = 0):
        super().__init__(lambda_start, start_step)
        self.lambda_end = require_positive("lambda_end", lambda_end)
        self.num_steps = int(require_positive("num_steps", num_steps))


class LinearLambda(_Annealed):
    def value(self, batch: int | None = None) -> float:
        return self.lambda_start + (self.lambda_end - self.lambda_start) * self.progress(batch, self.num_steps)


class CosineLambda(_Annealed):
    def value(self, batch: int | None = None) -> float:
        p = self.progress(batch, self.num_steps)
        return self.lambda_end + (self.lambda_start - self.lambda_end) * (1 + math.cos(math.pi * p)) / 2


class ExponentialLambda(_Annealed):
    def value(self, batch: int | None = None) -> float:
        return self.lambda_start * (self.lambda_end / self.lambda_start) ** self.progress(batch, self.num_steps)


class StepLambda(RateAnnealing):
    def __init__(self, lambda_start: float, lambda_end: float, milestones: Sequence[int], start_step: int = 0):
        super().__init__(lambda_start, start_step)
        self.lambda_end = require_positive("lambda_end", lambda_end)
        self.milestones = [int(m) for m in milestones]
        if not self.milestones or self.milestones != sorted(set(self.milestones)):
            raise ConfigError("milestones", f"needs strictly increasing batch counts, got {list(milestones)}")

    def value(self, batch: int | None = None) -> float:
        batch = self.step if batch is None else batch
        passed = sum(batch - self.start_step >= m for m in self.milestones)
        return self.lambda_start * (self.lambda_end / self.lambda_start) ** (passed / len(self.milestones))


class _MeasuresTrainingRate(RateAnnealing):
    """Schedules that react to the training rate: an EMA over batches of the rate of the rounded
    latents the files code (the objective's ``training_bpp``; not the noisy training estimate, up
    to 3× off early in training and slower to follow λ), averaged over ranks first so every rank
    takes the same decision."""

    def __init__(self, lambda_start: float, bpp_ema: float, start_step: int = 0):
        super().__init__(lambda_start, start_step)
        if not 0 <= bpp_ema < 1:
            raise ConfigError("bpp_ema", f"must be in [0, 1), got {bpp_ema}")
        self.bpp_ema = bpp_ema
        self.measured_bpp: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bpp = pl_module.objective.training_bpp
        if bpp is None:
            raise RuntimeError(f"{type(self).__name__} needs a rate: the module's objective measured none this batch")
        self.measure(float(trainer.strategy.reduce(bpp.to(pl_module.device).float(), reduce_op="mean")))
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def measure(self, bpp: float) -> None:
        """One batch's training rate (the same on every rank): update the EMA, then react."""
        previous = bpp if self.measured_bpp is None else self.measured_bpp
        self.measured_bpp = self.bpp_ema * previous + (1 - self.bpp_ema) * bpp
        self.observe_batch(bpp)
        self.observe(self.measured_bpp)

    def observe_batch(self, bpp: float) -> None:
        """Called after every batch with this batch's training rate (averaged over ranks)."""

    def observe(self, measured_bpp: float) -> None:
        """Called after every batch with the smoothed training rate."""

    def state_dict(self) -> dict:
        return {**super().state_dict(), "measured_bpp": self.measured_bpp}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.measured_bpp = state_dict["measured_bpp"]


class TwoLevelTargetRate(_MeasuresTrainingRate):
    """HiFiC / MS-ILLM: λ_above while the measured training bpp is above ``target_bpp``,
    λ_below otherwise. Where it lands depends on λ_above/λ_below; :class:`TargetRate` lands."""

    def __init__(self, target_bpp: float, lambda_above: float, lambda_below: float, bpp_ema: float = 0.9,
                 start_step: int = 0):
        super().__init__(require_positive("lambda_above", lambda_above), bpp_ema, start_step)
        self.target_bpp = require_positive("target_bpp", target_bpp)
        self.lambda_below = require_positive("lambda_below", lambda_below)

    def value(self, batch: int | None = None) -> float:
        above = self.measured_bpp is None or self.measured_bpp > self.target_bpp
        return self.lambda_start if above else self.lambda_below


def _main_learning_rate(trainer: pl.Trainer) -> tuple[float, float]:
    """The main optimizer's (current, initial) learning rate; initial = current without a
    scheduler, (0, 0) before any optimizer exists."""
    group = trainer.optimizers[0].param_groups[0] if trainer.optimizers else {"lr": 0.0}
    return group["lr"], group.get("initial_lr", group["lr"])


def _learning_rate_decayed(trainer: pl.Trainer) -> bool:
    """Whether the main optimizer ends the run below its initial learning rate (a scheduler whose
    milestones lie beyond the run does not count)."""
    current, initial = _main_learning_rate(trainer)
    return current < initial


def read_target_bpp(target: float | str) -> float:
    """A bpp, or a run directory (or its final_metrics.json) whose final ``val/bpp_real`` is the
    target — how the "joint training at matched bpp" ablation matches another run."""
    if isinstance(target, (int, float)):
        return require_positive("target_bpp", float(target))
    path = Path(target)
    path = path / "final_metrics.json" if path.is_dir() or not path.suffix else path
    if not path.is_file():
        raise ConfigError("target_bpp", f"{target} is neither a bpp nor a finished run: {path} does not exist "
                                        f"(run the run to match first)")
    metrics = json.loads(path.read_text())
    if "val/bpp_real" not in metrics:
        raise ConfigError("target_bpp", f"{path} has no val/bpp_real to match")
    return require_positive("target_bpp", float(metrics["val/bpp_real"]))


class TargetRate(_MeasuresTrainingRate):
    """A λ controller that makes a run end at ``target_bpp`` of the **real files** of its
    validation set, without λ tuning by hand.

    Inner loop, every batch, on e = log(measured / goal), measured = the EMA of the training
    rate estimate, goal = target_bpp / c:  log λ = I + proportional_gain·e,  I += integral_gain·e.
    The proportional part answers a rate that moves at once and is gone when the rate is on goal;
    the integral part, slow, finds the λ that holds it there. A pure integrator (the earlier
    design) kept integrating while the rate answered tens of batches late, overshot, and λ went
    high enough to switch latent channels off for good (BENCHMARKS.md, λ controller). λ stays in
    [λ_min, λ_max] and the integrator stops at those bounds.
    As the learning rate decays a batch moves the weights, hence the rate, less for the same λ, and
    the loop slows and loses its damping (the rate answers λ in proportion to the learning rate):
    ``gain_boost_cap`` > 1 multiplies both gains by min(cap, initial ÷ current learning rate), which
    keeps the loop's speed and damping those of the start until the cap.
    Outer loop, every validation: c = val/bpp_real ÷ the mean training rate of the last
    ``ratio_window`` batches — how much the real files of the validation images (whole images,
    header and coder overhead included) exceed the training crops' rate; a window, not the EMA's
    last value, whose noise would go into c whole. The window is long because one batch's rate
    says little about the model: crops differ in content, and on Kodak one batch of two 256² crops
    is 42 % from the mean (standard deviation) even with the weights frozen, so 50 batches put ±6 %
    of noise into c and 200 put ±3 % (BENCHMARKS.md, λ controller); its noise falls with the root of
    window × batch size. Each measurement moves log c by
    (1 − ratio_ema) of the way: a ratio measured while λ and the model move fast is noisy, and a c
    taken whole would move the goal, hence λ, by as much (BENCHMARKS.md, λ controller).
    λ_start is the initial λ.
    It lands where the model settles at the end, with a learning rate that decays to the end
    (``model/scheduler=cosine``): at a constant rate the validation's real bpp jitters ±10 % between
    validations, and the last one is a draw (BENCHMARKS.md, λ controller).
    Every validation logs ``val/bpp_target_error`` (val/bpp_real ÷ target − 1); a run whose last
    validation is further than ``tolerance`` from the target says so when it ends, and whether λ sat
    at a bound (a target out of the codec's reach in this run): a "matched bpp" that does not match
    must not pass for one."""

    def __init__(self, target_bpp: float | str, lambda_start: float = 1.0, integral_gain: float = 0.02,
                 proportional_gain: float = 1.0, ratio_window: int = 200, ratio_ema: float = 0.5,
                 lambda_min: float = 1e-4, lambda_max: float = 1e4, bpp_ema: float = 0.9, start_step: int = 0,
                 tolerance: float = 0.03, gain_boost_cap: float = 10.0):
        super().__init__(lambda_start, bpp_ema, start_step)
        self.target_bpp = read_target_bpp(target_bpp)
        self.integral_gain = require_positive("integral_gain", integral_gain)
        if proportional_gain < 0:
            raise ConfigError("proportional_gain", f"must be >= 0, got {proportional_gain}")
        self.proportional_gain = proportional_gain
        self.ratio_window = int(require_positive("ratio_window", ratio_window))
        if not 0 <= ratio_ema < 1:
            raise ConfigError("ratio_ema", f"must be in [0, 1), got {ratio_ema}")
        self.ratio_ema = ratio_ema
        self.ratio_measured = False
        self.lambda_min, self.lambda_max = require_positive("lambda_min", lambda_min), lambda_max
        if not lambda_max > lambda_min:
            raise ConfigError("lambda_max", f"must be > lambda_min ({lambda_min}), got {lambda_max}")
        self.tolerance = require_positive("tolerance", tolerance)
        if not gain_boost_cap >= 1:
            raise ConfigError("gain_boost_cap", f"must be >= 1 (1: gains fixed), got {gain_boost_cap}")
        self.gain_boost_cap = gain_boost_cap
        self.gain_boost = 1.0
        self.integral = math.log(lambda_start)
        self.recent_bpp: list[float] = []
        self.real_over_estimate = 1.0
        self.last_real_bpp: float | None = None
        self.batches_at_bound = 0  # consecutive, up to now

    @property
    def training_goal(self) -> float:
        """The training-crop rate estimate that corresponds to the target on the real files."""
        return self.target_bpp / self.real_over_estimate

    def _clamped(self, log_lambda: float) -> float:
        return min(max(log_lambda, math.log(self.lambda_min)), math.log(self.lambda_max))

    @property
    def error(self) -> float:
        """e = log(measured / goal), 0 before the controller acts."""
        if self.measured_bpp is None or self.step < self.start_step:
            return 0.0
        return math.log(max(self.measured_bpp, 1e-9) / self.training_goal)

    def value(self, batch: int | None = None) -> float:
        return math.exp(self._clamped(self.integral + self.gain_boost * self.proportional_gain * self.error))

    def observe_batch(self, bpp: float) -> None:
        self.recent_bpp = [*self.recent_bpp, bpp][-self.ratio_window:]

    def observe(self, measured_bpp: float) -> None:
        if self.step >= self.start_step:
            self.integral = self._clamped(self.integral + self.gain_boost * self.integral_gain * self.error)
        at_bound = self.integral in (math.log(self.lambda_min), math.log(self.lambda_max))
        self.batches_at_bound = self.batches_at_bound + 1 if at_bound else 0

    def boost_for(self, learning_rate: float, initial_learning_rate: float) -> float:
        """initial ÷ current learning rate, at most ``gain_boost_cap``."""
        if learning_rate <= 0:
            return self.gain_boost_cap
        return min(max(initial_learning_rate / learning_rate, 1.0), self.gain_boost_cap)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.gain_boost = self.boost_for(*_main_learning_rate(trainer))
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if pl_module.training_logs_written():
            pl_module.log("train/rate_goal", self.training_goal, on_step=True, on_epoch=False)

    def on_validation_end(self, trainer, pl_module) -> None:
        real = pl_module.objective.validation_bpp
        if trainer.sanity_checking or real is None or not self.recent_bpp:
            return
        measured = float(real) / (sum(self.recent_bpp) / len(self.recent_bpp))
        weight = self.ratio_ema if self.ratio_measured else 0.0  # the first measurement replaces the guess c = 1
        self.real_over_estimate = self.real_over_estimate ** weight * measured ** (1 - weight)
        self.ratio_measured = True
        self.last_real_bpp = float(real)
        for logger in trainer.loggers:  # Lightning takes no self.log after the validation's epoch
            logger.log_metrics({TARGET_ERROR_KEY: self.target_error}, step=trainer.global_step)

    def final_metrics(self) -> dict[str, float]:
        """Where the run landed, in its final metrics, which a sweep's score is read from
        (training.config.metric_for_sweep); nothing before a validation measured it."""
        if self.last_real_bpp is None:
            return {}
        return {TARGET_ERROR_KEY: self.target_error, TARGET_TOLERANCE_KEY: self.tolerance}

    @property
    def target_error(self) -> float:
        """The last validation's real bpp ÷ the target − 1."""
        return self.last_real_bpp / self.target_bpp - 1

    def on_train_end(self, trainer, pl_module) -> None:
        if self.last_real_bpp is None or abs(self.target_error) <= self.tolerance or not trainer.is_global_zero:
            return
        if self.batches_at_bound:
            reach = (f"λ has sat at its bound {math.exp(self.integral):.3g} for the last {self.batches_at_bound} "
                     f"batches: the target is out of this codec's reach in this run (train longer, or widen "
                     f"lambda_min/lambda_max)")
        elif not _learning_rate_decayed(trainer):
            reach = ("the learning rate did not decay: the weights kept moving and the real bpp of the validation "
                     "jitters from one validation to the next (model/scheduler=cosine lets the model settle)")
        else:
            reach = "λ was still moving: a longer run, or more frequent validation, lands closer"
        log.warning("TargetRate asked for %.4g bpp; the last validation's real files are at %.4g bpp (%+.1f %%, "
                    "tolerance ±%.1f %%). %s.", self.target_bpp, self.last_real_bpp, 100 * self.target_error,
                    100 * self.tolerance, reach)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "integral": self.integral,
                "recent_bpp": list(self.recent_bpp), "real_over_estimate": self.real_over_estimate,
                "ratio_measured": self.ratio_measured, "last_real_bpp": self.last_real_bpp,
                "batches_at_bound": self.batches_at_bound, "gain_boost": self.gain_boost}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.integral = state_dict["integral"]
        self.recent_bpp, self.real_over_estimate = list(state_dict["recent_bpp"]), state_dict["real_over_estimate"]
        self.ratio_measured = state_dict["ratio_measured"]
        # checkpoints written before these were kept resume with nothing measured yet
        self.last_real_bpp = state_dict.get("last_real_bpp")
        self.batches_at_bound = state_dict.get("batches_at_bound", 0)
        self.gain_boost = state_dict.get("gain_boost", 1.0)
