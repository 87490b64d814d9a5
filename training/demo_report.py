"""The demo's summary: what each stage did to rate and quality, then the evaluation's RD table.

    python -m training.demo_report logs/demo

Per stage, the validation of the held-out photos at its start (``initial_metrics.json``, written
with ``validate_before_training=true``) and at its end (``final_metrics.json``): bpp of the real
files, PSNR and MS-SSIM of x̂ (the stage's output image) and, for the diffusion stages, of x̂_f
(the fidelity decoder's image, SODEC's guidance). Then every evaluated model's points on the
held-out photos (the evaluation's CompressAI-format JSON files) and its BD-rates.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

#: (column, metrics key of x̂, metrics key of x̂_f)
STAGE_COLUMNS = [("bpp", "val/bpp_real", None), ("PSNR (dB)", "val/psnr", "val/fidelity_psnr"),
                 ("MS-SSIM", "val/ms_ssim", "val/fidelity_ms_ssim")]


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _cell(start: dict, end: dict, key: str | None) -> str:
    if key is None or key not in end:
        return "–"
    before = f"{start[key]:.3f} → " if key in start else ""
    return f"{before}{end[key]:.3f}"


def stage_table(runs: list[Path]) -> list[str]:
    lines = ["| stage | image | " + " | ".join(c for c, _, _ in STAGE_COLUMNS) + " |",
             "|---|---|" + "---|" * len(STAGE_COLUMNS)]
    for run in runs:
        start, end = _read(run / "initial_metrics.json"), _read(run / "final_metrics.json")
        if not end:
            lines.append(f"| {run.name} | (no final_metrics.json: the stage did not finish) |")
            continue
        lines.append(f"| {run.name} | x̂ | " + " | ".join(_cell(start, end, k) for _, k, _ in STAGE_COLUMNS) + " |")
        if any(f and f in end for _, _, f in STAGE_COLUMNS):
            lines.append(f"| {run.name} | x̂_f | " + " | ".join(_cell(start, end, f) for _, _, f in STAGE_COLUMNS) + " |")
    return lines


#: x̂_f may lose this much PSNR in stage 2 (its rate is fixed and it is SODEC's guidance: it must not
#: drift), and at stage 3's end x̂ may sit this far below x̂_f: the paper's one-step decoder trades
#: some PSNR for realism, one far below its own guidance is not using it
FIDELITY_DROP_DB, GUIDANCE_MARGIN_DB = 0.5, 2.0


def _fidelity_kept(start: dict, end: dict) -> tuple[bool, str]:
    before, after = start["val/fidelity_psnr"], end["val/fidelity_psnr"]
    return after >= before - FIDELITY_DROP_DB, (f"x̂_f keeps its quality: {before:.2f} → {after:.2f} dB "
                                                f"(may lose {FIDELITY_DROP_DB} dB)")


def _rate_falls(start: dict, end: dict) -> tuple[bool, str]:
    before, after = start["val/bpp_real"], end["val/bpp_real"]
    return after < before, f"the rate falls as λ rises: {before:.3f} → {after:.3f} bpp"


def _near_guidance(start: dict, end: dict) -> tuple[bool, str]:
    output, guidance = end["val/psnr"], end["val/fidelity_psnr"]
    return output >= guidance - GUIDANCE_MARGIN_DB, (f"x̂ within {GUIDANCE_MARGIN_DB} dB of x̂_f at the end: "
                                                     f"{output:.2f} against {guidance:.2f} dB")


#: what each diffusion stage of the demo must show (issue: every stage visibly does its job)
STAGE_CHECKS = {"stage2": [_fidelity_kept], "stage3": [_rate_falls, _near_guidance]}


def stage_checks(runs: list[Path]) -> list[str]:
    lines = []
    for run in (run for run in runs if run.name in STAGE_CHECKS):
        start, end = _read(run / "initial_metrics.json"), _read(run / "final_metrics.json")
        if not end:
            lines.append(f"[FAILED] {run.name}: did not finish (no final_metrics.json)")
            continue
        for check in STAGE_CHECKS[run.name]:
            try:
                passed, what = check(start, end)
            except KeyError as missing:
                passed, what = False, f"{missing} was not measured"
            lines.append(f"{'[ok]' if passed else '[FAILED]'} {run.name}: {what}")
    return lines


def rd_table(evaluation: Path) -> list[str]:
    lines = ["| model | bpp | PSNR (dB) | MS-SSIM |", "|---|---|---|---|"]
    for path in sorted(evaluation.glob("*.json")):
        report = _read(path)
        results = report.get("results") if isinstance(report, dict) else None
        if not isinstance(results, dict) or "bpp" not in results:
            continue
        missing = [math.nan] * len(results["bpp"])
        psnr, ssim = results.get("psnr-rgb", missing), results.get("ms-ssim-rgb", missing)
        for bpp, p, s in zip(results["bpp"], psnr, ssim):
            lines.append(f"| {report.get('name', path.stem)} | {bpp:.3f} | {p:.2f} | {s:.4f} |")
    return lines


def report(demo_dir: Path) -> None:
    stages = sorted(p.parent for p in demo_dir.glob("stage*/final_metrics.json"))
    stages += sorted(p for p in demo_dir.glob("stage*") if p.is_dir() and p not in stages)
    print("\nEach stage on the held-out photos, at its start → at its end (x̂: the stage's output; "
          "x̂_f: SODEC's fidelity image, its guidance)\n")
    print("\n".join(stage_table(sorted(stages))))
    checks = stage_checks(sorted(stages))
    if checks:
        print("\n" + "\n".join(checks))
    evaluation = demo_dir / "evaluation"
    print(f"\nThe codecs on the held-out photos through real files ({evaluation})\n")
    print("\n".join(rd_table(evaluation)))
    bd = _read(evaluation / "bd_rate.json")
    for row in bd if isinstance(bd, list) else []:
        values, reasons = row.get("bd_rate", {}), row.get("reason", {})
        print(f"BD-rate of {row.get('model')} vs {row.get('anchor')}: " + ", ".join(
            f"{metric} {value:+.1f} %" if isinstance(value, (int, float)) else f"{metric} n/a ({reasons.get(metric)})"
            for metric, value in values.items()))
    print(f"\nRD plots: {evaluation}/rd_*.png (and .pdf), sample grid: {evaluation}/samples.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_dir", type=Path)
    report(parser.parse_args().demo_dir)


if __name__ == "__main__":
    main()
