"""Configuration errors that name the offending key, and instantiation that reports them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import hydra
from omegaconf import DictConfig, OmegaConf

from callbacks.rate_annealing import TARGET_ERROR_KEY, TARGET_TOLERANCE_KEY, TargetRate
from osdic.checks import ConfigError, require_int, require_positive, require_supported_precision

# `${mul:${a},0.5}` in configs (e.g. SODEC's stage-1 λ = half the stage-3 λ of a rate point)
OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b), replace=True)


def _find_config_error(exc: BaseException | None, path: str) -> ConfigError | None:
    """The ConfigError behind hydra's wrapping, under the key of the node that raised it: hydra
    names that node as ``full_key: a.b`` in its InstantiationException message; without it the
    error came from the node at ``path`` itself."""
    node_key = None
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc.under(node_key or path)
        match = re.search(r"full_key: (\S+)", str(exc))
        if match and node_key is None:
            node_key = match.group(1)
        exc = exc.__cause__ or exc.__context__
    return None


def instantiate_node(node: DictConfig, path: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that turns a constructor's ConfigError into one naming the
    full config key, so ``λ ≤ 0`` reads ``callbacks.rate_annealing.lambda_start: ...``."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except Exception as exc:  # hydra wraps constructor errors in InstantiationException
        error = _find_config_error(exc, path)
        if error is None:
            raise
        raise error from None


def instantiate_collection(node: DictConfig | None, path: str) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a dict-like group (callbacks, loggers)."""
    if not node:
        return []
    return [
        instantiate_node(child, f"{path}.{name}")
        for name, child in node.items()
        if isinstance(child, DictConfig) and "_target_" in child
    ]


#: ``model.init_from`` of a stage that starts from random weights instead of its predecessor (smoke tests)
RANDOM_INIT = "random"
#: how a model that started from random weights, or descends from one, is marked (W&B tag, package warning)
STARTED_FROM_RANDOM = "started-from-random-weights"


class TargetRateMissed(RuntimeError):
    """A run that was to be scored at its target bpp ended outside the controller's tolerance."""


def metric_for_sweep(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value of ``optimized_metric`` among a run's ``metrics``, which a sweeper (Optuna and
    friends) minimises or maximises; None when the config names none.

    With ``score_only_at_target_bpp``, a run whose λ controller ended outside its tolerance raises
    :class:`TargetRateMissed` instead of returning a score: its quality was measured at another
    rate and compares with nothing (hydra-optuna-sweeper then records the trial as failed)."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric {name!r} was not logged; logged: {sorted(metrics)}")
    if cfg.get("score_only_at_target_bpp"):
        if TARGET_ERROR_KEY not in metrics:
            raise ConfigError("score_only_at_target_bpp", f"the run logged no {TARGET_ERROR_KEY}: it needs the λ "
                                                          f"controller (callbacks/rate_annealing=target_bpp) and a "
                                                          f"validation, where the controller measures its landing")
        error, tolerance = metrics[TARGET_ERROR_KEY], metrics[TARGET_TOLERANCE_KEY]
        if not abs(error) <= tolerance:
            raise TargetRateMissed(f"the run ended {100 * error:+.1f} % from its target bpp (tolerance "
                                   f"±{100 * tolerance:.1f} %): its {name} = {metrics[name]:.4g} is not scored")
    return metrics[name]


def _learning_rates(node: DictConfig, key: str) -> Iterator[tuple[str, Any]]:
    for name, child in node.items_ex(resolve=False):
        if name == "lr":
            yield f"{key}.lr", node.lr
        elif isinstance(child, DictConfig):
            yield from _learning_rates(child, f"{key}.{name}")


def check_init_from(model: DictConfig) -> None:
    """A stage that continues another (SODEC's stages 2–4) starts from its predecessor's
    checkpoint: without one it would train from random weights, silently, and fill a table with
    noise. ``model.init_from`` must name an existing checkpoint, or be ``random`` (smoke tests)."""
    stage, predecessor = model.get("stage"), model.get("predecessor_stage")
    if OmegaConf.is_missing(model, "init_from"):  # `???`: a stage that cannot start without it
        raise ConfigError("model.init_from", f"{stage} starts from a trained {predecessor}, and none is given: train "
                                             f"one (python train.py experiment={predecessor} ...) and set "
                                             f"model.init_from=<its run>/checkpoints/last.ckpt, or run the whole "
                                             f"chain (python train.py pipeline=sodec_rd_point; python -m tables "
                                             f"<table>). model.init_from={RANDOM_INIT} starts from random weights, "
                                             f"for smoke tests only (every output then says so)")
    init_from = model.get("init_from")
    if init_from not in (None, RANDOM_INIT) and not Path(init_from).is_file():
        raise ConfigError("model.init_from", f"{init_from} does not exist (a checkpoint of {predecessor} is needed)")


def check_train_config(cfg: DictConfig) -> None:
    """Values of the composed config that Lightning or torch would refuse only once training
    runs (an optimizer is built at fit, the validation interval divides the step count) or
    would silently change, and a stage's missing predecessor: checked before anything is built
    or read."""
    check_init_from(cfg.model)
    require_int("seed", cfg.seed, minimum=0, below=2**32)  # what seed_everything takes
    trainer = cfg.trainer
    require_supported_precision("trainer.precision", trainer.get("precision"))
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float):
        if not 0 < interval <= 1:
            raise ConfigError("trainer.val_check_interval", f"a fraction of an epoch must be in (0, 1], got {interval}")
        if trainer.get("check_val_every_n_epoch") is None:
            raise ConfigError("trainer.val_check_interval", f"a fraction of an epoch ({interval}) needs "
                                                            f"trainer.check_val_every_n_epoch; or give a number of batches")
    elif interval is not None:
        require_int("trainer.val_check_interval", interval, minimum=1)
        max_steps = trainer.get("max_steps")
        if isinstance(max_steps, int) and max_steps > 0 and interval > max_steps:
            raise ConfigError("trainer.val_check_interval", f"{interval} is more batches than the run trains "
                                                            f"(trainer.max_steps={max_steps}): it would never validate, "
                                                            f"and its final metrics would hold no validation")
    for key, lr in _learning_rates(cfg.model, "model"):
        require_positive(key, lr)
    controller = str(OmegaConf.select(cfg, "callbacks.rate_annealing._target_", default=""))
    if cfg.get("score_only_at_target_bpp") and not (controller and issubclass(hydra.utils.get_class(controller),
                                                                               TargetRate)):
        raise ConfigError("score_only_at_target_bpp", f"needs the λ controller (callbacks/rate_annealing=target_bpp), "
                                                      f"the only schedule that says where a run's rate landed; got "
                                                      f"{controller or 'none'}")
