"""Rate–quality plots (PNG) and the sample grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


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
