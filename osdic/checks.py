"""The library's errors, and the checks of configuration values that raise :class:`ConfigError`
naming the key (no Lightning or Hydra needed to raise or catch them)."""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from typing import Any, Iterator


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


class MissingWeightsError(RuntimeError):
    """A pretrained backbone a metric or loss needs is not on disk (and cannot be downloaded)."""


@contextmanager
def config_section(key: str) -> Iterator[None]:
    """ConfigErrors raised inside name their key under ``key``: for a part a constructor builds
    from its config (OSDiff's ``entropy_model`` partial → ``model.codec.entropy_model.groups``)."""
    try:
        yield
    except ConfigError as error:
        raise error.under(key) from None


def _require_number(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(key, f"must be a number, got {value!r}")


def require_positive(key: str, value: float) -> float:
    _require_number(key, value)
    if not value > 0:
        raise ConfigError(key, f"must be > 0, got {value!r}")
    return value


def require_non_negative(key: str, value: float) -> float:
    _require_number(key, value)
    if value < 0:
        raise ConfigError(key, f"must be >= 0, got {value!r}")
    return value


def require_int(key: str, value: int, minimum: int | None = None, below: int | None = None) -> int:
    """An integer (not a bool, float or string) with ``minimum <= value < below``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if (minimum is not None and value < minimum) or (below is not None and value >= below):
        bounds = [f">= {minimum}"] * (minimum is not None) + [f"< {below}"] * (below is not None)
        raise ConfigError(key, f"must be {' and '.join(bounds)}, got {value}")
    return int(value)


def require_choice(key: str, value: str, choices) -> str:
    if value not in choices:
        raise ConfigError(key, f"unknown value {value!r}; choose one of {sorted(choices)}")
    return value


def require_supported_precision(key: str, precision: Any) -> None:
    """fp16 needs a loss scaler, which the multi-optimizer manual step does not use (and
    Lightning silently turns ``16-mixed`` into bf16 on a CPU)."""
    if str(precision).startswith("16"):
        raise ConfigError(key, f"{precision!r}: fp16 needs a loss scaler the multi-optimizer step does not use; "
                               f"use bf16-mixed or 32-true")
