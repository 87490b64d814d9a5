"""How fast the stage-1 recipe learns: RD on held-out photos after a fixed CPU budget.

    python bench/learning.py --minutes 5 [--lambdas 0.004 0.012 0.04] [--train DIR] [--held-out DIR]
                             [--override KEY=VALUE …]   (a change to our recipe, e.g. model.optimizer.lr=1e-3)

For each λ, two codecs train side by side, one CPU core each, for the same CPU time on the same
photos (random 128² crops, batch 8, the same loss d + λ·R with d the MSE on [−1, 1]):
  ours       the framework's stage-1 recipe (``experiment=demo``: Lightning, the datamodule,
             the tiny HiFiC) through ``train()``, exported as a codec package;
  reference  a bare PyTorch loop on compressai's MeanScaleHyperprior (N = 64, M = 96), Adam 1e-3,
             gradients clipped to norm 1 as compressai's example training script does (unclipped,
             it diverged at λ = 0.004 within 10 CPU min: 5 dB at 12 bpp; BENCHMARKS.md), crops
             cut from photos held in memory — the bar the recipe must meet.
Both are then coded through real files on the held-out photos (bpp of the whole file over the
original pixels, PSNR and MS-SSIM of the 8-bit decoded image), beside JPEG on a quality grid, and
the BD-rates are printed. Defaults: Kodak for training, the demo's held-out scikit-image photos.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
KODAK = Path(os.environ.get("KODAK_DIR", REPO.parent / "shared" / "data" / "kodak"))
CROP, BATCH = 128, 8


def load_photos(folder: Path) -> list[tuple[str, torch.Tensor]]:
    from osdic.images import list_images, open_rgb, to_tensor

    return [(str(p.relative_to(folder)), to_tensor(open_rgb(p).image)) for p in list_images([folder])]


def train_ours(train_dir: Path, lmbda: float, seconds: float, out: Path, overrides: Sequence[str] = ()) -> Path:
    """The framework's recipe (changed by Hydra ``overrides``) for ``seconds`` of this process's CPU
    time → a codec package."""
    from train import train
    from training.run import compose_run_config

    cfg = compose_run_config([
        "experiment=demo", "data=folder", f"data.train_dirs=[{train_dir}]", "data.val_dirs=null",
        "data.num_workers=0", "data.cache_decoded=true", f"callbacks.rate_annealing.lambda_start={lmbda}", "logger=none",
        "trainer.max_steps=1000000", "trainer.val_check_interval=1000000", "+trainer.limit_val_batches=0",
        "+trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.model_checkpoint",
        "+callbacks.cpu_budget._target_=callbacks.budget.CPUTimeBudget", f"+callbacks.cpu_budget.seconds={seconds}",
        *overrides,
    ], out)
    _, trainer = train(cfg)
    (out / "steps.json").write_text(json.dumps({"steps": trainer.fit_loop.epoch_loop.batch_progress.total.completed}))
    return out / "codec"


def reference_loss(output: dict, x: torch.Tensor, lmbda: float) -> torch.Tensor:
    """The bare loop's d + λ·R: d the MSE on [−1, 1] (4× the MSE on [0, 1]), R in bpp of the crop."""
    from osdic.models.entropy import rate_bpp

    return 4 * torch.mean((output["x_hat"] - x) ** 2) + lmbda * rate_bpp(output["likelihoods"], CROP * CROP)


def train_reference(train_dir: Path, lmbda: float, seconds: float, out: Path) -> Path:
    """The bare loop: compressai's mean-scale hyperprior, photos in memory, no framework."""
    from compressai.models import MeanScaleHyperprior

    torch.manual_seed(0)
    rng = random.Random(0)
    photos = [image for _, image in load_photos(train_dir) if min(image.shape[-2:]) >= CROP]
    model = MeanScaleHyperprior(64, 96)
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main, lr=1e-3), torch.optim.Adam(aux, lr=1e-3)
    start, steps = time.process_time(), 0
    while time.process_time() - start < seconds:
        batch = []
        for _ in range(BATCH):
            image = photos[rng.randrange(len(photos))]
            top, left = rng.randint(0, image.shape[1] - CROP), rng.randint(0, image.shape[2] - CROP)
            crop = image[:, top : top + CROP, left : left + CROP]
            batch.append(crop.flip(-1) if rng.random() < 0.5 else crop)
        x = torch.stack(batch)
        output = model(x)
        loss = reference_loss(output, x, lmbda)
        optimizer.zero_grad(set_to_none=True)
        aux_optimizer.zero_grad(set_to_none=True)
        (loss + model.aux_loss()).backward()
        torch.nn.utils.clip_grad_norm_(main, 1.0)
        optimizer.step()
        aux_optimizer.step()
        steps += 1
    model.update(force=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "reference.pt")
    (out / "steps.json").write_text(json.dumps({"steps": steps}))
    return out / "reference.pt"


def training_cost(overrides: Sequence[str] = (), steps: int = 10) -> dict[str, tuple[float, float]]:
    """Per codec: (GFLOP, CPU seconds) of one training batch, forward, backward and the optimizer
    step, batch 8 at 128²; the seconds are the median of ``steps`` batches after one warm-up, on
    this process's threads (one, as the training jobs)."""
    import hydra
    from compressai.models import MeanScaleHyperprior
    from torch.utils.flop_counter import FlopCounterMode

    from training.run import compose_run_config

    cfg = compose_run_config(["experiment=demo", *overrides], Path(tempfile.mkdtemp()))
    x = torch.rand(BATCH, 3, CROP, CROP)
    cost = {}
    for name, model in (("ours", hydra.utils.instantiate(cfg.model.codec)), ("reference", MeanScaleHyperprior(64, 96))):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            output = model.train()(x)
            loss = reference_loss(output, x, 0.012)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        with FlopCounterMode(display=False) as counter:
            step()
        seconds = []
        for _ in range(steps):
            start = time.process_time()
            step()
            seconds.append(time.process_time() - start)
        cost[name] = (counter.get_total_flops() / 1e9, float(np.median(seconds)))
    return cost


def measure(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[float, float]:
    from osdic.metrics.quality import ms_ssim, psnr

    x_hat = x_hat.clamp(0, 1).mul(255).round().div(255)
    ssim = float(ms_ssim(x_hat, x)[0]) if min(x.shape[-2:]) > 160 else float("nan")
    return float(psnr(x_hat, x)[0]), ssim


@torch.no_grad()
def evaluate_ours(package: Path, held_out) -> dict:
    from osdic.codec.image_codec import compress_image, decompress_bytes
    from osdic.codec.package import load_package

    codec, fingerprint = load_package(package)
    rows = []
    for _, x in held_out:
        data = compress_image(codec, fingerprint, x)
        rows.append((len(data) * 8 / x[0].numel(), *measure(x[None], decompress_bytes(codec, fingerprint, data))))
    return summarise(rows)


@torch.no_grad()
def evaluate_reference(weights: Path, held_out) -> dict:
    """Real strings of the reference model; the file adds the same 34-byte header ours has."""
    from compressai.models import MeanScaleHyperprior

    from osdic.models.entropy import pad_to_multiple

    model = MeanScaleHyperprior(64, 96)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.update(force=True)
    model.eval()
    rows = []
    for _, x in held_out:
        h, w = x.shape[-2:]
        coded = model.compress(pad_to_multiple(x[None]))
        x_hat = model.decompress(coded["strings"], coded["shape"])["x_hat"][..., :h, :w]
        size = sum(len(s[0]) for s in coded["strings"]) + 34
        rows.append((size * 8 / (h * w), *measure(x[None], x_hat)))
    return summarise(rows)


JPEG_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 75, 90)


def evaluate_jpeg(held_out, qualities=JPEG_QUALITIES) -> list[dict]:
    from PIL import Image

    from osdic.images import to_tensor
    from osdic.metrics import baselines

    points = []
    for quality in qualities:
        rows = []
        for _, x in held_out:
            image = Image.fromarray(x.mul(255).round().byte().permute(1, 2, 0).numpy())
            data = baselines.encode(image, "jpeg", quality)
            rows.append((len(data) * 8 / (image.width * image.height),
                         *measure(x[None], to_tensor(baselines.decode(data))[None])))
        points.append(summarise(rows))
    return points


def summarise(rows) -> dict:
    bpp, psnr_values, ssim = (np.array(column, dtype=float) for column in zip(*rows))
    return {"bpp": float(bpp.mean()), "psnr": float(psnr_values.mean()), "ms_ssim": float(np.nanmean(ssim))}


def bd(anchor: list[dict], test: list[dict], metric: str) -> str:
    """The BD-rate as printed: a percentage, or n/a with the reason (curves that do not overlap, or
    whose quality does not rise with rate, have none)."""
    from osdic.metrics.bdrate import BDRateNotAvailable, bd_rate

    try:
        return f"{bd_rate(*([p[k] for p in anchor] for k in ('bpp', metric)), *([p[k] for p in test] for k in ('bpp', metric))):+.1f} %"
    except BDRateNotAvailable as reason:
        return f"n/a ({reason})"


def worker(args) -> None:
    """One training job in its own process (one CPU core)."""
    torch.set_num_threads(1)
    if args.job == "ours":
        train_ours(args.train, args.lmbda, args.minutes * 60, args.out, args.override)
    else:
        train_reference(args.train, args.lmbda, args.minutes * 60, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5, help="CPU minutes per model")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.004, 0.012, 0.04])
    parser.add_argument("--train", type=Path, default=KODAK)
    parser.add_argument("--held-out", type=Path, default=None,
                        help="a folder of photos not used for training (default: the demo's held-out photos)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides of our recipe (experiment=demo), e.g. model.optimizer.lr=1e-3")
    parser.add_argument("--job", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--lmbda", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        return worker(args)
    os.environ.setdefault("WANDB_MODE", "offline")
    out = args.out or Path(tempfile.mkdtemp(prefix="learning-"))
    if args.held_out is None:
        from datamodules.samples import materialize_samples

        args.held_out = materialize_samples(REPO / ".cache" / "skimage_samples")[1]
    held_out = load_photos(args.held_out)
    curves: dict[str, list[dict]] = {"ours": [], "reference": []}
    for lmbda in args.lambdas:
        print(f"λ = {lmbda}: training both codecs for {args.minutes} CPU min each…", flush=True)
        jobs = {job: subprocess.Popen(
            [sys.executable, __file__, "--job", job, "--lmbda", str(lmbda), "--minutes", str(args.minutes),
             "--train", str(args.train), "--out", str(out / f"{job}_{lmbda}"), "--override", *args.override],
            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for job in curves}
        for job, process in jobs.items():
            _, stderr = process.communicate()
            if process.returncode:
                raise RuntimeError(f"{job} at λ = {lmbda} failed:\n{stderr[-3000:]}")
        curves["ours"].append(evaluate_ours(out / f"ours_{lmbda}" / "codec", held_out))
        curves["reference"].append(evaluate_reference(out / f"reference_{lmbda}" / "reference.pt", held_out))
        for job, points in curves.items():
            points[-1]["batches"] = json.loads((out / f"{job}_{lmbda}" / "steps.json").read_text())["steps"]
    jpeg = evaluate_jpeg(held_out)
    print(f"\n{args.minutes:g} CPU min per model, trained on {args.train}, held-out: {args.held_out} "
          f"({len(held_out)} photos); real files, 8-bit decoded images"
          + (f"; our recipe with {' '.join(args.override)}" if args.override else "") + "\n")
    torch.set_num_threads(1)
    cost = training_cost(args.override)
    print("one training batch (8 at 128², forward, backward, Adam step; one thread): "
          + ", ".join(f"{name} {flops:.2f} GFLOP in {seconds:.3f} CPU s" for name, (flops, seconds) in cost.items())
          + "\n")
    print("| codec | λ or quality | batches trained | bpp | PSNR (dB) | MS-SSIM |\n|---|---|---|---|---|---|")
    for name, points in curves.items():
        for lmbda, p in zip(args.lambdas, points):
            print(f"| {name} | {lmbda} | {p['batches']} | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")
    for quality, p in zip(JPEG_QUALITIES, jpeg):
        if p["bpp"] < 1.0:
            print(f"| JPEG | quality {quality} | – | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")
    print("\n| BD-rate | PSNR | MS-SSIM |\n|---|---|---|")
    for name, anchor, test in [("ours vs JPEG", jpeg, curves["ours"]), ("reference vs JPEG", jpeg, curves["reference"]),
                               ("ours vs reference", curves["reference"], curves["ours"])]:
        print(f"| {name} | {bd(anchor, test, 'psnr')} | {bd(anchor, test, 'ms_ssim')} |")
    monotone = all(a["bpp"] > b["bpp"] and a["psnr"] > b["psnr"] for a, b in zip(curves["ours"], curves["ours"][1:]))
    print(f"\nours monotone in λ (bpp and PSNR fall as λ rises): {monotone}")


if __name__ == "__main__":
    main()
