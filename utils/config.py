"""Configuration errors that name the offending key, and instantiation that reports them."""

from __future__ import annotations

import re
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

# `${mul:${a},0.5}` in configs (e.g. SODEC's stage-1 λ = half the stage-3 λ of a rate point)
OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b), replace=True)


class ConfigError(ValueError):
    """An invalid configuration value. ``key`` is the parameter name, extended to the full
    config path (e.g. ``data.crop_size``) by :func:`instantiate_node`."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")

    def __reduce__(self):  # picklable, so launchers (submitit) can report it from a job
        return type(self), (self.key, self.message)

    def under(self, prefix: str) -> "ConfigError":
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.message)


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


def require_positive(key: str, value: float) -> float:
    if value is None or not value > 0:
        raise ConfigError(key, f"must be > 0, got {value!r}")
    return value


def require_non_negative(key: str, value: float) -> float:
    if value is None or value < 0:
        raise ConfigError(key, f"must be >= 0, got {value!r}")
    return value


def require_choice(key: str, value: str, choices) -> str:
    if value not in choices:
        raise ConfigError(key, f"unknown value {value!r}; choose one of {sorted(choices)}")
    return value
