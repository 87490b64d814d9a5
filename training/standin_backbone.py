"""A pretrained stand-in for Stable Diffusion, trained in a minute on a CPU.

SODEC and OSDiff decode through SD 2.1's frozen VAE decoder and UNet. Where the weights cannot
be downloaded (the demo machine, CI), a frozen *random* VAE decoder cannot decode anything, so
the diffusion stages would show nothing. This trains an SD-class backbone of the same diffusers
classes on a few photos instead — the AutoencoderKL as an autoencoder, then the UNet as a
denoiser (ε-prediction, t uniform) on its latents — and saves it with ``save_pretrained`` in SD's
folder layout (unet/, vae/, scheduler/, text_encoder/, tokenizer/), so the stages load it through
the same ``from_pretrained`` path as SD 2.1 (``model.codec.backbone.pretrained=<dir>``). The VAE's
``scaling_factor`` is set as SD's was: one over the standard deviation of its latents.

    python -m training.standin_backbone --photos DIR [DIR ...] --out .cache/standin-sd

A folder that already holds a stand-in trained with the same settings is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from omegaconf import OmegaConf

from osdic.images import list_images, open_rgb, to_tensor
from osdic import PROJECT_ROOT
from osdic.models.guidance import byte_level_clip_tokenizer
from osdic.utils.modules import plain

MANIFEST = "standin.json"


def _crops(images: list[torch.Tensor], batch: int, size: int, rng: random.Random) -> torch.Tensor:
    out = []
    for _ in range(batch):
        image = images[rng.randrange(len(images))]
        top, left = rng.randint(0, image.shape[-2] - size), rng.randint(0, image.shape[-1] - size)
        crop = image[:, top : top + size, left : left + size]
        out.append(crop.flip(-1) if rng.random() < 0.5 else crop)
    return torch.stack(out)


def _progress(what: str, step: int, steps: int, start: float, loss: float) -> None:
    if step % max(1, steps // 10) == 0 or step == steps:
        elapsed = time.perf_counter() - start
        print(f"[stand-in SD] {what} {step}/{steps}, loss {loss:.4f}, {elapsed:.0f} s "
              f"(ETA {elapsed / step * (steps - step):.0f} s)", flush=True)


def train_autoencoder(vae: AutoencoderKL, images, steps: int, batch: int, size: int, lr: float, kl_weight: float,
                      rng: random.Random) -> None:
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x = _crops(images, batch, size, rng) * 2 - 1
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = F.mse_loss(reconstruction, x) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _progress("autoencoder", step, steps, start, loss.item())


def train_denoiser(unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDPMScheduler, context: torch.Tensor,
                   images, steps: int, batch: int, size: int, lr: float, rng: random.Random) -> None:
    optimizer = torch.optim.Adam(unet.parameters(), lr=lr)
    alphas = scheduler.alphas_cumprod
    start = time.perf_counter()
    for step in range(1, steps + 1):
        with torch.no_grad():
            latent = vae.encode(_crops(images, batch, size, rng) * 2 - 1).latent_dist.sample()
            latent = latent * vae.config.scaling_factor
        noise = torch.randn_like(latent)
        t = torch.randint(0, len(alphas), (batch,))
        alpha_bar = alphas[t].view(-1, 1, 1, 1)
        noisy = alpha_bar.sqrt() * latent + (1 - alpha_bar).sqrt() * noise
        loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=context.expand(batch, -1, -1)).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _progress("denoiser", step, steps, start, loss.item())


@torch.no_grad()
def latent_std(vae: AutoencoderKL, images, size: int, rng: random.Random) -> float:
    latents = vae.encode(_crops(images, 32, size, rng) * 2 - 1).latent_dist.sample()
    return float(latents.std())


def build_standin(photos: Sequence[str | Path], out: str | Path, backbone: dict, text_config: dict,
                  vae_steps: int = 600, unet_steps: int = 600, batch: int = 8, size: int = 64,
                  vae_lr: float = 2e-3, unet_lr: float = 1e-3, kl_weight: float = 1e-6, seed: int = 0) -> Path:
    """Train (or reuse) the stand-in; return its directory."""
    out = Path(out)
    files = sorted(list_images(photos))
    # the photos by name and content, not path: a checkout moved elsewhere reuses its stand-in
    settings = dict(photos=[f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}" for p in files],
                    backbone=plain(backbone),
                    text_config=plain(text_config), vae_steps=vae_steps, unet_steps=unet_steps, batch=batch,
                    size=size, vae_lr=vae_lr, unet_lr=unet_lr, kl_weight=kl_weight, seed=seed)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    manifest = out / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()).get("key") == key:
        print(f"[stand-in SD] reusing {out} (trained with the same settings)", flush=True)
        return out
    torch.manual_seed(seed)
    rng = random.Random(seed)
    images = [to_tensor(open_rgb(p).image) for p in files]
    images = [image for image in images if min(image.shape[-2:]) >= size]
    if not images:
        raise ValueError(f"no photo of at least {size}×{size} px under {list(map(str, photos))}")
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL.from_config(plain(backbone["vae_config"]))
    unet = UNet2DConditionModel.from_config(plain(backbone["unet_config"]))
    scheduler = DDPMScheduler.from_config(plain(backbone["scheduler_config"]))
    tokenizer, text_encoder = byte_level_clip_tokenizer(), CLIPTextModel(CLIPTextConfig(**plain(text_config)))
    ids = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        context = text_encoder(ids).last_hidden_state  # the empty prompt, as SD's unconditional context

    print(f"[stand-in SD] training on {len(images)} photos → {out}", flush=True)
    train_autoencoder(vae, images, vae_steps, batch, size, vae_lr, kl_weight, rng)
    vae.eval().requires_grad_(False)
    vae.register_to_config(scaling_factor=1.0 / latent_std(vae, images, size, rng))
    train_denoiser(unet, vae, scheduler, context, images, unet_steps, batch, size, unet_lr, rng)

    out.mkdir(parents=True, exist_ok=True)
    for name, part in [("unet", unet), ("vae", vae), ("scheduler", scheduler), ("text_encoder", text_encoder),
                       ("tokenizer", tokenizer)]:
        part.save_pretrained(out / name)
    manifest.write_text(json.dumps({"key": key, **settings}, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", required=True, help="folders of training photos")
    parser.add_argument("--out", required=True)
    parser.add_argument("--backbone", default=str(PROJECT_ROOT / "conf" / "standin_backbone.yaml"),
                        help="a backbone config with unet_config, vae_config, scheduler_config and text_config")
    parser.add_argument("--vae-steps", type=int, default=600)
    parser.add_argument("--unet-steps", type=int, default=600)
    args = parser.parse_args()
    config = OmegaConf.to_container(OmegaConf.load(args.backbone))
    build_standin(args.photos, args.out, config, config["text_config"], args.vae_steps, args.unet_steps)


if __name__ == "__main__":
    main()
