"""Evaluation on real bitstreams: every image is compressed to bytes, decoded from them, measured.

bpp = whole file bytes × 8 / original pixels (``bpp``); the DiffEIC lineage's padded-pixel rule
is reported beside it (``bpp_padded``). Quality metrics are computed on the 8-bit-rounded
reconstruction. Encode and decode are timed separately at batch size 1, entropy coding included,
after a warm-up, with device synchronisation.

Outputs (under ``output_dir``), all written atomically, so an interrupted run resumes without
recomputing finished images: ``per_image.csv``; reconstructions as PNG (FID/KID are computed
from them at the end); one CompressAI-format JSON per model; plots; a BD-rate table. Images are
named by their path relative to the dataset folder. A per-image metric that is not defined for
an image (MS-SSIM under its minimum size) is NaN there, with the reason in ``not_available``;
the model's mean is over the images where it is defined — the same images for every model and
baseline, since it depends only on the image size.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from osdic.codec.image_codec import compress_image, decompress_bytes, decompress_outputs
from osdic.images import to_tensor
from osdic.metrics.quality import quantize_8bit
from osdic.metrics import baselines
from osdic.metrics.bdrate import BDRateNotAvailable, bd_rate
from osdic.metrics.quality import (DISTRIBUTION, MetricNotAvailable, PatchDistribution, compressai_key, higher_is_better,
                             metric_spec)
from osdic.utils.devices import resolve_device, timed
from osdic.utils.files import write_atomically

TIMING_KEYS = ("encoding_time", "decoding_time")


@dataclass
class Point:
    """One rate point of one model: a codec package (learned) or a baseline matched to one."""

    model: str
    label: str  # unique: names its rows in per_image.csv and its reconstructions' folder
    swept: str = ""  # a sweep job's swept values, e.g. "λ=2, rank=16"
    rows: list[dict] = field(default_factory=list)


def _on(metric, device: torch.device):
    return metric.to(device) if isinstance(metric, torch.nn.Module) else metric


class Evaluator:
    def __init__(self, images, metrics: list[str], output_dir: str, device: str = "auto",
                 allow_random_weights: bool = False):
        self.images, self.metric_names = images, list(metrics)
        self.device = resolve_device(device)
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.per_image = {n: _on(metric_spec(n).build(allow_random_weights), self.device)
                          for n in metrics if n not in DISTRIBUTION}
        self.distribution = {n: PatchDistribution(n, allow_random_weights, self.device)
                             for n in metrics if n in DISTRIBUTION}  # built now: fail before any work
        self.random_weights = sorted([n for n, metric in self.per_image.items() if metric.random_weights]
                                     + [n for n, metric in self.distribution.items() if metric.random_weights])
        self.csv_path = self.output_dir / "per_image.csv"
        self.rows: list[dict] = list(csv.DictReader(self.csv_path.open())) if self.csv_path.exists() else []
        self.warned_not_available: set[str] = set()

    # ----------------------------------------------------------------------- bookkeeping
    def _done(self, label: str) -> dict[str, dict]:
        return {r["image"]: r for r in self.rows if r["point"] == label}

    def _save_rows(self) -> None:
        if not self.rows:
            return
        fields = list(dict.fromkeys(k for row in self.rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomically(self.csv_path, buffer.getvalue().encode())

    def _measure(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float | str]:
        """Every per-image metric, and ``not_available``: why some are NaN ("" when none is)."""
        x, x_hat = x.to(self.device), quantize_8bit(x_hat.to(self.device))
        values: dict[str, float | str] = {}
        reasons = []
        with torch.inference_mode():
            for name, fn in self.per_image.items():
                try:
                    values[name] = float(fn(x_hat, x)[0])
                except MetricNotAvailable as exc:
                    values[name] = float("nan")
                    reasons.append(f"{name}: {exc}")
                    if name not in self.warned_not_available:
                        self.warned_not_available.add(name)
                        warnings.warn(f"{name} is not defined for some images ({exc}): NaN in per_image.csv "
                                      "(not_available says why), averaged over the other images", RuntimeWarning)
        values["not_available"] = "; ".join(reasons)
        return values

    @staticmethod
    def _save_png(x_hat: torch.Tensor, path: Path) -> None:
        recon = Image.fromarray(quantize_8bit(x_hat)[0].mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
        buffer = io.BytesIO()
        recon.save(buffer, format="PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, buffer.getvalue())

    def recon_path(self, label: str, image: str) -> Path:
        """``sub/a.png`` → ``reconstructions/<label>/sub/a.png``; another format gets ``.png``
        appended (``a.jpg.png``), so ``a.jpg`` and ``a.png`` stay apart."""
        name = image if image.lower().endswith(".png") else image + ".png"
        return self.output_dir / "reconstructions" / label / name

    def _record(self, point: Point, name: str, image: Image.Image, data: bytes, x_hat: torch.Tensor,
                times: tuple[float, float], extra: dict) -> None:
        x = to_tensor(image)[None]
        self._save_png(x_hat, self.recon_path(point.label, name))
        pad = lambda n: math.ceil(n / 64) * 64  # noqa: E731
        row = {
            "point": point.label, "model": point.model, "image": name, "height": image.height, "width": image.width,
            "bytes": len(data), "bpp": len(data) * 8 / (image.width * image.height),
            "bpp_padded": len(data) * 8 / (pad(image.width) * pad(image.height)),
            "encoding_time": times[0], "decoding_time": times[1],
            **self._measure(x, x_hat), **extra,
            "random_weights": ";".join(self.random_weights),
        }
        self.rows.append({k: str(v) for k, v in row.items()})
        point.rows.append(row)
        self._save_rows()

    def _progress(self, label: str):
        """The images, with a progress bar (count, rate, ETA) for one point."""
        return tqdm(self.images, desc=label, unit="image", dynamic_ncols=True)

    # ------------------------------------------------------------------------ learned
    def evaluate_codec(self, model: str, label: str, codec, fingerprint: bytes, warmup: int = 1,
                       swept: str = "") -> Point:
        point, done = Point(model, label, swept), self._done(label)
        codec = codec.to(self.device).eval()
        warmed = False
        for name, image in self._progress(label):
            if name in done:
                point.rows.append(done[name])
                continue
            x = to_tensor(image)[None]
            if not warmed:
                for _ in range(warmup):
                    decompress_bytes(codec, fingerprint, compress_image(codec, fingerprint, x))
                warmed = True
            once = dict(repeat=1, warmup=0, device=self.device)  # every image is timed; the warm-up ran above
            data, encode_time = timed(lambda: compress_image(codec, fingerprint, x), **once)
            decoded, decode_time = timed(lambda: decompress_outputs(codec, fingerprint, data), **once)
            if "x_hat_f" in decoded:  # SODEC's preliminary reconstruction, for the sample grid
                self._save_png(decoded["x_hat_f"], self.recon_path(f"{label}_fidelity", name))
            self._record(point, name, image, data, decoded["x_hat"], (encode_time, decode_time), {})
        return point

    # ---------------------------------------------------------------------- baselines
    def evaluate_baseline(self, codec: str, quality: int) -> Point:
        """``codec`` at one quality setting on every image (a point of its quality grid)."""
        return self._baseline(codec, f"{codec}@q{quality}", lambda name, image: baselines.Coded(
            baselines.encode(image, codec, quality), quality), {})

    def evaluate_baseline_matched(self, codec: str, matched_to: Point) -> Point:
        """``codec`` at each image's bpp of the learned point ``matched_to`` (quality searched
        per image; the encoding time includes the search)."""
        targets = {r["image"]: float(r["bpp"]) for r in matched_to.rows}
        return self._baseline(codec, f"{codec}@{matched_to.label}",
                              lambda name, image: baselines.encode_at_bpp(image, codec, targets[name]),
                              {"target_bpp": targets})

    def _baseline(self, codec: str, label: str, encode, extra: dict[str, dict]) -> Point:
        point, done = Point(codec.upper(), label), self._done(label)
        for name, image in self._progress(label):
            if name in done:
                point.rows.append(done[name])
                continue
            coded, encode_time = timed(lambda: encode(name, image), repeat=1, warmup=0)
            x_hat, decode_time = timed(lambda: to_tensor(baselines.decode(coded.data))[None], repeat=1, warmup=0)
            self._record(point, name, image, coded.data, x_hat, (encode_time, decode_time),
                         {"quality": coded.quality, **{key: values[name] for key, values in extra.items()}})
        return point

    # ---------------------------------------------------------------------- summaries
    def distribution_metrics(self, point: Point) -> dict[str, float | int]:
        results: dict[str, float | int] = {}
        for name, metric in self.distribution.items():
            metric.reset()
            for image_name, image in self.images:
                x = to_tensor(image)[None].to(self.device)
                x_hat = to_tensor(Image.open(self.recon_path(point.label, image_name)).convert("RGB"))[None]
                metric.update(x_hat.to(self.device), x)
            results[name] = metric.compute() if metric.count >= 2 else float("nan")
            results[f"{name}_patches"] = metric.count
        return results

    def summary(self, point: Point) -> dict[str, float]:
        """Means over the images; a per-image metric's over the images where it is defined (NaN
        when it is defined for none)."""
        summary = {k: float(np.mean([float(r[k]) for r in point.rows])) for k in ["bpp", "bpp_padded", *TIMING_KEYS]}
        for name in self.per_image:
            values = [v for v in (float(r[name]) for r in point.rows) if not math.isnan(v)]
            summary[name] = float(np.mean(values)) if values else float("nan")
        summary.update(self.distribution_metrics(point))
        return summary


def rd_curve(points: list[tuple[Point, dict]]) -> dict[str, list]:
    """One model's summaries as curves, sorted by bpp: ``{"bpp": [...], "psnr": [...], ...}``,
    with ``swept``, the points' swept values, when they come from a sweep."""
    curve: dict[str, list] = defaultdict(list)
    for point, summary in sorted(points, key=lambda p: p[1]["bpp"]):
        for key, value in summary.items():
            curve[key].append(value)
        if any(p.swept for p, _ in points):
            curve["swept"].append(point.swept)
    return dict(curve)


def compressai_json(model: str, points: list[tuple[Point, dict]], description: str, random_weights: list[str],
                    skipped: dict[str, str], codec_warnings: Sequence[str] = ()) -> dict:
    """CompressAI's results format (its key names: ``bpp``, ``psnr-rgb``, ``ms-ssim-rgb``, …, so
    ``python -m compressai.utils.plot`` reads it), extended with every other metric and the
    protocol, the images whose file could not be read (``skipped_images``) and the metrics not
    defined for some images (``not_available``), each image with the reason, and what the codecs'
    producers asked every evaluation to repeat (``codec_warnings``: a model that started from
    random weights)."""
    curve = rd_curve(points)
    swept = curve.pop("swept", None)
    results = {compressai_key(key): values for key, values in curve.items()}
    not_available = {r["image"]: r["not_available"] for p, _ in points for r in p.rows if r.get("not_available")}
    out = {"name": model, "description": description, "results": results, **({"swept": swept} if swept else {}),
           "skipped_images": skipped, "not_available": not_available}
    if random_weights:
        out["WARNING"] = f"metrics on RANDOM weights (allow_random_weights), not comparable: {random_weights}"
    if codec_warnings:
        out["codec_warnings"] = list(codec_warnings)
    return out


def bd_rate_table(curves: dict[str, dict[str, list]], anchor: str, metrics: Iterable[str]) -> list[dict]:
    """One row per model other than the anchor: ``bd_rate`` (%, per metric; null where it is not
    defined) and ``reason`` (why, for each null)."""
    rows = []
    for model, results in curves.items():
        if model == anchor:
            continue
        row: dict = {"model": model, "anchor": anchor, "bd_rate": {}, "reason": {}}
        for metric in metrics:
            try:
                row["bd_rate"][metric] = bd_rate(curves[anchor]["bpp"], curves[anchor][metric], results["bpp"],
                                                 results[metric], higher_is_better(metric))
            except BDRateNotAvailable as exc:
                row["bd_rate"][metric] = None
                row["reason"][metric] = str(exc)
        rows.append(row)
    return rows
