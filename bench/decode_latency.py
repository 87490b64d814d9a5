"""Per-module latency of SODEC's or OSDiff's decode path with SD 2.1-sized networks (random
weights, same FLOPs).

    python bench/decode_latency.py                       # SODEC, CPU, 128×128 (default on CPU)
    python bench/decode_latency.py --sizes 512x512 512x768 --dtype bf16   # on a GPU
    python bench/decode_latency.py --model osdiff --sizes 512x768 [-- Hydra overrides of the model, e.g.
        model/codec/control=controlnet model/codec/entropy_model=hyperprior]

SODEC: full HiFiC, SD 2.1-base's UNet and VAE from their real configs, and a CLIP ViT-L/14
vision tower from its config; OSDiff: its config (ELIC entropy model, ControlNet-XS control)
on SD 2.1-base's UNet and VAE. All with random weights, timed at batch size 1, after warm-up,
with device synchronisation, per module. Entropy decoding runs on the CPU by design. OSDiff's
figures add the total without entropy decoding: the parts its paper timed.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir

from osdic.metrics.latency import decode_breakdown
from osdic.utils.devices import resolve_device

CONF = str(Path(__file__).resolve().parents[1] / "conf")
CLIP_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14)


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def build_sodec(overrides: list[str]):
    cfg = _compose(["model=sodec_stage2", "model/codec/backbone=sd21_random", "model.distortion.lpips_weight=0",
                    *overrides])
    return hydra.utils.instantiate(cfg.model.codec, guidance={"vit": {"pretrained": None, "config": CLIP_L14}})


def build_osdiff(overrides: list[str]):
    cfg = _compose(["model=osdiff", "model/codec/backbone=sd21_random",
                    "model/codec/guidance@model.codec.context=text_random", *overrides])
    return hydra.utils.instantiate(cfg.model.codec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=None, help="HxW, e.g. 512x512 (default: GPU 512x512 512x768, CPU 128x128)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--model", choices=["sodec", "osdiff"], default="sodec")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the model's config")
    args = parser.parse_args()
    device = resolve_device("auto")
    sizes = args.sizes or (["512x512", "512x768"] if device.type == "cuda" else ["128x128"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    repeat = args.repeat or (10 if device.type == "cuda" else 3)
    build = {"sodec": build_sodec, "osdiff": build_osdiff}[args.model]
    model = build(args.overrides)
    model.update(force=True)  # the coding tables, from the float32 weights
    model = model.to(device=device, dtype=dtype).eval()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    for size in sizes:
        h, w = map(int, size.split("x"))
        figures = decode_breakdown(model, torch.rand(1, 3, h, w), repeat=repeat)
        print(f"\n{args.model} {' '.join(args.overrides)}: {name}, {args.dtype or dtype}, batch 1, {h}×{w} "
              f"(median of {repeat} after warm-up):")
        for module, seconds in figures.items():
            print(f"  {module:<56} {seconds * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
