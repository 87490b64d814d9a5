"""Rate–quality plots (PNG) and the sample grid."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

#: our metric names → the names in shared/reference/published_rd_points.csv
PUBLISHED_NAMES = {"psnr": "psnr_rgb", "ms_ssim": "ms_ssim_rgb", "ms_ssim_y": "ms_ssim_y", "lpips_alex": "lpips_alex",
                   "lpips_vgg": "lpips_vgg", "dists": "dists", "fid256": "fid256", "clipiqa": "clipiqa"}


def published_points(path: str | None, dataset: str, metric: str) -> dict[str, list[tuple[float, float]]]:
    if not path or not Path(path).is_file():
        return {}
    points: dict[str, list[tuple[float, float]]] = {}
    for row in csv.DictReader(open(path)):
        if row["dataset"] == dataset and row["metric"] == PUBLISHED_NAMES.get(metric):
            points.setdefault(f"{row['method']} ({row['kind']})", []).append((float(row["bpp"]), float(row["value"])))
    return points


def plot_metric(curves: dict[str, dict[str, list]], metric: str, dataset: str, out: Path,
                published: dict[str, list[tuple[float, float]]], warning: str | None) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for model, results in curves.items():
        if metric in results:
            ax.plot(results["bpp"], results[metric], marker="o", label=model)
    for method, pts in published.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="x", linestyle="--", alpha=0.6, label=method)
    ax.set_xlabel("bpp (whole file / original pixels)")
    ax.set_ylabel(metric)
    ax.set_title(f"{dataset}: {metric}" + (f"\n{warning}" if warning else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def sample_grid(original: Image.Image, reconstructions: dict[str, Image.Image], out: Path, crop: int = 256) -> Path:
    """Original and each reconstruction side by side (a central crop), labelled by column order
    in ``reconstructions``; written as one PNG."""
    left, top = max(0, (original.width - crop) // 2), max(0, (original.height - crop) // 2)
    box = (left, top, left + min(crop, original.width), top + min(crop, original.height))
    tiles = [original.crop(box)] + [r.crop(box) for r in reconstructions.values()]
    grid = Image.new("RGB", (sum(t.width for t in tiles), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        grid.paste(tile, (x, 0))
        x += tile.width
    grid.save(out)
    return out
