"""The classes a file may name, registered where they are defined, and the constructor arguments
each instance of one records.

A codec package's ``codec.json`` may build only classes registered as :data:`CODEC` parts (and a
run's model config, read by ``evaluate.py``, only those and the training side's :data:`MODEL`
parts): files are data, and a ``_target_`` is an import path called with the file's arguments.
Registering is the decorator on the class — compressai's ``register_model`` is the model — so the
allowed set is where the classes are, not a list kept beside them.

A registered class records the arguments it was built with (``constructor_arguments``), from
which :func:`osdic.utils.modules.module_config` writes it back as the config that rebuilds it: an
argument given as a factory (a partial the class calls to build a part) is recorded as the part
it built (``self.<argument>``), and a class may resolve an argument it defaulted
(``resolved_arguments``) so a package keeps the value it was built with.
"""

from __future__ import annotations

import functools
import inspect
from collections import defaultdict
from typing import Any, Callable, TypeVar

from torch import nn

#: what a codec package may build: codecs and the parts their constructors take
CODEC = "codec"
#: what a run's model config may build besides: the training modules, their losses and discriminators
MODEL = "model"

_REGISTERED: dict[str, dict[str, Any]] = defaultdict(dict)
T = TypeVar("T")


def registered(*kinds: str) -> frozenset[str]:
    """The import paths registered under any of ``kinds``."""
    return frozenset(name for kind in kinds for name in _REGISTERED[kind])


def register(kind: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Register a class (or a factory function) under ``kind``, by its import path and by
    ``aliases`` (the paths it had before a rename, so that packages written then still load)."""

    def decorate(target: T) -> T:
        for name in (f"{target.__module__}.{target.__qualname__}", *aliases):
            _REGISTERED[kind][name] = target
        if inspect.isclass(target):  # its own __init__ or the one it inherits
            target.__init__ = _recording(target, target.__init__)
        return target

    return decorate


def _recording(cls: type, init: Callable) -> Callable:
    signature = inspect.signature(init)
    named = [name for name, parameter in signature.parameters.items()
             if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)][1:]

    @functools.wraps(init)
    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if type(self) is not cls:  # a subclass records its own
            return
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = {name: bound.arguments[name] for name in named}
        for name, value in arguments.items():
            built = getattr(self, name, None)
            if not isinstance(value, nn.Module) and callable(value) and isinstance(built, nn.Module):
                arguments[name] = built  # a factory: the part it built
        resolve = getattr(self, "resolved_arguments", None)
        self.constructor_arguments = resolve(arguments) if resolve else arguments

    return recording_init


def resolve(name: str) -> Any:
    """The registered class or function of an import path (any kind)."""
    for kind in _REGISTERED.values():
        if name in kind:
            return kind[name]
    raise KeyError(name)
