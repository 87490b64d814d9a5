"""OSDiff's two entropy models at equal training: bits on Kodak, real against estimated, and the
time of entropy coding.

    python bench/osdiff_entropy_models.py [--steps 150] [--lambdas 1] [--backbone tiny|standin] [--kodak DIR]

1. Trains the tiny OSDiff (y with 32 channels) twice per λ (λ2, the rate weight) on the embedded
   photos, identically (same seed, data, steps and losses) but for the entropy model: ELIC (groups
   2, 2, 4, 8, 16) and the mean-scale hyperprior, both with 16 hyper channels; exports each. The
   backbone is the random tiny SD (whose decoder decodes nothing: the bits alone compare) or the
   demo's pretrained stand-in (``--backbone standin``, after ``make demo``: the PSNR means something,
   and with two or more λ the BD-rate of ELIC against the hyperprior is printed, at equal quality).
2. On the 24 Kodak images, per model: the rate estimated from the likelihoods (rounding, as
   coded), the real file (header and checksum included) and its entropy-coded strings alone,
   and the time of the entropy coder alone (y → strings, strings → ŷ) on the CPU, each the median
   of 3 after a warm-up.
3. The entropy coder's time at SD 2.1 size (M = 320, N = 192, random weights) on a 512×768
   image's y: the checkerboard's two passes per group cost time the hyperprior does not spend.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import torch

from osdic.codec.bitstream import unpack
from osdic.codec.image_codec import compress_image, decompress_bytes
from osdic.codec.package import load_package
from osdic.images import open_rgb, to_tensor
from osdic.metrics.bdrate import BDRateNotAvailable, bd_rate
from osdic.metrics.quality import psnr
from osdic.models.entropy import rate_bpp
from osdic.utils.devices import timed
from train import train
from training.demo import STANDIN
from training.run import compose_run_config

KODAK = Path(os.environ.get("KODAK_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"))
TINY = [
    "model=osdiff", "model.codec.backbone.lora_rank=null", "model/adversary/discriminator=unet_features_tiny",
    "model.codec.latent_channels=32", "model.codec.residual_blocks=1",
    "model.val_metrics=[psnr]", "trainer=cpu", "logger=none", "data.crop_size=128", "data.batch_size=4",
    "data.val_crop_size=128", "debug=fast",  # one validation batch, no sanity check; the steps are set below
]
ENTROPY_MODELS = {
    "ELIC": ["model/codec/entropy_model=elic", "model.codec.entropy_model.hyper_channels=16",
             "model.codec.entropy_model.groups=[2,2,4,8,16]", "model.codec.entropy_model.context_channels=[64,32]"],
    "hyperprior": ["model/codec/entropy_model=hyperprior", "model.codec.entropy_model.hyper_channels=16"],
}
BACKBONES = {"tiny": ["model/codec/backbone=tiny", "model/codec/guidance@model.codec.context=text_tiny"],
             "standin": ["model/codec/backbone=standin", f"model.codec.backbone.pretrained={STANDIN}"]}
SD21 = {"ELIC": ["model/codec/entropy_model=elic"],
        "hyperprior": ["model/codec/entropy_model=hyperprior"]}


def measure(package: Path, kodak: Path) -> dict[str, float]:
    codec, fingerprint = load_package(package)
    rows = []
    for path in sorted(kodak.glob("*.png")):
        x = to_tensor(open_rgb(path).image)[None]
        pixels = x.shape[-2] * x.shape[-1]
        with torch.inference_mode():  # the entropy model alone gives the estimate: no generative decode
            y = codec.analysis(codec.backbone.encode(codec.pad(x)))
            estimated = float(rate_bpp(codec.entropy_model(y)["likelihoods"], pixels))
        data = compress_image(codec, fingerprint, x)
        coded, encode = timed(lambda: codec.entropy_model.compress(y))
        _, decode = timed(lambda: codec.entropy_model.decompress(coded["strings"], coded["shape"]))
        payload = sum(len(s) for s in unpack(data).strings)
        # the bits mean something only beside the quality they buy
        quality = float(psnr(decompress_bytes(codec, fingerprint, data).clamp(0, 1), x)[0])
        rows.append(dict(estimated=estimated, real=len(data) * 8 / pixels, payload=payload * 8 / pixels,
                         psnr=quality, encode=encode, decode=decode))
    return {key: statistics.mean(row[key] for row in rows) for key in rows[0]} | {
        "images": len(rows), "strings": codec.num_strings}


def sd21_coding_time(name: str) -> tuple[float, float]:
    cfg = compose_run_config(["model=osdiff", *SD21[name]], Path(tempfile.mkdtemp()) / "run")
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model.codec.entropy_model)(latent_channels=cfg.model.codec.latent_channels)
    model.eval().update(force=True)
    y = torch.randn(1, cfg.model.codec.latent_channels, 512 // 16, 768 // 16) * 4
    coded, encode = timed(lambda: model.compress(y))
    _, decode = timed(lambda: model.decompress(coded["strings"], coded["shape"]))
    return encode, decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training batches per model")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1.0], help="λ2 of the runs (rate weight)")
    parser.add_argument("--backbone", choices=["tiny", "standin"], default="tiny")
    parser.add_argument("--kodak", type=Path, default=KODAK)
    parser.add_argument("--out", type=Path, default=Path("logs/bench_osdiff_entropy"))
    args = parser.parse_args()
    curves: dict[str, list[dict]] = {name: [] for name in ENTROPY_MODELS}
    for lmbda in args.lambdas:
        for name, overrides in ENTROPY_MODELS.items():
            run = args.out / f"{name}_lambda{lmbda:g}"
            started = time.perf_counter()
            train(compose_run_config([*TINY, *BACKBONES[args.backbone], *overrides,
                                      f"callbacks.rate_annealing.lambda_start={lmbda}",
                                      f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"],
                                     run))
            print(f"{name}, λ2 = {lmbda:g}: trained {args.steps} batches in {time.perf_counter() - started:.0f} s",
                  flush=True)
            curves[name].append(measure(run / "codec", args.kodak) | {"lambda": lmbda})
    results = {name: points[0] for name, points in curves.items()}
    threads = torch.get_num_threads()
    print(f"\ntiny OSDiff (y: 32 channels at H/16, {args.backbone} backbone), {args.steps} batches each, Kodak "
          f"({results['ELIC']['images']} images), CPU ({threads} threads):\n")
    print("| entropy model | λ2 | strings | estimated bpp | real file bpp | strings only bpp | PSNR (dB) "
          "| entropy encode | entropy decode |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, points in curves.items():
        for r in points:
            print(f"| {name} | {r['lambda']:g} | {r['strings']} | {r['estimated']:.4f} | {r['real']:.4f} "
                  f"({(r['real'] / r['estimated'] - 1) * 100:+.1f} %) | {r['payload']:.4f} | {r['psnr']:.2f} "
                  f"| {r['encode'] * 1e3:.1f} ms | {r['decode'] * 1e3:.1f} ms |")
    elic, hyperprior = results["ELIC"], results["hyperprior"]
    print(f"\nELIC against the hyperprior at λ2 = {args.lambdas[0]:g} (equal λ, not equal quality): estimated "
          f"{(elic['estimated'] / hyperprior['estimated'] - 1) * 100:+.1f} %, real files "
          f"{(elic['real'] / hyperprior['real'] - 1) * 100:+.1f} %")
    try:
        saving = bd_rate(*([p[key] for p in curves["hyperprior"]] for key in ("real", "psnr")),
                         *([p[key] for p in curves["ELIC"]] for key in ("real", "psnr")))
        print(f"BD-rate of ELIC against the hyperprior (real files, PSNR): {saving:+.1f} %")
    except BDRateNotAvailable as reason:
        print(f"BD-rate of ELIC against the hyperprior: n/a ({reason})")
    print(f"\nSD 2.1 size (M = 320, N = 192, random weights), y of a 512×768 image, CPU ({threads} threads):\n")
    print("| entropy model | entropy encode | entropy decode |")
    print("|---|---|---|")
    for name in SD21:
        encode, decode = sd21_coding_time(name)
        print(f"| {name} | {encode * 1e3:.0f} ms | {decode * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
