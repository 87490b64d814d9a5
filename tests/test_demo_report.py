"""The demo's summary reads each stage's start and end and the evaluation's outputs."""

from __future__ import annotations

import json

from training.demo_report import report


def test_summary_shows_each_stage_from_start_to_end_and_the_bd_rates(tmp_path, capsys):
    stage = tmp_path / "stage2"
    stage.mkdir()
    (stage / "initial_metrics.json").write_text(json.dumps({"val/bpp_real": 0.3, "val/psnr": 9.0, "val/ms_ssim": 0.1,
                                                            "val/fidelity_psnr": 17.3, "val/fidelity_ms_ssim": 0.6}))
    (stage / "final_metrics.json").write_text(json.dumps({"val/bpp_real": 0.3, "val/psnr": 16.0, "val/ms_ssim": 0.6,
                                                          "val/fidelity_psnr": 17.3, "val/fidelity_ms_ssim": 0.6}))
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "SODEC.json").write_text(json.dumps({"name": "SODEC", "results": {
        "bpp": [0.3], "psnr-rgb": [16.0], "ms-ssim-rgb": [0.6]}}))
    (evaluation / "bd_rate.json").write_text(json.dumps([{
        "model": "WEBP", "anchor": "JPEG", "bd_rate": {"psnr": -36.3, "ms_ssim": None},
        "reason": {"ms_ssim": "quality ranges do not overlap"}}]))
    report(tmp_path)
    out = capsys.readouterr().out
    assert "| stage2 | x̂ | 0.300 → 0.300 | 9.000 → 16.000 | 0.100 → 0.600 |" in out
    assert "| stage2 | x̂_f | – | 17.300 → 17.300 | 0.600 → 0.600 |" in out
    assert "| SODEC | 0.300 | 16.00 | 0.6000 |" in out
    assert "BD-rate of WEBP vs JPEG: psnr -36.3 %, ms_ssim n/a (quality ranges do not overlap)" in out


def _stage(root, name, start, end):
    stage = root / name
    stage.mkdir()
    (stage / "initial_metrics.json").write_text(json.dumps(start))
    (stage / "final_metrics.json").write_text(json.dumps(end))


def test_summary_checks_what_each_diffusion_stage_must_do(tmp_path, capsys):
    _stage(tmp_path, "stage2", {"val/fidelity_psnr": 20.0}, {"val/fidelity_psnr": 19.0})  # x̂_f lost 1 dB
    _stage(tmp_path, "stage3", {"val/bpp_real": 0.6, "val/psnr": 17.0, "val/fidelity_psnr": 19.0},
           {"val/bpp_real": 0.4, "val/psnr": 17.5, "val/fidelity_psnr": 19.0})
    report(tmp_path)
    out = capsys.readouterr().out
    assert "[FAILED] stage2: x̂_f keeps its quality: 20.00 → 19.00 dB" in out
    assert "[ok] stage3: the rate falls as λ rises: 0.600 → 0.400 bpp" in out
    assert "[ok] stage3: x̂ within 2.0 dB of x̂_f at the end: 17.50 against 19.00 dB" in out


def test_a_stage_that_did_not_finish_fails_its_checks_as_unfinished(tmp_path, capsys):
    (tmp_path / "stage3").mkdir()
    (tmp_path / "stage3" / "initial_metrics.json").write_text(json.dumps({"val/bpp_real": 0.6}))
    report(tmp_path)
    assert "[FAILED] stage3: did not finish (no final_metrics.json)" in capsys.readouterr().out
