"""Codecs against each other and against classical baselines on one image set: what
``evaluate.py`` runs, usable without Hydra (plain arguments) or Lightning (codec packages; a
loader for anything else is passed in).

:func:`evaluate_codecs` measures every rate point of every model through real files
(:class:`~osdic.metrics.evaluation.Evaluator`), the baselines on a quality grid or matched to
each learned point's bpp, and writes under ``output_dir``: one CompressAI-format JSON per model,
``bd_rate.json``, an RD plot per metric (beside the literature's points), a sample grid, and
prints the RD table. :func:`benchmark_codecs` times the decode path per module instead.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from osdic.checks import ConfigError
from osdic.codec.package import load_package, package_warnings
from osdic.codec.image_codec import bits_per_pixel, compress_image
from osdic.images import fit_and_crop, to_tensor
from osdic.metrics import baselines as baseline_codecs
from osdic.metrics.datasets import EvalImages
from osdic.metrics.evaluation import Evaluator, Point, bd_rate_table, compressai_json, rd_curve
from osdic.metrics.latency import decode_breakdown, encode_seconds
from osdic.metrics.plots import plot_metric, sample_grid
from osdic.metrics.published import published_points as read_published_points
from osdic.metrics.sweep import is_sweep, point_label, read_sweep, swept_keys
from osdic.utils.devices import resolve_device
from osdic.utils.files import write_atomically
from osdic.utils.untrusted import load_checkpoint

log = logging.getLogger(__name__)

#: a codec's path → (codec, fingerprint); codec packages by default
CodecLoader = Callable[[str], tuple[nn.Module, bytes]]
DEFAULT_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90)


class CodecPoint(NamedTuple):
    path: str
    label: str  # unique: ``<model>:<package's run>`` or ``<model>:<sweep>/<job>``
    swept: str  # a sweep job's swept values (``λ=2, rank=16``), "" otherwise


def codec_points(model: str, entries: str | Sequence[str]) -> list[CodecPoint]:
    """The rate points of one model: codec packages, checkpoints, and sweep directories — every
    job's codec, a point labelled by the job's swept values; a job without a codec (failed,
    unfinished) is left out, warned about."""
    points = []
    for entry in [entries] if isinstance(entries, str) else entries:
        if not is_sweep(entry):
            name = Path(entry).parent.name if Path(entry).name == "codec" else Path(entry).name
            points.append(CodecPoint(entry, f"{model}:{name}", ""))
            continue
        jobs = read_sweep(entry)
        keys = swept_keys([job.overrides for job in jobs])
        for job in jobs:
            if job.codec is None:
                log.warning("sweep %s: job %s (%s) has no codec package (failed or unfinished); left out",
                            entry, job.directory.name, point_label(job, keys))
            else:
                points.append(CodecPoint(str(job.codec), f"{model}:{Path(entry).name}/{job.directory.name}",
                                         point_label(job, keys)))
        if not any(job.codec for job in jobs):
            raise FileNotFoundError(f"sweep {entry}: no job has a codec package (every job failed or is unfinished)")
    return points


@dataclass
class EvaluationResult:
    dataset: str
    output_dir: Path
    curves: dict[str, dict[str, list]]  # model or baseline → rd_curve
    metrics: list[str]  # the quality metrics every table and plot shows
    bd_rates: list[dict]  # bd_rate_table against the anchor
    rows: list[dict]  # per_image.csv
    codec_paths: list[str]  # every learned point's codec, in evaluation order

    def scalars(self) -> dict[str, float]:
        """``bd_rate/<model>/<metric>`` (%, NaN where it is not defined): what a sweep optimises."""
        return {f"bd_rate/{row['model']}/{metric}": math.nan if value is None else value
                for row in self.bd_rates for metric, value in row["bd_rate"].items()}


def evaluate_codecs(images: EvalImages, codecs: Mapping[str, str | Sequence[str]], output_dir: str | Path, *,
                    metrics: Sequence[str], baselines: Sequence[str] = ("jpeg", "webp"),
                    baseline_qualities: Sequence[int] = DEFAULT_QUALITIES, match_baselines: bool = False,
                    anchor: str | None = None, published_points: str | Path | None = None, device: str = "auto",
                    warmup: int = 1, allow_random_weights: bool = False,
                    load_codec: CodecLoader = load_package) -> EvaluationResult:
    """Every point of ``codecs`` (model name → codec paths or sweep directories) and every
    available baseline (on ``baseline_qualities``, or with ``match_baselines`` at each image's
    bpp of every learned point) on ``images``; the BD-rates against ``anchor`` (default: the
    first baseline evaluated, else the first model). An interrupted run resumes from
    ``output_dir`` without recomputing finished images."""
    if not codecs:
        raise ValueError("nothing to evaluate: set codecs.<name>=[<codec package or .ckpt>, ...]")
    pictures = list(images)  # decoded once (evaluation sets are small); unreadable files are skipped
    if not pictures:
        raise FileNotFoundError(f"no readable image in {images.name}: {images.skipped}")
    evaluator = Evaluator(pictures, list(metrics), str(output_dir), device, allow_random_weights)
    out = evaluator.output_dir
    learned, codec_paths, model_warnings = {}, [], {}
    for model, entries in codecs.items():
        learned[model] = []
        for path, label, swept in codec_points(model, entries):
            codec_paths.append(path)
            model_warnings.setdefault(model, []).extend(f"{label}: {w}" for w in codec_warnings(path))
            codec, fingerprint = load_codec(path)
            learned[model].append(evaluator.evaluate_codec(model, label, codec, fingerprint, warmup, swept))
    points = {model: [(p, evaluator.summary(p)) for p in pts] for model, pts in learned.items()}
    for codec_name in baselines:
        if not baseline_codecs.available(codec_name):
            log.warning("baseline %s is not available here (missing plugin); skipped", codec_name)
            continue
        if match_baselines:
            pts = [evaluator.evaluate_baseline_matched(codec_name, p) for ps in learned.values() for p in ps]
        else:  # a quality grid, as compressai.utils.bench runs it
            pts = [evaluator.evaluate_baseline(codec_name, quality) for quality in baseline_qualities]
        points[codec_name.upper()] = [(p, evaluator.summary(p)) for p in pts]

    device_name = torch.cuda.get_device_name(evaluator.device) if evaluator.device.type == "cuda" else "CPU"
    description = (f"{images.name}: real files, bpp = file bytes × 8 / original pixels "
                   f"(bpp_padded: over pixels padded to 64); metrics on 8-bit reconstructions; times in s at "
                   f"batch 1 on {device_name} (float32), entropy coding included, after {warmup} warm-up; "
                   f"{len(pictures)} images, a per-image metric averaged over those where it is defined "
                   f"(not_available lists the others), unreadable files listed in skipped_images")
    curves = {}
    for model, model_points in points.items():
        report = {**compressai_json(model, model_points, description, evaluator.random_weights, images.skipped,
                                    model_warnings.get(model, [])),
                  "dataset": images.name, "published_as": images.published_as, "images": len(pictures)}
        write_atomically(out / f"{model}.json", json.dumps(report, indent=2).encode())
        curves[model] = rd_curve(model_points)
    quality = [m for m in metrics if any(m in c for c in curves.values())]
    first_model = next(iter(learned))
    anchor = anchor or next((m for m in curves if m not in learned), first_model)
    if anchor not in curves:
        raise ConfigError("anchor", f"{anchor!r} is not an evaluated model or baseline; choose from {list(curves)}")
    table = bd_rate_table(curves, anchor, quality)
    write_atomically(out / "bd_rate.json", json.dumps(table, indent=2).encode())
    warnings = ([f"RANDOM-WEIGHT metrics: {', '.join(evaluator.random_weights)}"] if evaluator.random_weights else []) \
        + ([f"{model} started from RANDOM weights" for model, found in model_warnings.items() if found])
    warning = "; ".join(warnings) or None
    for metric in quality:
        plot_metric(curves, metric, images.name, out / f"rd_{metric}.png",
                    read_published_points(published_points, images.published_as, metric), warning)
    _sample_columns(evaluator, points, pictures[0], out / "samples.png")
    _print_table(curves, quality, table, out, warning, images.skipped)
    return EvaluationResult(images.name, out, curves, quality, table, evaluator.rows, codec_paths)


def codec_warnings(path: str | Path) -> list[str]:
    """What the producer of a codec asked its evaluations to repeat: a package's ``warnings``, or
    for a Lightning checkpoint whether the model started from random weights."""
    path = Path(path)
    if path.is_dir():
        return package_warnings(path)
    if load_checkpoint(path).get("started_from_random"):
        return ["started from random weights (model.init_from=random), not from its predecessor"]
    return []


def benchmark_codecs(images: EvalImages, codecs: Mapping[str, str | Sequence[str]], output_dir: str | Path, *,
                     device: str = "auto", warmup: int = 1, repeat: int = 5, resolution: Sequence[int] | None = None,
                     load_codec: CodecLoader = load_package) -> dict:
    """Times only, on the first readable image (at ``resolution`` = (height, width) if given: scaled
    to cover it and centre-cropped): per point of ``codecs``, the encode time, the per-module decode
    breakdown (medians after warm-up, synchronised) and the image's bpp through a real file;
    written to ``latency.json`` with the device, dtype and resolution."""
    device = resolve_device(device)
    name, image = next(iter(images), (None, None))
    if image is None:
        raise FileNotFoundError(f"no readable image in {images.name}: {images.skipped}")
    if resolution is not None:
        image = fit_and_crop(image, *resolution)
    x = to_tensor(image)[None]
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "dtype": "float32", "image": name, "resolution": [image.height, image.width], "batch": 1,
              "repeat": repeat, "models": {}}
    for model, entries in codecs.items():
        for path, label, _ in codec_points(model, entries):
            codec, fingerprint = load_codec(path)
            codec = codec.to(device)
            report["models"][label] = {
                "encode": encode_seconds(codec, x, repeat, warmup),
                "decode": decode_breakdown(codec, x, repeat, warmup),
                "bpp": bits_per_pixel(compress_image(codec, fingerprint, x), image.height, image.width),
                "warnings": codec_warnings(path)}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "latency.json", json.dumps(report, indent=2).encode())
    print(f"{report['device']}, float32, batch 1, {image.height}×{image.width} ({name}), median of "
          f"{repeat} after {warmup} warm-up:")
    for model, figures in report["models"].items():
        print(f"  {model}: encode {figures['encode'] * 1000:.1f} ms; decode " + ", ".join(
            f"{k} {v * 1000:.1f} ms" for k, v in figures["decode"].items()) + f"; {figures['bpp']:.4f} bpp")
    return report


def _sample_columns(evaluator: Evaluator, points: dict[str, list[tuple[Point, dict]]],
                    sample: tuple[str, Image.Image], out: Path) -> Path:
    """The sample grid of the first image: every learned point (SODEC's x̂_f beside its x̂) and,
    per baseline, the grid point closest in bpp to the learned points' median on that image."""
    name, original = sample
    bpp_of = lambda point: next(float(r["bpp"]) for r in point.rows if r["image"] == name)  # noqa: E731
    columns, learned_bpps = [], []
    for model, model_points in points.items():
        if model.lower() in baseline_codecs.CODECS:
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
        if model.lower() in baseline_codecs.CODECS:
            point = min((p for p, _ in model_points), key=lambda p: abs(bpp_of(p) - target))
            columns.append((point.label, bpp_of(point), Image.open(evaluator.recon_path(point.label, name)).convert("RGB")))
    return sample_grid(original, columns, out)


def _print_table(curves: dict, metrics: list[str], bd_table: list[dict], out: Path, warning: str | None,
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
