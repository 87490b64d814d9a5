"""Which weights a checkpoint or codec package must carry, and how to build modules back."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Mapping, Sequence
from typing import Iterator

import torch
from torch import nn

_ARCHITECTURE_ONLY = contextvars.ContextVar("architecture_only", default=False)


class _ShapesOnly(torch.overrides.TorchFunctionMode):
    """Inside a ``meta`` device context: the few small tensors libraries build their architecture
    from (a channel ramp's ``linspace`` read back with ``tolist()``) stay real, on the CPU, and an
    op mixing a real CPU tensor (a constant made with a legacy constructor, which ignores the device
    context) with meta tensors sees it on ``meta`` too."""

    COMPUTED_ON_CPU = (torch.linspace, torch.logspace)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.COMPUTED_ON_CPU:
            kwargs.setdefault("device", "cpu")
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if any(t.device.type == "meta" for t in tensors):
            meta = lambda a: a.to("meta") if isinstance(a, torch.Tensor) and a.device.type == "cpu" else a  # noqa: E731
            args, kwargs = tuple(meta(a) for a in args), {k: meta(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


@contextlib.contextmanager
def architecture_only() -> Iterator[None]:
    """Build modules as shapes only: every parameter and buffer on the ``meta`` device (nothing is
    allocated), and pretrained parts from their config files alone (:func:`architecture_only_build`),
    so a codec package's sizes can be checked against its weights file before anything is allocated."""
    token = _ARCHITECTURE_ONLY.set(True)
    try:
        with torch.device("meta"), _ShapesOnly():
            yield
    finally:
        _ARCHITECTURE_ONLY.reset(token)


def architecture_only_build() -> bool:
    """Whether a pretrained part should build from its config without reading its weights."""
    return _ARCHITECTURE_ONLY.get()


class ExternalWeights(nn.Module):
    """A module whose frozen weights come from outside the run (a pretrained download or the
    backbone id, its ``pretrained_source``). Those weights never go into checkpoints or packages:
    they are rebuilt from the source. Its trainable parameters (LoRA) are saved. A module built from
    a config with random weights has no source to rebuild from and is saved whole."""

    pretrained_source: str | None = None

    @property
    def reloadable(self) -> bool:
        return self.pretrained_source is not None


def external_keys(module: nn.Module) -> set[str]:
    """State-dict keys of frozen weights that are rebuilt from their source, not stored."""
    keys: set[str] = set()
    for prefix, sub in module.named_modules():
        if isinstance(sub, ExternalWeights) and sub.reloadable:
            dot = f"{prefix}." if prefix else ""
            for name, value in sub.state_dict(keep_vars=True).items():
                if not (isinstance(value, nn.Parameter) and value.requires_grad):
                    keys.add(dot + name)
    return keys


def portable_state_dict(module: nn.Module) -> dict:
    """The state a checkpoint or package stores: everything but the external frozen weights."""
    skip = external_keys(module)
    return {k: v for k, v in module.state_dict().items() if k not in skip}


def check_loaded_keys(module: nn.Module, state_keys, what: str) -> None:
    """Refuse a state that misses stored weights or holds unknown ones."""
    expected = set(module.state_dict()) - external_keys(module)
    missing, unexpected = sorted(expected - set(state_keys)), sorted(set(state_keys) - set(module.state_dict()))
    if missing or unexpected:
        raise KeyError(f"{what}: missing keys {missing[:10]}{'…' if len(missing) > 10 else ''}, "
                       f"unexpected keys {unexpected[:10]}{'…' if len(unexpected) > 10 else ''}")


def plain(value):
    """Mappings and sequences (a config library's containers among them) → plain dicts and lists,
    for JSON and for third-party constructors."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(item) for item in value]
    return value


def module_config(module: nn.Module) -> dict:
    """The instantiation config of a registered module (:mod:`osdic.registry`) from the arguments
    it recorded (nested modules become nested configs): ``_target_`` + keyword arguments only,
    what :func:`osdic.utils.untrusted.build` takes back."""
    cls = type(module)
    if not hasattr(module, "constructor_arguments"):
        raise TypeError(f"{cls.__qualname__} is not a registered class (osdic.registry.register): it cannot be "
                        f"written as a config")
    config: dict = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    for key, value in module.constructor_arguments.items():
        config[key] = module_config(value) if isinstance(value, nn.Module) else plain(value)
    return config


def resize_buffers_like(module: nn.Module, state: dict) -> None:
    """Entropy-coder CDF tables change size with ``update()``: match the stored sizes."""
    for name, buffer in module.named_buffers():
        if name in state and state[name].shape != buffer.shape:
            buffer.resize_(state[name].shape)


def load_portable_state_dict(module: nn.Module, state: dict, what: str) -> None:
    check_loaded_keys(module, state, what)
    resize_buffers_like(module, state)
    module.load_state_dict(state, strict=False)
