"""Rate–quality plots and the sample grid, each as PNG and PDF."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


#: one (colour, marker) pair per curve, never reused within a plot of up to 20 curves
STYLES = [dict(color=plt.get_cmap("tab10")(i % 10), marker="os^Dv<>pP*X"[i % 11]) for i in range(20)]


def legend_outside(fig, ax) -> None:
    """The legend to the right of the axes, never over the data or the title."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)


def axis_values(metric: str, values) -> np.ndarray:
    """MS-SSIM as the field plots it, −10·log10(1 − MS-SSIM) in dB; other metrics as they are."""
    values = np.asarray(values, dtype=float)
    return -10 * np.log10(1 - values) if metric.startswith("ms_ssim") else values


def axis_label(metric: str) -> str:
    from osdic.metrics.quality import PER_IMAGE_METRICS

    spec = PER_IMAGE_METRICS.get(metric)
    name = spec.display if spec else metric
    if metric.startswith("ms_ssim"):
        return f"{name}: −10·log10(1 − MS-SSIM) (dB)"
    return f"{name} ({spec.unit})" if spec and spec.unit else name


def plot_metric(curves: dict[str, dict[str, list]], metric: str, dataset: str, out: Path,
                published: dict[str, list[tuple[float, float]]], warning: str | None) -> Path:
    """Our curves (solid, filled markers; a sweep's points labelled by their swept values) and the
    published points (dashed, hollow, "published" in the legend), bpp on x; PNG and PDF."""
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = itertools.cycle(STYLES)
    for model, results in curves.items():
        if metric not in results:
            continue
        y = axis_values(metric, results[metric])
        ax.plot(results["bpp"], y, label=model, linestyle="-", **next(styles))
        for bpp, value, swept in zip(results["bpp"], y, results.get("swept", [])):
            ax.annotate(swept, (bpp, value), textcoords="offset points", xytext=(4, 4), fontsize=6)
    for method, pts in published.items():
        pts = sorted(pts)
        style = next(styles)
        ax.plot([p[0] for p in pts], axis_values(metric, [p[1] for p in pts]), linestyle="--", alpha=0.8,
                markerfacecolor="none", label=f"{method}, published", **style)
    ax.set_xlabel("rate (bpp: whole file / original pixels)")
    ax.set_ylabel(axis_label(metric))
    ax.set_title(f"{dataset}: {axis_label(metric).split(':')[0]}" + (f"\n{warning}" if warning else ""), fontsize=9)
    ax.grid(alpha=0.3)
    legend_outside(fig, ax)
    for suffix in (".png", ".pdf"):
        fig.savefig(out.with_suffix(suffix), dpi=150, bbox_inches="tight")
    plt.close(fig)
    return out


def _psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def sample_grid(original: Image.Image, columns: list[tuple[str, float | None, Image.Image]], out: Path,
                crop: int = 256, zoom: int = 64) -> Path:
    """A labelled column per method: the central ``crop``² of the image (top) and its central
    ``zoom``² enlarged (bottom); each titled with its name, the image's bpp and the PSNR of the
    shown crop. ``columns``: (name, bpp or None, reconstruction). Written as PNG and PDF."""
    import matplotlib.pyplot as plt

    left, top = max(0, (original.width - crop) // 2), max(0, (original.height - crop) // 2)
    box = (left, top, left + min(crop, original.width), top + min(crop, original.height))
    zoom_left, zoom_top = (box[2] - box[0] - zoom) // 2, (box[3] - box[1] - zoom) // 2
    zoom_box = (zoom_left, zoom_top, zoom_left + zoom, zoom_top + zoom)
    reference = original.crop(box)
    tiles = [("original", None, reference)] + [(name, bpp, image.crop(box)) for name, bpp, image in columns]
    fig, axes = plt.subplots(2, len(tiles), figsize=(2.2 * len(tiles), 5.0), squeeze=False)
    for column, (name, bpp, tile) in enumerate(tiles):
        title = name if bpp is None else f"{name}\n{bpp:.3f} bpp, {_psnr(tile, reference):.2f} dB"
        axes[0, column].imshow(tile)
        axes[0, column].set_title(title, fontsize=7)
        axes[1, column].imshow(tile.crop(zoom_box), interpolation="nearest")
        for row in range(2):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
    axes[1, 0].set_ylabel(f"centre {zoom}² enlarged", fontsize=7)
    fig.suptitle(f"central {box[2] - box[0]}×{box[3] - box[1]} crop; bpp of the whole image, PSNR of the crop",
                 fontsize=8)
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        fig.savefig(out.with_suffix(suffix), dpi=150)
    plt.close(fig)
    return out
