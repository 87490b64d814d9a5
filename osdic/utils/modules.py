"""Which weights a checkpoint or codec package must carry, and how to build modules back."""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn


class ExternalWeights(nn.Module):
    """A module whose frozen weights come from outside the run (a pretrained download or the
    backbone id). Those weights never go into checkpoints or packages: they are rebuilt from the
    source. Its trainable parameters (LoRA) are saved. A module built from a config with random
    weights has no source to rebuild from and sets ``reloadable = False``: it is saved whole."""

    @property
    def reloadable(self) -> bool:
        return getattr(self, "hparams", {}).get("pretrained") is not None


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
    """OmegaConf containers → plain dicts/lists (for JSON and third-party constructors)."""
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def module_config(module: nn.Module) -> dict:
    """The instantiation config of a module that records its constructor arguments in
    ``hparams`` (nested modules become nested configs): ``_target_`` + keyword arguments only,
    what :func:`osdic.utils.untrusted.build` takes back."""
    cls = type(module)
    config: dict = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    for key, value in module.hparams.items():
        if isinstance(value, nn.Module):
            config[key] = module_config(value)
        else:
            config[key] = plain(value)
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
