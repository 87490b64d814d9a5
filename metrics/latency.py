"""Honest latency: batch size 1, warm-up first, device synchronisation around every timed call,
medians over repeats, entropy coding included, and the decode path broken down per module."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import Tensor

from models.hific import HiFiCCompressor
from models.osdiff import OSDiff
from models.sodec import SODEC

ENTROPY_DECODING = "entropy decoding (CPU)"


def timed(fn: Callable, device: torch.device, repeat: int, warmup: int = 1):
    """→ (the last result, median seconds over ``repeat`` runs after ``warmup`` runs)."""
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


@torch.inference_mode()
def decode_breakdown(codec, x: Tensor, repeat: int = 3, warmup: int = 1) -> dict[str, float]:
    """Seconds per module of ``codec``'s decode path for image ``x`` (1×3×H×W in [0, 1])."""
    param = next(p for p in codec.parameters())
    device, dtype = param.device, param.dtype
    coded = codec.compress(x.to(device=device, dtype=dtype))
    image_size = x.shape[-2:]
    figures: dict[str, float] = {}

    def step(name: str, fn: Callable):
        result, figures[name] = timed(fn, device, repeat, warmup)
        return result

    vae = codec.vae_codec if isinstance(codec, SODEC) else codec
    if isinstance(codec, (SODEC, HiFiCCompressor)):
        y_hat, z_hat = step(ENTROPY_DECODING, lambda: vae.decode_latents(coded["strings"], coded["shape"]))
        y_hat, z_hat = y_hat.to(device, dtype), z_hat.to(device, dtype)
        x_hat_f = step("D_a (fidelity decoder)", lambda: vae.fidelity_decoder(y_hat))
        if isinstance(codec, SODEC):
            x_hat_f = x_hat_f[..., : image_size[0], : image_size[1]]
            context = step("guidance (FGM: ViT + F_p)", lambda: codec.guidance(x_hat_f, z_hat))
            latent_t = step("H_s + T_s", lambda: codec.transform(y_hat, codec.hyper_synthesis(z_hat)))
            latent_0 = step("UNet (one step)",
                            lambda: codec.backbone.predict_clean_latent(latent_t, codec.timestep, context))
            step("D_m (SD VAE decoder)", lambda: codec.backbone.decode(latent_0))
    elif isinstance(codec, OSDiff):
        y_hat, _ = step(ENTROPY_DECODING, lambda: codec.entropy_model.decompress(coded["strings"], coded["shape"]))
        y_c = step("G_s (synthesis)", lambda: codec.synthesis(y_hat.to(device, dtype)))
        generator = torch.Generator(device=device)
        y_r = step("start latent + control module + UNet (one step)",
                   lambda: codec.denoise(codec.start_latent(y_c, None, generator.manual_seed(codec.noise_seed)), y_c))
        step("D_SD (SD VAE decoder)", lambda: codec.backbone.decode(y_r))
    else:
        raise TypeError(f"no decode breakdown for {type(codec).__name__}")
    figures["total"] = sum(figures.values())
    if isinstance(codec, OSDiff):
        # OSDiff's reported 0.060 s timed these parts: no entropy decoding (and no synchronisation)
        figures["total without entropy decoding (the OSDiff paper's parts)"] = figures["total"] - figures[ENTROPY_DECODING]
    return figures
