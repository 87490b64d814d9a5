"""How fast the stage-1 recipe learns: RD on held-out photos after a fixed CPU budget.

    python bench/learning.py --minutes 10 [--lambdas 0.004 0.012 0.04] [--train DIR] [--held-out DIR]
                             [--override KEY=VALUE …]   (a change to our recipe, e.g. model.optimizer.lr=1e-3)
                             [--seed N] [--arms ARM …] [--against OTHER_OUT]

Three arms per λ, each for the same CPU time on the same training photos (random 128² crops,
batch 8, the loss d + λ·R with d the MSE on [−1, 1]), one CPU thread each:
  ours       the framework's stage-1 recipe (``experiment=demo``: Lightning, the datamodule,
             the callbacks, the tiny HiFiC) through ``train()``, exported as a codec package;
  ours-bare  the same LightningModule and datamodule, built from the same config and seed (same
             initial weights, batches and noise), driven by a bare PyTorch loop taking the same
             step (training.bare_loop), no Trainer: ours against it is what the framework itself
             (Lightning, logging, callbacks) costs in learning;
  reference  a bare PyTorch loop on compressai's MeanScaleHyperprior (N = 64, M = 96), Adam 1e-3,
             gradients clipped to norm 1 as compressai's example training script does (unclipped,
             it diverged at λ = 0.004 within 10 CPU min: 5 dB at 12 bpp; BENCHMARKS.md), crops
             cut from photos held in memory — the bar the recipe must meet.
All are then coded through real files on every held-out photo (bpp of the whole file over the
original pixels, PSNR and MS-SSIM of the 8-bit decoded image), beside JPEG on a quality grid. Each
BD-rate is printed with its spread over the photos: the 95 % interval of a bootstrap over photos
(the curves of the mean of a resample of the photos, 1000 resamples) and the range of the photos'
own BD-rates. Default photos: Kodak's first 12 for training, its last 12 (0.39 MP each) held out.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import json
import os
import random
import resource
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
ARMS = ("ours", "ours-bare", "reference")
BOOTSTRAP_RESAMPLES = 1000


def image_files(folder: Path) -> list[Path]:
    from osdic.images import list_images

    return sorted(list_images([folder]))


def load_photos(files: Sequence[Path]) -> list[tuple[str, torch.Tensor]]:
    from osdic.images import open_rgb, to_tensor

    return [(p.name, to_tensor(open_rgb(p).image)) for p in files]


def link_training_photos(files: Sequence[Path], folder: Path) -> Path:
    """The training photos as one folder (the framework's datamodule reads folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return folder


def random_crops(photos: list[torch.Tensor], rng: random.Random) -> torch.Tensor:
    """A batch of random 128² crops, each flipped left–right with probability ½ (the bare loops')."""
    batch = []
    for _ in range(BATCH):
        image = photos[rng.randrange(len(photos))]
        top, left = rng.randint(0, image.shape[1] - CROP), rng.randint(0, image.shape[2] - CROP)
        crop = image[:, top : top + CROP, left : left + CROP]
        batch.append(crop.flip(-1) if rng.random() < 0.5 else crop)
    return torch.stack(batch)


def recipe_config(lmbda: float, seed: int, out: Path, overrides: Sequence[str] = (), extra: Sequence[str] = ()):
    from training.run import compose_run_config

    return compose_run_config(["experiment=demo", f"callbacks.rate_annealing.lambda_start={lmbda}", f"seed={seed}",
                               "logger=none", *extra, *overrides], out)


def framework_data_overrides(train_dir: Path) -> list[str]:
    """The training data of both our arms: the datamodule over the training photos (decoded once),
    an epoch of 64 crops of each photo, as the data node advises for a few photos: with one crop
    every batch was an epoch, and the framework trained 2.6 % fewer batches than its bare loop
    instead of 1.9 % (bench/framework_overhead.py; BENCHMARKS.md, learning speed)."""
    return ["data=folder", f"data.train_dirs=[{train_dir}]", "data.val_dirs=null", "data.num_workers=0",
            "data.cache_decoded=true", "data.crops_per_image=64"]


def train_ours(train_dir: Path, lmbda: float, seed: int, seconds: float, out: Path, overrides: Sequence[str] = ()) -> int:
    """The framework's recipe (changed by Hydra ``overrides``) for ``seconds`` of this process's CPU
    time, its codec package in ``out``/codec → the batches trained."""
    from train import train

    cfg = recipe_config(lmbda, seed, out, overrides, [
        *framework_data_overrides(train_dir), "trainer.max_steps=1000000", "trainer.val_check_interval=1000000",
        "+trainer.limit_val_batches=0", "+trainer.enable_progress_bar=false", "~callbacks.progress_bar",
        "~callbacks.model_checkpoint", "+callbacks.cpu_budget._target_=callbacks.budget.CPUTimeBudget",
        f"+callbacks.cpu_budget.seconds={seconds}"])
    _, trainer = train(cfg)
    return trainer.fit_loop.epoch_loop.batch_progress.total.completed


def train_ours_bare(train_dir: Path, lmbda: float, seed: int, seconds: float, out: Path,
                    overrides: Sequence[str] = ()) -> int:
    """Our recipe's module and datamodule, built as ``train()`` builds them (same seed: same initial
    weights, same batches, same noise), trained by training.bare_loop: no Trainer."""
    from osdic.codec.package import export_package
    from training.bare_loop import endless_batches, train_bare
    from training.config import instantiate_node

    cfg = recipe_config(lmbda, seed, out, overrides, framework_data_overrides(train_dir))
    torch.manual_seed(seed)
    datamodule = instantiate_node(cfg.data, "data", seed=cfg.seed)
    module = instantiate_node(cfg.model, "model")
    module.objective.set_lambda(lmbda)
    start = time.process_time()
    steps = train_bare(module, endless_batches(datamodule), seed, lambda _: time.process_time() - start < seconds)
    export_package(module.codec, out / "codec", stage=module.stage)
    return steps


def reference_loss(output: dict, x: torch.Tensor, lmbda: float) -> torch.Tensor:
    """The bare loop's d + λ·R: d the MSE on [−1, 1] (4× the MSE on [0, 1]), R in bpp of the crop."""
    from osdic.models.entropy import rate_bpp

    return 4 * torch.mean((output["x_hat"] - x) ** 2) + lmbda * rate_bpp(output["likelihoods"], CROP * CROP)


def train_reference(train_dir: Path, lmbda: float, seed: int, seconds: float, out: Path) -> int:
    """The bare loop: compressai's mean-scale hyperprior, photos in memory, no framework."""
    from compressai.models import MeanScaleHyperprior

    torch.manual_seed(seed)
    rng = random.Random(seed)
    photos = [image for _, image in load_photos(image_files(train_dir)) if min(image.shape[-2:]) >= CROP]
    model = MeanScaleHyperprior(64, 96)
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main, lr=1e-3), torch.optim.Adam(aux, lr=1e-3)
    start, steps = time.process_time(), 0
    while time.process_time() - start < seconds:
        x = random_crops(photos, rng)
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
    return steps


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
    return per_photo(rows)


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
    return per_photo(rows)


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
        points.append(per_photo(rows))
    return points


def per_photo(rows) -> dict[str, np.ndarray]:
    """One rate point: bpp, PSNR and MS-SSIM of each held-out photo, in the held-out order."""
    return dict(zip(("bpp", "psnr", "ms_ssim"), (np.array(column, dtype=float) for column in zip(*rows))))


def mean_of(point: dict, photos: np.ndarray | slice = slice(None)) -> dict[str, float]:
    return {k: float(np.nanmean(point[k][photos])) for k in ("bpp", "psnr", "ms_ssim")}


def bd_over(anchor: list[dict], test: list[dict], metric: str, photos: np.ndarray | slice = slice(None)) -> float:
    """The BD-rate between the curves of the mean over ``photos`` (raises BDRateNotAvailable)."""
    from osdic.metrics.bdrate import bd_rate

    curves = [[mean_of(p, photos) for p in curve] for curve in (anchor, test)]
    return bd_rate(*([p[k] for p in curves[0]] for k in ("bpp", metric)), *([p[k] for p in curves[1]] for k in ("bpp", metric)))


def bd(anchor: list[dict], test: list[dict], metric: str) -> str:
    """The BD-rate on the mean curves as printed, with its spread over the photos: the 95 % interval
    of a bootstrap over photos, and the range of the photos' own BD-rates (n/a with the reason where
    the curves have none: they do not overlap, or their quality does not rise with rate)."""
    from osdic.metrics.bdrate import BDRateNotAvailable

    try:
        value = bd_over(anchor, test, metric)
    except BDRateNotAvailable as reason:
        return f"n/a ({reason})"
    count = len(anchor[0]["bpp"])
    rng = np.random.default_rng(0)
    resampled, own = [], []
    for photos in [rng.integers(0, count, count) for _ in range(BOOTSTRAP_RESAMPLES)]:
        try:
            resampled.append(bd_over(anchor, test, metric, photos))
        except BDRateNotAvailable:
            pass
    for photo in range(count):
        try:
            own.append(bd_over(anchor, test, metric, np.array([photo])))
        except BDRateNotAvailable:
            pass
    low, high = np.percentile(resampled, [2.5, 97.5]) if resampled else (float("nan"),) * 2
    spread = f"95 % interval {low:+.1f} to {high:+.1f}"
    if len(resampled) < BOOTSTRAP_RESAMPLES:  # the interval is over the resamples that have a BD-rate
        spread += f" of the {len(resampled)} resamples with a BD-rate"
    if own:
        spread += f"; per photo {min(own):+.1f} to {max(own):+.1f}, median {np.median(own):+.1f}"
    if len(own) < count:
        spread += f", n/a on {count - len(own)} of {count}"
    return f"{value:+.1f} % ({spread})"


def print_against(curves: dict[str, list[dict]], other_out: Path, photos: list[str]) -> None:
    """Each arm of this bench against the same arm of another finished one, on the same photos."""
    other = json.loads((other_out / "results.json").read_text())
    if other["photos"] != photos:
        raise SystemExit(f"{other_out} held out other photos: its BD-rates would not compare")
    print(f"\n| BD-rate against the same arm in {other_out} | PSNR | MS-SSIM |\n|---|---|---|")
    for arm in (a for a in curves if a in other["curves"]):
        anchor = [{k: np.asarray(v, dtype=float) for k, v in p.items()} for p in other["curves"][arm]]
        print(f"| {arm} (batches {', '.join(str(int(p['batches'])) for p in anchor)} there) | "
              f"{bd(anchor, curves[arm], 'psnr')} | {bd(anchor, curves[arm], 'ms_ssim')} |")


def worker(args) -> None:
    """One training job in its own process (one CPU core), every arm under the malloc policy our
    training sets on the CPU (osdic.utils.cpu_memory): the arms differ in recipe and loop, not in how
    often the OS faults their activations in. Its steps.json (written last: it marks the job done)
    holds the batches trained and the share of CPU time spent in the kernel."""
    from osdic.utils.cpu_memory import keep_freed_memory

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    torch.set_num_threads(1)
    keep_freed_memory()
    seconds = args.minutes * 60
    before = resource.getrusage(resource.RUSAGE_SELF)
    if args.job == "ours":
        steps = train_ours(args.train, args.lmbda, args.seed, seconds, args.out, args.override)
    elif args.job == "ours-bare":
        steps = train_ours_bare(args.train, args.lmbda, args.seed, seconds, args.out, args.override)
    else:
        steps = train_reference(args.train, args.lmbda, args.seed, seconds, args.out)
    after = resource.getrusage(resource.RUSAGE_SELF)
    kernel, user = after.ru_stime - before.ru_stime, after.ru_utime - before.ru_utime
    (args.out / "steps.json").write_text(json.dumps({"steps": steps, "kernel_cpu_share": kernel / (kernel + user)}))


def run_jobs(jobs: dict[tuple[str, float], list[str]], parallel: int) -> None:
    """Every training job, at most ``parallel`` at once; the first failure stops the bench."""
    waiting, running = list(jobs.items()), {}
    while waiting or running:
        while waiting and len(running) < parallel:
            key, command = waiting.pop(0)
            running[key] = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for key, process in list(running.items()):
            if process.poll() is None:
                continue
            stderr = process.stderr.read()
            del running[key]
            if process.returncode:
                raise RuntimeError(f"{key[0]} at λ = {key[1]} failed:\n{stderr[-3000:]}")
            print(f"  trained {key[0]} at λ = {key[1]}", flush=True)
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="CPU minutes per model")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.004, 0.012, 0.04])
    parser.add_argument("--train", type=Path, default=None, help="a folder of training photos (default: Kodak 1–12)")
    parser.add_argument("--held-out", type=Path, default=None,
                        help="a folder of photos not used for training (default: Kodak 13–24)")
    parser.add_argument("--seed", type=int, default=0,
                        help="every arm's seed (initialisation, crops; ours: the run's `seed`): several seeds give "
                             "the run-to-run spread the photo bootstrap does not contain")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1, help="training jobs at once")
    parser.add_argument("--out", type=Path, default=None,
                        help="the bench's folder; a job already trained there (its steps.json) is kept, so a "
                             "stopped bench continues, and one arm is retrained by deleting its folders")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides of our recipe (experiment=demo), e.g. model.optimizer.lr=1e-3")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="the arms to train and compare (default: all three); the BD-rates shown are those "
                             "between the arms given")
    parser.add_argument("--against", type=Path, default=None, metavar="OTHER_OUT",
                        help="another finished bench's folder (other budget or seed, same held-out photos): also "
                             "print each arm's BD-rate here against the same arm there, e.g. what 10 more minutes buy")
    parser.add_argument("--job", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--lmbda", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)  # the core a job runs on (framework_overhead.py)
    args = parser.parse_args()
    if args.job:
        return worker(args)
    if (args.train is None) != (args.held_out is None):
        parser.error("--train and --held-out go together (the default is Kodak 1–12 and 13–24)")
    os.environ.setdefault("WANDB_MODE", "offline")
    out = args.out or Path(tempfile.mkdtemp(prefix="learning-"))
    if args.train is None:
        kodak = image_files(KODAK)
        if len(kodak) != 24:
            parser.error(f"found {len(kodak)} Kodak photos in {KODAK} (set KODAK_DIR), or give --train and --held-out")
        training_files, held_out_files = kodak[:12], kodak[12:]
    else:
        training_files, held_out_files = image_files(args.train), image_files(args.held_out)
    train_dir = link_training_photos(training_files, out / "training_photos")
    held_out = load_photos(held_out_files)
    jobs = {(arm, lmbda): [sys.executable, __file__, "--job", arm, "--lmbda", str(lmbda), "--minutes",
                           str(args.minutes), "--seed", str(args.seed), "--train", str(train_dir),
                           "--out", str(out / f"{arm}_{lmbda}"), "--override", *args.override]
            for lmbda in args.lambdas for arm in args.arms if not (out / f"{arm}_{lmbda}" / "steps.json").is_file()}
    planned = len(args.arms) * len(args.lambdas)
    print(f"{len(jobs)} training jobs of {args.minutes:g} CPU min, {args.parallel} at once"
          + (f" ({planned - len(jobs)} already trained in {out}: kept)" if len(jobs) < planned else "") + "…",
          flush=True)
    run_jobs(jobs, args.parallel)
    curves: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for lmbda in args.lambdas:
        for arm in args.arms:
            trained = out / f"{arm}_{lmbda}"
            point = (evaluate_reference(trained / "reference.pt", held_out) if arm == "reference"
                     else evaluate_ours(trained / "codec", held_out))
            job = json.loads((trained / "steps.json").read_text())
            point["batches"], point["kernel_cpu_share"] = job["steps"], job.get("kernel_cpu_share", float("nan"))
            curves[arm].append(point)
    jpeg = evaluate_jpeg(held_out)
    curves_and_jpeg = {**curves, "JPEG": jpeg}
    (out / "results.json").write_text(json.dumps(
        {"photos": [name for name, _ in held_out], "lambdas": args.lambdas, "jpeg_qualities": JPEG_QUALITIES,
         "curves": {name: [{k: np.asarray(v).tolist() for k, v in p.items()} for p in points]
                    for name, points in curves_and_jpeg.items()}}, indent=1))
    megapixels = [x[0].numel() / 1e6 for _, x in held_out]
    print(f"\n{args.minutes:g} CPU min per model, seed {args.seed}; trained on {len(training_files)} photos "
          f"({training_files[0].name} … {training_files[-1].name}), held out {len(held_out)} photos "
          f"({held_out_files[0].name} … {held_out_files[-1].name}, {min(megapixels):.2f}–{max(megapixels):.2f} MP); "
          f"real files, 8-bit decoded images; per-photo results in {out / 'results.json'}"
          + (f"; our recipe with {' '.join(args.override)}" if args.override else "") + "\n")
    torch.set_num_threads(1)
    cost = training_cost(args.override)
    print("one training batch (8 at 128², forward, backward, Adam step; one thread): "
          + ", ".join(f"{name} {flops:.2f} GFLOP in {seconds:.3f} CPU s" for name, (flops, seconds) in cost.items())
          + "\n")
    print("| codec | λ or quality | batches trained | bpp | PSNR (dB) | MS-SSIM |\n|---|---|---|---|---|---|")
    for name, points in curves.items():
        for lmbda, point in zip(args.lambdas, points):
            p = mean_of(point)
            print(f"| {name} | {lmbda} | {point['batches']} | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")
    for quality, point in zip(JPEG_QUALITIES, jpeg):
        if (p := mean_of(point))["bpp"] < 1.0:
            print(f"| JPEG | quality {quality} | – | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")
    print(f"\n| BD-rate (mean curves; spread over the {len(held_out)} photos) | PSNR | MS-SSIM |\n|---|---|---|")
    for name, anchor, test in [
            ("ours vs ours-bare (the framework's cost; goal within ±3 %)", "ours-bare", "ours"),
            ("ours vs reference (the recipe; goal ≤ 0 %)", "reference", "ours"),
            ("ours-bare vs reference", "reference", "ours-bare"),
            ("ours vs JPEG", "JPEG", "ours"), ("reference vs JPEG", "JPEG", "reference")]:
        if anchor in curves_and_jpeg and test in curves_and_jpeg:
            anchor_curve, test_curve = curves_and_jpeg[anchor], curves_and_jpeg[test]
            print(f"| {name} | {bd(anchor_curve, test_curve, 'psnr')} | {bd(anchor_curve, test_curve, 'ms_ssim')} |")
    if "ours" in curves and "ours-bare" in curves:
        # The two arms take the same step on the same batch (tests/test_train.py), so at equal CPU time
        # the framework's whole cost is the batches it did not get to
        deficits = [1 - o["batches"] / b["batches"] for o, b in zip(curves["ours"], curves["ours-bare"])]
        print("ours trained " + ", ".join(f"{100 * d:.1f} %" for d in deficits) + " fewer batches than ours-bare "
              f"in the same CPU time (λ = {', '.join(map(str, args.lambdas))})")
    print("CPU time in the kernel over each job, set-up included (page faults, mostly): " + "; ".join(
        arm + " " + ", ".join(f"{100 * p['kernel_cpu_share']:.1f} %" for p in points) for arm, points in curves.items()))
    if args.against is not None:
        print_against(curves, args.against, [name for name, _ in held_out])
    for arm in (a for a in ("ours", "ours-bare") if a in curves):
        points = [mean_of(p) for p in curves[arm]]
        monotone = all(a["bpp"] > b["bpp"] and a["psnr"] > b["psnr"] for a, b in zip(points, points[1:]))
        print(f"{arm} monotone in λ (bpp and PSNR fall as λ rises): {monotone}")


if __name__ == "__main__":
    main()
