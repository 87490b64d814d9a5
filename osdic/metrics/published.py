"""The literature's rate–quality points (``published_rd_points.csv`` of the shared reference
folder: method, dataset, bpp, metric, value, source, kind), read as data. The file spells
metrics its own way; :data:`CSV_METRIC_NAMES` is the one place that maps them to ours."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

from osdic import PROJECT_ROOT

#: this project's metric names → the file's
CSV_METRIC_NAMES = {"psnr": "psnr_rgb", "ms_ssim": "ms_ssim_rgb", "ms_ssim_y": "ms_ssim_y",
                    "lpips_alex": "lpips_alex", "lpips_vgg": "lpips_vgg", "dists": "dists", "fid256": "fid256",
                    "clipiqa": "clipiqa", "musiq": "musiq"}


def resolve(path: str | Path) -> Path:
    """A configured path: absolute as given, relative from the project root (not the working
    directory, so evaluate.py finds the same file wherever it is started)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def published_points(path: str | Path | None, dataset: str, metric: str) -> dict[str, list[tuple[float, float]]]:
    """``{"<method> (<kind>)": [(bpp, value), ...]}`` of ``dataset`` and our ``metric``; a
    requested file that is not there is warned about, never silently left out."""
    if not path:
        return {}
    file = resolve(path)
    if not file.is_file():
        warnings.warn(f"published_points: {file} not found; plots show no published points", RuntimeWarning)
        return {}
    points: dict[str, list[tuple[float, float]]] = {}
    with file.open(newline="") as rows:
        for row in csv.DictReader(rows):
            if row["dataset"] == dataset and row["metric"] == CSV_METRIC_NAMES.get(metric):
                points.setdefault(f"{row['method']} ({row['kind']})", []).append((float(row["bpp"]), float(row["value"])))
    return points
