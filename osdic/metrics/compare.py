"""Build a sweep's ablation table from its local outputs (no W&B needed):

    python -m osdic.metrics.compare logs/<task>/multiruns/<date_time> [--metrics val/bpp_real val/lpips_alex ...]

Rows are the swept values (the overrides that differ between the sweep's jobs), columns the
final metrics each job wrote to ``final_metrics.json``. Writes ``ablation.md``, ``ablation.csv``
and ``ablation.png`` into the sweep directory and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import yaml

DEFAULT_COLUMNS = ("val/bpp_real", "val/bpp", "val/lpips_alex", "val/dists", "val/ms_ssim", "val/psnr", "val/clipiqa",
                   "val/loss")


def collect(sweep_dir: Path) -> list[tuple[dict[str, str], dict[str, float]]]:
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"), key=lambda p: int(p.parts[-3])
                                 if p.parts[-3].isdigit() else 0):
        job = overrides_file.parent.parent
        overrides = dict(o.lstrip("+~").split("=", 1) for o in yaml.safe_load(overrides_file.read_text()) or [])
        metrics_file = job / "final_metrics.json"
        jobs.append((overrides, json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}))
    if not jobs:
        raise FileNotFoundError(f"no sweep jobs (*/.hydra/overrides.yaml) under {sweep_dir}")
    return jobs


def ablation_table(jobs, columns=DEFAULT_COLUMNS) -> tuple[list[str], list[list[str]]]:
    swept = [k for k in jobs[0][0] if len({job[0].get(k) for job in jobs}) > 1] or list(jobs[0][0])[:1]
    present = [c for c in columns if any(c in metrics for _, metrics in jobs)]
    header = [*swept, *present]
    rows = [[overrides.get(k, "") for k in swept] + [f"{metrics[c]:.4f}" if c in metrics else "n/a" for c in present]
            for overrides, metrics in jobs]
    return header, rows


def write_outputs(sweep_dir: Path, header: list[str], rows: list[list[str]]) -> str:
    markdown = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    markdown += "".join("| " + " | ".join(row) + " |\n" for row in rows)
    (sweep_dir / "ablation.md").write_text(markdown)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    (sweep_dir / "ablation.csv").write_text(buffer.getvalue())
    _plot(sweep_dir / "ablation.png", header, rows)
    return markdown


def _plot(path: Path, header: list[str], rows: list[list[str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = [h for h in header if not h.startswith(("val/", "train/"))]
    metrics = [h for h in header if h not in swept]
    labels = [",".join(row[: len(swept)]) for row in rows]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3 * max(1, len(metrics)), 3), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        column = header.index(metric)
        values = [float(row[column]) if row[column] != "n/a" else float("nan") for row in rows]
        ax.bar(range(len(values)), values)
        ax.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_COLUMNS))
    args = parser.parse_args()
    header, rows = ablation_table(collect(args.sweep_dir), args.metrics)
    print(write_outputs(args.sweep_dir, header, rows))
    print(f"written: {args.sweep_dir / 'ablation.md'}, ablation.csv, ablation.png")


if __name__ == "__main__":
    main()
