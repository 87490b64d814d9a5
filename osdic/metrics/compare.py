"""Build a sweep's comparison from its local outputs (no W&B needed):

    python -m osdic.metrics.compare logs/<task>/multiruns/<date_time> [--metrics val/bpp_real val/lpips_alex ...]

Rows are the swept values (the overrides that differ between the sweep's jobs), columns the
final metrics each job wrote to ``final_metrics.json`` (``val/loss`` is left out: its λ·R term
makes it incomparable across rates). Writes ``ablation.md``, ``ablation.csv`` and
``ablation.png`` — rate–quality curves, bpp on x, one panel per quality metric, jobs that differ
only in their rate (λ) joined as one curve — into the sweep directory and prints the table.
Exits with status 1 when no job finished.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import sys
from pathlib import Path

from osdic.metrics.sweep import display_name, is_rate_key, read_sweep, swept_keys

RATE_COLUMNS = ("val/bpp_real", "val/bpp")
DEFAULT_COLUMNS = (*RATE_COLUMNS, "val/lpips_alex", "val/dists", "val/ms_ssim", "val/psnr", "val/clipiqa")


def collect(sweep_dir: Path) -> list[tuple[dict[str, str], dict[str, float]]]:
    """(overrides, final metrics) of every job; a job that failed or is unfinished has no metrics."""
    return [(job.overrides, job.final_metrics) for job in read_sweep(sweep_dir)]


def ablation_table(jobs, columns=DEFAULT_COLUMNS) -> tuple[list[str], list[list[str]]]:
    swept = swept_keys([overrides for overrides, _ in jobs])
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
    plot_rd(sweep_dir / "ablation.png", header, rows)
    return markdown


def rd_curves(header: list[str], rows: list[list[str]]) -> tuple[str | None, dict[str, list[tuple[float, dict, str]]]]:
    """(the rate column, {curve label: [(bpp, {metric: value}, rate label), …] sorted by bpp}).
    A curve gathers the jobs with the same non-rate swept values; a job without a rate is left out."""
    swept = [h for h in header if h not in DEFAULT_COLUMNS and not h.startswith(("val/", "train/"))]
    rate = next((c for c in RATE_COLUMNS if c in header), None)
    curves: dict[str, list[tuple[float, dict, str]]] = {}
    if rate is None:
        return None, curves
    for row in rows:
        values = dict(zip(header, row))
        if values[rate] == "n/a":
            continue
        label = ", ".join(f"{display_name(k)}={values[k]}" for k in swept if not is_rate_key(k)) or "sweep"
        rate_label = ", ".join(f"{display_name(k)}={values[k]}" for k in swept if is_rate_key(k))
        metrics = {h: float(v) if v != "n/a" else math.nan for h, v in values.items() if h.startswith(("val/", "train/"))}
        curves.setdefault(label, []).append((float(values[rate]), metrics, rate_label))
    return rate, {label: sorted(points, key=lambda p: p[0]) for label, points in curves.items()}


def plot_rd(path: Path, header: list[str], rows: list[list[str]]) -> None:
    from osdic.metrics.plots import STYLES, axis_label, axis_values, legend_outside, plt

    rate, curves = rd_curves(header, rows)
    metrics = [h for h in header if h.startswith(("val/", "train/")) and h not in RATE_COLUMNS]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.6 * max(1, len(metrics)), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        split, name = metric.split("/", 1)
        for (label, points), style in zip(curves.items(), itertools.cycle(STYLES)):
            y = axis_values(name, [p[1][metric] for p in points])
            ax.plot([p[0] for p in points], y, label=label, **style)
            for (bpp, _, rate_label), value in zip(points, y):
                if rate_label:
                    ax.annotate(rate_label, (bpp, value), textcoords="offset points", xytext=(3, 3), fontsize=6)
        ax.set_xlabel(f"{rate} (bpp)")
        ax.set_ylabel(f"{split}: {axis_label(name)}", fontsize=8)
        ax.grid(alpha=0.3)
    legend_outside(fig, axes[0][-1])
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_COLUMNS))
    args = parser.parse_args(argv)
    jobs = collect(args.sweep_dir)
    if not any(metrics for _, metrics in jobs):
        print(f"{args.sweep_dir}: none of the {len(jobs)} jobs wrote final_metrics.json (all failed or unfinished); "
              "nothing to compare", file=sys.stderr)
        return 1
    header, rows = ablation_table(jobs, args.metrics)
    print(write_outputs(args.sweep_dir, header, rows))
    print(f"written: {args.sweep_dir / 'ablation.md'}, ablation.csv, ablation.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
