"""Where the λ controller lands: stage-1 runs asked for a bpp, measured on the real files.

    python bench/rate_control.py [--targets 0.1 0.15] [--steps 2000] [--scheduler cosine] [--kodak DIR]

Trains the demo's stage-1 codec (experiment=demo) on Kodak images 1–18 with
``callbacks/rate_annealing=target_bpp`` for each target, validating on Kodak 19–24
(``--validation-images``: how many of Kodak's last images validate instead; whole
images, real files: header and coder overhead included), and prints, per validation, λ, the
controller's goal for the training estimate and the real bpp, then the final val/bpp_real against
the target. No λ is set by hand: every run starts from the same λ. Crops are 256² in batches of 2
(the demo's pixels per batch): at 128² the hyper latent z is 2 × 2, every position a border, and
the rate of whole validation images stops following the crops' (BENCHMARKS.md, λ controller).
The learning rate decays to 0 over the run (cosine) as the controller's config asks: at a constant
rate (``--scheduler null``) the weights keep moving and the last validation's rate is a draw.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import csv
import os
import statistics
import tempfile
from pathlib import Path

import torch

from train import train
from training.run import compose_run_config

#: the last batches, with the learning rate near 0, whose training rate's spread is printed: the
#: crops' content, not the model (TargetRate's ratio_window)
SPREAD_BATCHES = 400
KODAK = Path(os.environ.get("KODAK_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"))


def split_kodak(kodak: Path, root: Path, validation_images: int = 6) -> tuple[Path, Path]:
    """Kodak's last ``validation_images`` for validation, the others for training, as symlinked folders."""
    train_dir, val_dir = root / "train", root / "val"
    for folder in (train_dir, val_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 25):
        source = kodak / f"kodim{i:02d}.png"
        (train_dir if i <= 24 - validation_images else val_dir).joinpath(source.name).symlink_to(source)
    return train_dir, val_dir


def print_trajectory(run_dir: Path) -> None:
    """Per validation: batch, λ, the mean rounded training rate since the last one, the goal, the
    validation's estimated and real bpp and its PSNR; then how far one batch's training rate
    strays from the mean over the last batches."""
    rows = list(csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open()))
    interval: list[dict] = []
    print("  batch      λ   train bpp (rounded)   goal   val/bpp  val/bpp_real  val/psnr")
    for row in rows:
        if row.get("train/bpp_rounded"):
            interval.append(row)
        if row.get("val/bpp_real") and interval:
            last = interval[-1]
            mean_bpp = sum(float(r["train/bpp_rounded"]) for r in interval) / len(interval)
            print(f"  {int(last['step']) + 1:5d}  {float(last['train/lambda']):.4g}  {mean_bpp:9.4f}  "
                  f"{float(last['train/rate_goal']):.4f}  {float(row['val/bpp']):.4f}   {float(row['val/bpp_real']):.4f}"
                  f"     {float(row['val/psnr']):.2f}")
            interval = []
    recent = [float(r["train/bpp_rounded"]) for r in rows if r.get("train/bpp_rounded")][-SPREAD_BATCHES:]
    spread = statistics.pstdev(recent) / statistics.fmean(recent)
    print(f"  one batch's training rate over the last {len(recent)} batches: ±{100 * spread:.1f} % around their mean "
          f"(standard deviation), so a mean of 50 batches carries ±{100 * spread / 50 ** 0.5:.1f} %, "
          f"of 200 ±{100 * spread / 200 ** 0.5:.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.1, 0.15])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--val-every", type=int, default=200)
    parser.add_argument("--scheduler", default="cosine", help="model/scheduler: cosine, hold_cosine, step or null (constant)")
    parser.add_argument("--kodak", type=Path, default=KODAK)
    parser.add_argument("--validation-images", type=int, default=6, choices=range(1, 24), metavar="N",
                        help="Kodak's last N images validate, the others train (6: Kodak 19–24)")
    parser.add_argument("--lambda-start", type=float, default=0.012,
                        help="initial λ of every run (the demo recipe's scale: d = MSE on [−1, 1])")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more Hydra overrides, e.g. callbacks.rate_annealing.integral_gain=0.01 "
                             "(the controller's defaults: conf/callbacks/rate_annealing/target_bpp.yaml)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: runs side by side, one per core, do not oversubscribe the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, val_dir = split_kodak(args.kodak, Path(tmp) / "kodak", args.validation_images)
        for target in args.targets:
            cfg = compose_run_config([
                "experiment=demo", "data=folder", f"data.train_dirs=[{train_dir}]", f"data.val_dirs=[{val_dir}]",
                "data.num_workers=0", "data.cache_decoded=true", "data.crop_size=256", "data.batch_size=2",
                "logger=csv", "trainer.log_every_n_steps=1",
                *([] if args.scheduler == "null" else [f"model/scheduler={args.scheduler}"]),  # null: the default
                "callbacks/rate_annealing=target_bpp", f"callbacks.rate_annealing.target_bpp={target}",
                f"callbacks.rate_annealing.lambda_start={args.lambda_start}",
                *args.override,
                f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.val_every}",
                "+trainer.enable_progress_bar=false", "~callbacks.progress_bar",
            ], Path(tmp) / f"target_{target}")
            metrics, _ = train(cfg)
            print_trajectory(Path(tmp) / f"target_{target}")
            real = metrics["val/bpp_real"]
            results.append((target, real, metrics["train/lambda"]))
            print(f"target {target:.3f} bpp → val/bpp_real {real:.4f} ({100 * (real / target - 1):+.1f} %), "
                  f"final λ {metrics['train/lambda']:.4g}", flush=True)
    print(f"\n| target bpp | val/bpp_real (Kodak {25 - args.validation_images}–24, real files) | error | final λ |\n|---|---|---|---|")
    for target, real, lam in results:
        print(f"| {target:.3f} | {real:.4f} | {100 * (real / target - 1):+.1f} % | {lam:.4g} |")


if __name__ == "__main__":
    main()
