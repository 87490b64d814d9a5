"""Parameters of every OSDiff part at SD 2.1 size, for both control modules, built from the
configs (SD 2.1-base's real UNet/VAE configs, random weights: no download).

    python bench/osdiff_parameters.py

Builds the default OSDiff training module (ELIC entropy model, ControlNet-XS control, UNet-feature
discriminator) and, from their config nodes, the alternatives: the full ControlNet and the
mean-scale hyperprior. Prints trainable and frozen parameter counts per part.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from torch import nn

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SD21 = ["model=osdiff", "model/codec/backbone=sd21_random", "model/codec/guidance@model.codec.context=text_random",
        "model.val_metrics=[psnr]"]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=[*SD21, *overrides])


def count(module: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad == trainable)


def main() -> None:
    torch.manual_seed(0)
    module = hydra.utils.instantiate(_compose([]).model)
    codec = module.codec
    full_controlnet = hydra.utils.instantiate(_compose(["model/codec/control=controlnet"]).model.codec.control)(
        unet_config=codec.backbone.unet_config, conditioning_channels=codec.backbone.unet.config.in_channels)
    hyperprior = hydra.utils.instantiate(
        _compose(["model/codec/entropy_model=hyperprior"]).model.codec.entropy_model)(
        latent_channels=codec.constructor_arguments["latent_channels"])

    shared = {"G_a (analysis)": count(codec.analysis), "entropy model: ELIC (default)": count(codec.entropy_model),
              "G_s (synthesis)": count(codec.synthesis)}
    controls = {"ControlNet-XS (default)": count(codec.control), "full ControlNet": count(full_controlnet)}
    discriminator = count(module.adversary.discriminator)
    frozen = {"SD UNet (frozen)": count(codec.backbone.unet, trainable=False),
              "SD VAE (frozen)": count(codec.backbone.vae, trainable=False)}
    assert count(codec.backbone) == 0, "OSDiff trains no backbone weight"

    def millions(n: int) -> str:
        return f"{n / 1e6:,.1f} M"

    columns = list(controls)
    print(f"| part | {' | '.join(f'with {name}' for name in columns)} |")
    print(f"|---|{'---|' * len(columns)}")
    for part, n in shared.items():
        print(f"| {part} | {' | '.join(millions(n) for _ in columns)} |")
    print(f"| control module | {' | '.join(millions(controls[name]) for name in columns)} |")
    generator = {name: sum(shared.values()) + controls[name] for name in columns}
    print(f"| **generator, trainable** | {' | '.join(f'**{millions(generator[name])}**' for name in columns)} |")
    print(f"| discriminator (UNet features) | {' | '.join(millions(discriminator) for _ in columns)} |")
    print(f"| **all trainable** | {' | '.join(f'**{millions(generator[name] + discriminator)}**' for name in columns)} |")
    for part, n in frozen.items():
        print(f"| {part} | {' | '.join(millions(n) for _ in columns)} |")
    print(f"\nentropy model: the mean-scale hyperprior (option) instead of ELIC: {millions(count(hyperprior))} "
          f"(ELIC: {millions(shared['entropy model: ELIC (default)'])})")


if __name__ == "__main__":
    main()
