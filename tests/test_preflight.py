"""The preflight: everything a config needs, in one pass, without the network."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from training import preflight


def test_doctor_lists_every_missing_folder_weight_and_gpu_at_once_with_its_fix(tmp_path, monkeypatch, capsys):
    images, vit = tmp_path / "images", tmp_path / "local-vit"
    images.mkdir()
    vit.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(images / "a.png")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch hub cache
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status = preflight.main(["doctor", "experiment=sodec_stage2", "data=folder", "trainer=gpu",
                             f"data.train_dirs=[{tmp_path / 'missing'}]", f"data.val_dirs=[{images}]",
                             f"model.codec.guidance.vit.pretrained={vit}", "model.val_metrics=[psnr,lpips_alex]"])
    out = capsys.readouterr().out
    assert status == 1
    missing = [line for line in out.splitlines() if line.startswith("[MISSING]")]
    assert any("data.train_dirs[0]" in line for line in missing) and "[ok     ] dataset  data.val_dirs[0]" in out
    assert any("stabilityai/stable-diffusion-2-1-base — not in the Hugging Face cache" in line for line in missing)
    assert "fix: hf download stabilityai/stable-diffusion-2-1-base" in out and "huggingface-cli" not in out
    assert f"model.codec.guidance.vit.pretrained: {vit} — local directory" in out
    assert any("alexnet" in line for line in missing) and any("vgg16" in line for line in missing)
    assert any("1 CUDA GPU(s) — 0 visible" in line for line in missing)
    assert "[ok     ] package  _target_" in out


def test_doctor_passes_on_a_config_that_has_everything(tmp_path, capsys):
    assert preflight.main(["doctor", "experiment=demo", "trainer=cpu", "logger=none"]) == 0
    assert "0 missing" in capsys.readouterr().out


def test_doctor_checks_the_folders_an_evaluation_reads(tmp_path, capsys):
    status = preflight.main(["doctor", "--config", "evaluate", "data=div2k", f"paths.data_dir={tmp_path}",
                             "metrics=[psnr]", "baselines=[]"])
    out = capsys.readouterr().out
    assert status == 1
    assert f"[MISSING] dataset  data.test_dirs[0]: {tmp_path}/DIV2K/DIV2K_valid_HR" in out
    assert "train_dirs" not in out, "evaluation never reads the training folders"
