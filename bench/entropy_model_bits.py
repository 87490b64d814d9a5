"""The two entropy models alone, on the same latents: the bits each needs for one fixed y.

    python bench/entropy_model_bits.py [--steps 3000] [--codec DIR] [--seeds 0 1] [--latent-scale 1] [--kodak DIR]

The end-to-end comparison (bench/osdiff_entropy_models.py) trains the transforms with each entropy
model, so y, the rate and the quality all differ, and after a few hundred CPU batches the quality
is flat: no BD-rate. Here y is fixed. A trained encoder (default: the demo's stage-1 HiFiC at
λ = 0.012, ``make demo`` first) gives y for Kodak 1–18 (training: random 16 × 16 windows of y,
256² of image) and 19–24 (held out, whole images). Each entropy model learns the rate of that y
alone (loss: bpp of ŷ and ẑ, plus the bottleneck's aux loss), with the same seed, batches and
steps: ELIC (groups 4, 4, 8, 16, 32 of the 64 channels, ELIC's proportions; channel context 64, 32)
and the mean-scale hyperprior, both with N = 64 hyper channels. Both quantise ŷ = round(y − μ) + μ,
an error uniform in [−½, ½] either way, so the bits alone compare. On the held-out images: the
rate estimated from the likelihoods and the real strings (every group's and ẑ's bytes) per
original pixel, and ELIC's saving over the hyperprior.

``--latent-scale k`` codes k·y instead of y: the same latent, quantised k times finer, so the two
models can be compared at a higher rate than the codec's own y gives (its y is small against the
quantisation step: almost every ŷ rounds onto its predicted mean).
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import os
import random
from pathlib import Path

import torch
from compressai.entropy_models import EntropyBottleneck

from osdic.codec.package import load_package
from osdic.images import open_rgb, to_tensor
from osdic.models.entropy import ElicEntropyModel, HyperpriorEntropyModel, rate_bpp

REPO = Path(__file__).resolve().parents[1]
KODAK = Path(os.environ.get("KODAK_DIR", REPO.parent / "shared" / "data" / "kodak"))
DEMO_CODEC = REPO / "logs" / "demo" / "stage1_lambda0.012" / "codec"
WINDOW, BATCH, HYPER = 16, 8, 64


@torch.no_grad()
def latents(codec, paths: list[Path], scale: float = 1.0) -> list[tuple[torch.Tensor, int]]:
    """(scale·y, original pixels) per image."""
    out = []
    for path in paths:
        x = to_tensor(open_rgb(path).image)[None]
        out.append((scale * codec.encoder(codec.pad(x)), x.shape[-2] * x.shape[-1]))
    return out


def build(name: str, channels: int) -> torch.nn.Module:
    if name == "ELIC":
        groups = [max(channels // d, 1) for d in (16, 16, 8, 4)]  # ELIC's proportions, the rest last
        return ElicEntropyModel(channels, HYPER, groups=[*groups, channels - sum(groups)], context_channels=[64, 32])
    return HyperpriorEntropyModel(channels, HYPER)


def train_rate(model: torch.nn.Module, train_y: list[torch.Tensor], steps: int, seed: int) -> None:
    rng = random.Random(seed)
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main, lr=1e-3), torch.optim.Adam(aux, lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for step in range(steps):
        windows = []
        for _ in range(BATCH):
            y = train_y[rng.randrange(len(train_y))]
            top, left = rng.randrange(y.shape[-2] - WINDOW + 1), rng.randrange(y.shape[-1] - WINDOW + 1)
            windows.append(y[0, :, top : top + WINDOW, left : left + WINDOW])
        out = model(torch.stack(windows))
        loss = rate_bpp(out["likelihoods"], (16 * WINDOW) ** 2)
        aux_loss = sum(m.loss() for m in model.modules() if isinstance(m, EntropyBottleneck))
        optimizer.zero_grad(set_to_none=True)
        aux_optimizer.zero_grad(set_to_none=True)
        (loss + aux_loss).backward()
        optimizer.step()
        aux_optimizer.step()
        schedule.step()
        if (step + 1) % 500 == 0:
            print(f"    step {step + 1}: training bpp {float(loss.detach()):.4f}", flush=True)


@torch.no_grad()
def held_out_rates(model: torch.nn.Module, held_out) -> tuple[float, float]:
    """Mean over images of (estimated bpp with rounding, bpp of the real strings)."""
    model.update(force=True)
    model.eval()
    estimated, real = [], []
    for y, pixels in held_out:
        estimated.append(float(rate_bpp(model(y)["likelihoods"], pixels)))
        strings = model.compress(y)["strings"]
        real.append(8 * sum(len(s) for per_string in strings for s in per_string) / pixels)
    return sum(estimated) / len(estimated), sum(real) / len(real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--codec", type=Path, default=DEMO_CODEC, help="a stage-1 codec package (its encoder gives y)")
    parser.add_argument("--latent-scale", type=float, default=1.0,
                        help="code this multiple of y (a finer quantisation of the same latent: a higher rate)")
    parser.add_argument("--kodak", type=Path, default=KODAK)
    args = parser.parse_args()
    if not args.codec.is_dir():
        raise SystemExit(f"{args.codec} is not a codec package: run `make demo` first, or give --codec")
    codec, _ = load_package(args.codec)
    paths = [args.kodak / f"kodim{i:02d}.png" for i in range(1, 25)]
    train_y = [y for y, _ in latents(codec, paths[:18], args.latent_scale)]
    held_out = latents(codec, paths[18:], args.latent_scale)
    channels = train_y[0].shape[1]
    with torch.no_grad():  # what the codec's own entropy model spends on the same images, and y's scale
        own = [float(rate_bpp(codec.entropy_model(y / args.latent_scale)["likelihoods"], pixels))
               for y, pixels in held_out]
    spread = torch.cat([y.std(dim=(0, 2, 3)) for y, _ in held_out])
    print(f"held out: the codec's own entropy model {sum(own) / len(own):.4f} bpp on y (estimated, rounded); "
          f"the coded latent ({args.latent_scale:g}·y) has per-channel standard deviation "
          f"{float(spread.min()):.2f}–{float(spread.max()):.2f} (quantisation step 1)")
    print(f"y from {args.codec}: {channels} channels; {args.steps} steps of {BATCH} windows of "
          f"{WINDOW}² (256² of image) per model and seed, Adam 1e-3 with cosine decay\n")
    rows = []
    for seed in args.seeds:
        for name in ("hyperprior", "ELIC"):
            print(f"  {name}, seed {seed}", flush=True)
            torch.manual_seed(seed)  # the same seed draws each model's initial weights and its noise
            model = build(name, channels)
            train_rate(model, train_y, args.steps, seed)
            rows.append((name, seed, *held_out_rates(model, held_out)))
    print("\n| entropy model | seed | estimated bpp (rounded) | real strings bpp |\n|---|---|---|---|")
    for name, seed, estimated, real in rows:
        print(f"| {name} | {seed} | {estimated:.4f} | {real:.4f} |")
    for seed in args.seeds:
        hyper, elic = (next(r for r in rows if r[0] == n and r[1] == seed) for n in ("hyperprior", "ELIC"))
        print(f"seed {seed}: ELIC's real strings {100 * (elic[3] / hyper[3] - 1):+.1f} % against the hyperprior's "
              f"(estimated {100 * (elic[2] / hyper[2] - 1):+.1f} %)")


if __name__ == "__main__":
    main()
