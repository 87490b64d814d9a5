"""Evaluation entry point: real bitstreams, metrics, baselines, RD plots, BD-rates (see README).

    python evaluate.py codecs.SODEC=[a/codec,b/codec] dataset=kodak metrics=[psnr,ms_ssim,lpips_alex]
    python evaluate.py codecs.SODEC=logs/sodec_rd_points/multiruns/<date_time>   # a sweep: one RD curve
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import json
import logging
import os
import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from osdic.codec.package import export_package, load_package
from osdic.images import to_tensor
from osdic.metrics import baselines
from osdic.metrics.evaluation import Evaluator, bd_rate_table, compressai_json, rd_curve
from osdic.metrics.latency import decode_breakdown
from osdic.metrics.plots import plot_metric, sample_grid
from osdic.metrics.published import published_points
from osdic.metrics.sweep import is_sweep, point_label, read_sweep, swept_keys
from lightning_modules import MODEL_CONFIG_TARGETS
from osdic.utils.config import instantiate_node
from osdic.checks import ConfigError
from osdic.utils.run import group_name
from osdic.utils.untrusted import build, load_checkpoint
from osdic.utils.files import write_atomically

log = logging.getLogger(__name__)


def load_codec(path: str):
    """A codec package directory, or a Lightning checkpoint of a run of train.py (its Hydra
    config is read from the run's .hydra/config.yaml and the codec exported on the fly). Both
    files are data: the config builds only this project's classes, the checkpoint only tensors."""
    path = Path(path)
    if path.suffix != ".ckpt":
        return load_package(path)
    run_config = path.parent.parent / ".hydra" / "config.yaml"
    if not run_config.is_file():
        raise FileNotFoundError(f"{path}: no run config at {run_config}; export a codec package instead")
    model_config = OmegaConf.to_container(OmegaConf.load(run_config).model, resolve=True)
    checkpoint = load_checkpoint(path)
    module = build(model_config, MODEL_CONFIG_TARGETS, str(run_config), partial=True)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return load_package(export_package(module.codec.eval(), tempfile.mkdtemp(prefix="codec-")))


def codec_points(model: str, entries: str | list[str]) -> list[tuple[str, str, str]]:
    """(path, label, swept values) of each codec of ``codecs.<model>``: codec packages,
    checkpoints, and sweep directories — every job's codec, a point labelled by the job's swept
    values (``λ=2, rank=16``); a job without a codec (failed, unfinished) is left out, warned about."""
    points = []
    for entry in [entries] if isinstance(entries, str) else entries:
        if not is_sweep(entry):
            name = Path(entry).parent.name if Path(entry).name == "codec" else Path(entry).name
            points.append((entry, f"{model}:{name}", ""))
            continue
        jobs = read_sweep(entry)
        keys = swept_keys([job.overrides for job in jobs])
        for job in jobs:
            if job.codec is None:
                log.warning("sweep %s: job %s (%s) has no codec package (failed or unfinished); left out",
                            entry, job.directory.name, point_label(job, keys))
            else:
                points.append((str(job.codec), f"{model}:{Path(entry).name}/{job.directory.name}",
                               point_label(job, keys)))
        if not any(job.codec for job in jobs):
            raise FileNotFoundError(f"sweep {entry}: no job has a codec package (every job failed or is unfinished)")
    return points


def benchmark(cfg: DictConfig, images: list) -> dict:
    """Times only: per-module decode breakdown (medians after warm-up, synchronised) on the
    first image, for every codec; written to latency.json with device, dtype and resolution."""
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else "cpu" if cfg.device == "auto" else cfg.device)
    name, image = images[0]
    x = to_tensor(image)[None]
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "dtype": "float32", "image": name, "resolution": [image.height, image.width], "batch": 1,
              "repeat": cfg.benchmark_repeat, "models": {}}
    for model, entries in cfg.codecs.items():
        for path, label, _ in codec_points(model, entries):
            codec, _ = load_codec(path)
            report["models"][label] = decode_breakdown(codec.to(device), x, cfg.benchmark_repeat, cfg.warmup)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "latency.json", json.dumps(report, indent=2).encode())
    print(f"{report['device']}, float32, batch 1, {image.height}×{image.width} ({name}), median of "
          f"{cfg.benchmark_repeat} after {cfg.warmup} warm-up:")
    for model, figures in report["models"].items():
        print(f"  {model}: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in figures.items()))
    return report


def evaluate(cfg: DictConfig) -> dict:
    dataset = instantiate_node(cfg.dataset, "dataset")
    images = list(dataset)  # decoded once (evaluation sets are small); unreadable files are skipped
    if not images:
        raise FileNotFoundError(f"no readable image under {cfg.dataset.root}: {dataset.skipped}")
    if cfg.benchmark:
        return benchmark(cfg, images)
    metrics = list(cfg.metrics)
    evaluator = Evaluator(images, metrics, cfg.output_dir, cfg.device, cfg.allow_random_weights)
    out = Path(cfg.output_dir)
    learned, sources = {}, []
    for model, entries in cfg.codecs.items():
        learned[model] = []
        for path, label, swept in codec_points(model, entries):
            sources.append(path)
            codec, fingerprint = load_codec(path)
            learned[model].append(evaluator.evaluate_codec(model, label, codec, fingerprint, cfg.warmup, swept))
    if not learned:
        raise ValueError("nothing to evaluate: set codecs.<name>=[<codec package or .ckpt>, ...]")
    points = {model: [(p, evaluator.summary(p)) for p in pts] for model, pts in learned.items()}
    first_model = next(iter(learned))
    for codec_name in cfg.baselines:
        if not baselines.available(codec_name):
            log.warning("baseline %s is not available here (missing plugin); skipped", codec_name)
            continue
        if cfg.match_baselines:  # at each image's bpp of every learned point
            pts = [evaluator.evaluate_baseline_matched(codec_name, p) for ps in learned.values() for p in ps]
        else:  # a quality grid, as compressai.utils.bench runs it
            pts = [evaluator.evaluate_baseline(codec_name, quality) for quality in cfg.baseline_qualities]
        points[codec_name.upper()] = [(p, evaluator.summary(p)) for p in pts]

    device = torch.cuda.get_device_name() if evaluator.device.type == "cuda" else "CPU"
    description = (f"{cfg.dataset.name}: real files, bpp = file bytes × 8 / original pixels "
                   f"(bpp_padded: over pixels padded to 64); metrics on 8-bit reconstructions; times in s at "
                   f"batch 1 on {device} (float32), entropy coding included, after {cfg.warmup} warm-up; "
                   f"{len(images)} images, a per-image metric averaged over those where it is defined "
                   f"(not_available lists the others), unreadable files listed in skipped_images")
    curves = {}
    for model, model_points in points.items():
        report = compressai_json(model, model_points, description, evaluator.random_weights, dataset.skipped)
        write_atomically(out / f"{model}.json", json.dumps(report, indent=2).encode())
        curves[model] = rd_curve(model_points)
    quality = [m for m in metrics if any(m in c for c in curves.values())]
    anchor = cfg.anchor or next((m for m in curves if m != first_model and m not in cfg.codecs), first_model)
    if anchor not in curves:
        raise ConfigError("anchor", f"{anchor!r} is not an evaluated model or baseline; choose from {list(curves)}")
    table = bd_rate_table(curves, anchor, quality)
    write_atomically(out / "bd_rate.json", json.dumps(table, indent=2).encode())
    warning = "RANDOM-WEIGHT metrics: " + ", ".join(evaluator.random_weights) if evaluator.random_weights else None
    for metric in quality:
        plot_metric(curves, metric, cfg.dataset.name, out / f"rd_{metric}.png",
                    published_points(cfg.published_points, cfg.dataset.name, metric), warning)
    sample_columns(evaluator, points, images[0], out / "samples.png")
    print_table(curves, quality, table, out, warning, dataset.skipped)
    if cfg.wandb.enabled:
        log_to_wandb(cfg, evaluator, out, curves, quality, sources)
    return curves


def sample_columns(evaluator: Evaluator, points: dict, sample: tuple[str, Image.Image], out: Path) -> Path:
    """The sample grid of the first image: every learned point (SODEC's x̂_f beside its x̂) and,
    per baseline, the grid point closest in bpp to the learned points' median on that image."""
    name, original = sample
    bpp_of = lambda point: next(float(r["bpp"]) for r in point.rows if r["image"] == name)  # noqa: E731
    columns, learned_bpps = [], []
    for model, model_points in points.items():
        if model.lower() in baselines.CODECS:
            continue
        for point, _ in model_points:
            title = f"{model} {point.swept}" if point.swept else point.label
            fidelity = evaluator.recon_path(f"{point.label}_fidelity", name)
            if fidelity.is_file():
                columns.append((f"{title} x̂_f", bpp_of(point), Image.open(fidelity).convert("RGB")))
            columns.append((title, bpp_of(point), Image.open(evaluator.recon_path(point.label, name)).convert("RGB")))
            learned_bpps.append(bpp_of(point))
    target = float(np.median(learned_bpps))
    for model, model_points in points.items():
        if model.lower() in baselines.CODECS:
            point = min((p for p, _ in model_points), key=lambda p: abs(bpp_of(p) - target))
            columns.append((point.label, bpp_of(point), Image.open(evaluator.recon_path(point.label, name)).convert("RGB")))
    return sample_grid(original, columns, out)


def training_runs(codecs: list[str]) -> tuple[str | None, list[str]]:
    """The W&B group and tags of the runs that trained ``codecs`` (packages ``<run>/codec`` or
    checkpoints ``<run>/checkpoints/*.ckpt``), read from the runs' saved configs as data."""
    groups, tags = [], []
    for codec in map(Path, codecs):
        run = codec.parent.parent if codec.suffix == ".ckpt" else codec.parent
        config_file = run / ".hydra" / "config.yaml"
        config = (yaml.safe_load(config_file.read_text()) if config_file.is_file() else None) or {}
        tags += [tag for tag in config.get("tags") or [] if tag not in tags]
        if (run.parent / "multirun.yaml").is_file():
            groups.append(group_name(run.parent, config.get("sweep_name")))
    return (groups[0] if len(set(groups)) == 1 else None), tags


def log_to_wandb(cfg: DictConfig, evaluator: Evaluator, out: Path, curves: dict[str, dict], metrics: list[str],
                 codecs: list[str]) -> None:
    """In one W&B run, in the group of the training runs (one sweep) with their tags: the RD
    table and plots, the per-image table, the JSON summaries and the samples."""
    import wandb

    from osdic.utils.loggers import save_with_run, wandb_has_credentials

    mode = None if "WANDB_MODE" in os.environ else "online" if wandb_has_credentials() else "offline"
    group, tags = training_runs(codecs)
    run = wandb.init(project=cfg.wandb.project, job_type="evaluate", dir=str(out), mode=mode,
                     name=f"evaluate-{cfg.dataset.name}", group=group, tags=[*tags, "evaluate"],
                     config={k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                             for k, v in cfg.items() if k != "hydra"})
    try:
        columns = list(dict.fromkeys(k for row in evaluator.rows for k in row))
        run.log({"evaluate/per_image": wandb.Table(columns=columns, data=[[r.get(c) for c in columns]
                                                                           for r in evaluator.rows])})
        rd_columns = ["model", "point", "bpp", *metrics]
        run.log({"evaluate/rd_table": wandb.Table(columns=rd_columns, data=[
            [model, (curve.get("swept") or [""] * len(curve["bpp"]))[i], *(curve[c][i] for c in rd_columns[2:])]
            for model, curve in curves.items() for i in range(len(curve["bpp"]))])})
        run.log({f"evaluate/rd_{m}": wandb.Image(str(out / f"rd_{m}.png")) for m in metrics})
        run.log({"evaluate/samples": wandb.Image(str(out / "samples.png"))})
        save_with_run(run, sorted(out.glob("*.json")), out)
    finally:
        wandb.finish()


def print_table(curves: dict, metrics: list[str], bd_table: list[dict], out: Path, warning: str | None,
                skipped: dict[str, str]) -> None:
    columns = ["bpp", *metrics, "encoding_time", "decoding_time"]
    print("\n| model | " + " | ".join(columns) + " |\n|" + "---|" * (len(columns) + 1))
    for model, results in curves.items():
        for i in range(len(results["bpp"])):
            print(f"| {model} | " + " | ".join(f"{results[c][i]:.4f}" for c in columns) + " |")
    for row in bd_table:
        print(f"BD-rate of {row['model']} vs {row['anchor']}: " + ", ".join(
            f"{m} {value:+.1f}%" if value is not None else f"{m} n/a ({row['reason'][m]})"
            for m, value in row["bd_rate"].items()))
    if warning:
        print(f"WARNING: {warning}")
    if skipped:
        print(f"WARNING: {len(skipped)} unreadable image(s) skipped: " + ", ".join(skipped))
    print(f"\nper-image CSV: {out / 'per_image.csv'}\nJSON per model: {out}/<model>.json\n"
          f"plots: {out}/rd_<metric>.png (and .pdf), samples: {out / 'samples.png'}, BD-rates: {out / 'bd_rate.json'}")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
