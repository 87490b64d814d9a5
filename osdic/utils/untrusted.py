"""Files made elsewhere (checkpoints, codec packages, run configs) are data, never code.

Weights are read with ``torch.load(weights_only=True)``: tensors and plain containers only, no
pickled callables. A config's ``_target_`` is an import path that Hydra calls with whatever
arguments the file gives, at any depth (``{"_target_": "pandas.read_pickle", ...}`` nested in a
constructor argument runs a pickle), so configs read from files may only name the classes of an
allow-list. A package's fingerprint is an unkeyed hash anyone can recompute: it catches
accidents, not tampering, and is no reason to trust a file.
"""

from __future__ import annotations

import collections.abc
import functools
import importlib
import inspect
import os
import pickle
import re
import types
import typing
from typing import Any, Collection, Iterator

import torch

from osdic import registry
from osdic.checks import ConfigError


class UntrustedFileError(ValueError):
    """A file asks for something that loading it could execute; it is refused, not loaded."""


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's tensors and plain containers; a file that pickles anything else (a
    callable, an arbitrary class) is refused before any of it runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message also suggests turning the safe loader off; keep only what the file asked for
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise UntrustedFileError(
            f"{path}: refused: the checkpoint pickles objects other than tensors and plain containers, "
            f"which could run code when loaded" + (f" (it asks for {found.group(1)})" if found else "")
        ) from None


#: the largest run config read from a file (Hydra writes a few kilobytes)
MAX_RUN_CONFIG_BYTES = 1 << 20


def read_run_config(path: str | os.PathLike) -> Any:
    """A run's saved config (``.hydra/config.yaml``) as plain dicts and lists, its interpolations
    unresolved.
    A file over :data:`MAX_RUN_CONFIG_BYTES`, or one using YAML anchors and aliases — which Hydra
    never writes, and which a "billion laughs" file nests to cost ×10 per level — is refused."""
    import yaml

    size = os.path.getsize(path)
    if size > MAX_RUN_CONFIG_BYTES:
        raise UntrustedFileError(f"{path}: {size} bytes; a run config is at most {MAX_RUN_CONFIG_BYTES}")
    text = open(path, encoding="utf-8", errors="replace").read()
    try:
        aliased = any(isinstance(token, (yaml.AliasToken, yaml.AnchorToken)) for token in yaml.scan(text))
    except yaml.YAMLError as exc:
        raise UntrustedFileError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if aliased:
        raise UntrustedFileError(f"{path}: refused: it uses YAML anchors and aliases, which Hydra never writes and "
                                 f"which can expand a small file without bound")
    return yaml.safe_load(text)


def _is_hydra_key(key: Any) -> bool:
    return isinstance(key, str) and len(key) > 2 and key.startswith("_") and key.endswith("_")


def _nodes(config: Any, key: str) -> Iterator[tuple[str, dict]]:
    """Every mapping in ``config`` at any depth (inside lists too), with its dotted key."""
    if isinstance(config, dict):
        yield key, config
        for name, value in config.items():
            yield from _nodes(value, f"{key}.{name}" if key else str(name))
    elif isinstance(config, list):
        for index, value in enumerate(config):
            yield from _nodes(value, f"{key}[{index}]")


def check_targets(config: Any, allowed: Collection[str], where: str, partial: bool = False) -> None:
    """Refuse any ``_target_`` outside ``allowed``, at any depth, and every other Hydra key
    (``_args_``, ``_recursive_``, …) but ``_partial_`` where ``partial`` allows it."""
    nodes = list(_nodes(config, ""))
    for key, node in nodes:
        target = node.get("_target_")
        if "_target_" in node and not (isinstance(target, str) and target in allowed):
            raise UntrustedFileError(f"{where}: refused _target_ {target!r} at {key or 'the top level'}: only "
                                     f"this project's own classes may be built from a file")
    permitted = {"_target_", "_partial_"} if partial else {"_target_"}
    for key, node in nodes:
        extra = sorted(k for k in node if _is_hydra_key(k) and k not in permitted)
        if extra:
            raise UntrustedFileError(f"{where}: refused {extra} at {key or 'the top level'}: a config read from "
                                     f"a file holds only {sorted(permitted)} and arguments")


def build(config: Any, allowed: Collection[str], where: str, partial: bool = False) -> Any:
    """Build a constructor config (``_target_`` + keyword arguments, nested; with ``partial``,
    ``_partial_: true`` gives a :func:`functools.partial`) whose targets are all in ``allowed``;
    every other value is passed on as data. Unlike Hydra, no interpolation is resolved here."""
    if not isinstance(config, dict) or "_target_" not in config:
        raise UntrustedFileError(f"{where}: expected a constructor config with a _target_, got {type(config).__name__}")
    check_targets(config, allowed, where, partial)  # all of it before any constructor runs
    check_argument_types(config, where)
    return _build(config)


def conforms(value: Any, hint: Any) -> bool:
    """Whether a value read from a file (JSON/YAML data) fits a constructor's annotation; classes
    and callables conform (a nested part is checked where it is built)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, argument) for argument in arguments)
    if hint is None or hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in arguments
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, collections.abc.Sequence) or isinstance(value, (str, bytes)):
            return False
        if origin is tuple and len(arguments) > 1 and arguments[-1] is not Ellipsis:
            return len(value) == len(arguments) and all(map(conforms, value, arguments))
        # Tuple[int] as diffusers writes it: a tuple of ints, any length
        return all(conforms(item, arguments[0]) for item in value) if arguments else True
    if hint is dict or origin in (dict, collections.abc.Mapping):
        return isinstance(value, collections.abc.Mapping)
    return True


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def annotations_of(target: Any) -> dict[str, Any]:
    """The resolved annotations of a registered class's constructor (or a factory function's);
    none where they cannot be resolved."""
    function = inspect.unwrap(target.__init__ if inspect.isclass(target) else target)
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 — a name only a type checker sees: nothing to check against
        return {}


def check_settings(cls: type, settings: Any, key: str) -> None:
    """Each setting of another library's model (a diffusers UNet's config) fits the type its
    constructor declares: a list for a norm's eps or a bool for its group count would otherwise
    fail deep inside torch."""
    hints = annotations_of(cls)
    for name, value in settings.items():
        if name in hints and not conforms(value, hints[name]):
            raise ConfigError(f"{key}.{name}", f"must be {_describe(hints[name])}, got {type(value).__name__} {str(value)[:40]!r}")


def check_argument_types(config: Any, where: str) -> None:
    """Every plain value given to a registered constructor fits its annotation (a list for an
    ``eps: float``, ``null`` for a seed, ``true`` for a channel count are refused here, naming the
    key, instead of failing somewhere inside torch)."""
    for key, node in _nodes(config, ""):
        try:
            target = registry.resolve(node.get("_target_"))
        except (KeyError, TypeError):  # not a constructor node, or another library's class
            continue
        hints = annotations_of(target)
        for name, value in node.items():
            if name in hints and not (isinstance(value, dict) and "_target_" in value) and not conforms(value, hints[name]):
                raise UntrustedFileError(f"{where}: {key + '.' if key else ''}{name} must be {_describe(hints[name])}, "
                                         f"got {type(value).__name__} {str(value)[:40]!r}")


def _build(config: Any) -> Any:
    if isinstance(config, list):
        return [_build(value) for value in config]
    if not isinstance(config, dict):
        return config
    arguments = {name: _build(value) for name, value in config.items() if name not in ("_target_", "_partial_")}
    if "_target_" not in config:
        return arguments
    try:  # a registered class, by its path or a former one (osdic.registry)
        target = registry.resolve(config["_target_"])
    except KeyError:  # an allowed class of another library (torch's optimizers)
        module, _, name = config["_target_"].rpartition(".")
        target = getattr(importlib.import_module(module), name)
    return functools.partial(target, **arguments) if config.get("_partial_") else target(**arguments)
