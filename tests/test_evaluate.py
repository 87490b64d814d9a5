"""evaluate.py on Kodak with tiny codecs: outputs, honest bpp, FID patches, baselines, BD-rate,
resume, and the weight policy."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

import evaluate as evaluate_module
from osdic.codec.package import export_package
from osdic.metrics import baselines
from osdic.images import to_tensor
from osdic.metrics.bdrate import bd_rate
from osdic.metrics.datasets import split_images
from osdic.metrics.evaluation import Point, bd_rate_table, compressai_json
from osdic.metrics.published import published_points
from osdic.metrics.evaluate_codecs import codec_points
from osdic.metrics.sweep import read_sweep, training_runs
from osdic.checks import ConfigError, MissingWeightsError
from osdic.metrics.quality import fid_patches, patch_count
from training.config import instantiate_node, metric_for_sweep
from osdic.models.hific import HiFiCCompressor
from tests.conftest import CONF_DIR

TINY = dict(latent_channels=8, encoder_channels=[4, 8, 8, 16, 16], hyper_channels=8, residual_blocks=1)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("codecs")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(str(export_package(HiFiCCompressor(**TINY).eval(), root / f"point{seed}" / "codec")))
    return paths


def _cfg(tmp_path, kodak_dir, packages, *overrides):
    codecs = packages if isinstance(packages, str) else f"[{','.join(packages)}]"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"+codecs.tiny={codecs}", "max_images=2",
                                             f"data.test_dirs=[{kodak_dir}]", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "eval")
        cfg.published_points = None
    return cfg


def test_outputs_on_kodak(tmp_path, kodak_dir, packages):
    cfg = _cfg(tmp_path, kodak_dir, packages, "metrics=[psnr,ms_ssim,ms_ssim_y,lpips_alex,fid256]",
               "allow_random_weights=true", "baselines=[jpeg]", "match_baselines=true", "wandb.enabled=true",
               "optimized_metric=bd_rate/tiny/lpips_alex")
    result = evaluate_module.evaluate(cfg)
    out = tmp_path / "eval"
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 2 * 2 * 2  # 2 images × (2 learned points + 2 JPEG points)
    for row in rows:
        data_bytes, pixels = int(row["bytes"]), int(row["height"]) * int(row["width"])
        assert float(row["bpp"]) == pytest.approx(data_bytes * 8 / pixels)
        assert row["random_weights"] == "fid256;lpips_alex"
    for row in (r for r in rows if r["model"] == "tiny"):  # the recorded bytes are a real file's
        assert int(row["bytes"]) > 34
    report = json.loads((out / "tiny.json").read_text())
    assert report["name"] == "tiny" and "WARNING" in report and "RANDOM" in report["WARNING"]
    for key in ("bpp", "psnr-rgb", "ms-ssim-rgb", "ms-ssim-y", "lpips-alex", "fid256", "encoding_time", "decoding_time"):
        assert len(report["results"][key]) == 2, key
    assert report["results"]["fid256_patches"] == [2 * patch_count(512, 768)] * 2
    assert (out / "JPEG.json").is_file() and (out / "rd_psnr.png").is_file() and (out / "samples.png").is_file()
    bd = json.loads((out / "bd_rate.json").read_text())
    assert [(row["model"], row["anchor"]) for row in bd] == [("tiny", "JPEG")], "no anchor-vs-itself row"
    # untrained codecs reach a quality JPEG never goes down to: no BD-rate, and the table says why
    assert bd[0]["bd_rate"] == {"psnr": None, "ms_ssim": None, "ms_ssim_y": None, "lpips_alex": None, "fid256": None}
    for metric in ("psnr", "ms_ssim", "lpips_alex"):
        assert "quality ranges do not overlap" in bd[0]["reason"][metric], metric
    scalars = result.scalars()  # what a sweep over evaluate.py optimises: undefined is NaN, never a number
    assert sorted(scalars) == [f"bd_rate/tiny/{m}" for m in ("fid256", "lpips_alex", "ms_ssim", "ms_ssim_y", "psnr")]
    assert math.isnan(metric_for_sweep(cfg, scalars)) and all(math.isnan(v) for v in scalars.values())
    wandb_run = next((out / "wandb").glob("offline-run-*"))
    assert any(wandb_run.glob("*.wandb")), "tables, plots and samples went to an offline W&B run"
    summary = json.loads(subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--summary",
                                         "--json", str(wandb_run)], capture_output=True, text=True, check=True).stdout)
    assert {"evaluate/rd_table", "evaluate/rd_psnr", "evaluate/per_image"} <= set(summary["summary"])


def _sweep_dir(root: Path, jobs: list[tuple[list[str], str | None]]) -> Path:
    """A multirun directory: per job its overrides and its codec package (None: the job failed)."""
    for number, (overrides, codec) in enumerate(jobs):
        job = root / str(number)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if codec is not None:
            shutil.copytree(codec, job / "codec")
    return root


def test_a_sweep_directory_is_evaluated_as_one_curve_labelled_by_its_swept_values(tmp_path, kodak_dir, packages,
                                                                                   caplog, capsys):
    sweep = _sweep_dir(tmp_path / "multirun", [
        (["callbacks.rate_annealing.lambda_start=2", "model.codec.backbone.lora_rank=16", "trainer=gpu"], packages[0]),
        (["callbacks.rate_annealing.lambda_start=4", "model.codec.backbone.lora_rank=8", "trainer=gpu"], packages[1]),
        (["callbacks.rate_annealing.lambda_start=8", "model.codec.backbone.lora_rank=8", "trainer=gpu"], None)])
    cfg = _cfg(tmp_path, kodak_dir, str(sweep), "metrics=[psnr]", "baselines=[]", "max_images=1")
    evaluate_module.evaluate(cfg)
    report = json.loads((tmp_path / "eval" / "tiny.json").read_text())
    assert len(report["results"]["bpp"]) == 2, "the failed job is left out"
    rows = {r["point"]: r for r in csv.DictReader((tmp_path / "eval" / "per_image.csv").open())}
    bpp_of_job = [float(rows[f"tiny:multirun/{job}"]["bpp"]) for job in (0, 1)]  # one image: its bpp is the point's
    assert dict(zip(report["swept"], report["results"]["bpp"])) == {"λ=2, rank=16": bpp_of_job[0],
                                                                    "λ=4, rank=8": bpp_of_job[1]}
    assert "job 2 (λ=8, rank=8) has no codec package" in caplog.text
    assert "tiny:multirun/1: 100%" in capsys.readouterr().err, "each point shows a progress bar"


def test_the_evaluation_run_joins_the_group_and_tags_of_the_training_runs(tmp_path, packages):
    sweep = _sweep_dir(tmp_path / "multirun", [(["model.codec.backbone.lora_rank=8"], packages[0]),
                                               (["model.codec.backbone.lora_rank=16"], packages[1])])
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for job in ("0", "1"):
        (sweep / job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"sweep_name": "lora_rank",
                                                                            "tags": ["sodec", "lora_rank"]}))
    codecs = [point.path for point in codec_points("SODEC", str(sweep))]
    assert training_runs(codecs) == ("lora_rank-multirun", ["sodec", "lora_rank"])
    assert training_runs(packages) == (None, []), "codecs from no recorded run: no group"


def test_the_value_a_sweep_optimises_is_a_models_bd_rate_against_the_anchor(tmp_path, packages):
    root = _folder(tmp_path / "images", {"a.png": (96, 128)})  # where the two points' PSNR grows with the rate
    cfg = _cfg(tmp_path, root, packages, f"+codecs.copy=[{','.join(packages)}]", "data=folder", "metrics=[psnr]",
               "baselines=[]", "anchor=tiny", "optimized_metric=bd_rate/copy/psnr")
    assert metric_for_sweep(cfg, evaluate_module.evaluate(cfg).scalars()) == pytest.approx(0.0, abs=1e-9)


def test_the_evaluation_run_is_closed_after_an_error(tmp_path, kodak_dir, packages, monkeypatch):
    import wandb

    cfg = _cfg(tmp_path, kodak_dir, packages[:1], "metrics=[psnr]", "baselines=[]", "max_images=1",
               "wandb.enabled=true")
    monkeypatch.setattr(wandb, "Image", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        evaluate_module.evaluate(cfg)
    assert wandb.run is None


def test_a_stage_chain_job_is_represented_by_its_last_stage(tmp_path, packages):
    job = _sweep_dir(tmp_path / "multirun", [(["pipeline.rate_point=4"], None)]) / "0"
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"pipeline": {"stages": {"stage1": [], "stage3": []}}}))
    shutil.copytree(packages[0], job / "stage3" / "codec")
    (job / "stage3" / "final_metrics.json").write_text('{"val/psnr": 20.0}')
    [sweep_job] = read_sweep(tmp_path / "multirun")
    assert sweep_job.codec == job / "stage3" / "codec" and sweep_job.final_metrics == {"val/psnr": 20.0}


def test_missing_weights_stop_the_run_with_the_file_to_fetch(tmp_path, kodak_dir, packages):
    cfg = _cfg(tmp_path, kodak_dir, packages, "metrics=[lpips_vgg]")
    with pytest.raises(MissingWeightsError, match=r"vgg16-.*\.pth.*hub/checkpoints"):
        evaluate_module.evaluate(cfg)


def test_interrupted_evaluation_resumes_without_recomputing(tmp_path, kodak_dir, packages, monkeypatch):
    cfg = _cfg(tmp_path, kodak_dir, packages, "metrics=[psnr]", "baselines=[]")
    from osdic.metrics.evaluation import Evaluator

    original, calls = Evaluator._record, []

    def record_then_die(self, point, name, *args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(name)
        return original(self, point, name, *args)

    monkeypatch.setattr(Evaluator, "_record", record_then_die)
    with pytest.raises(KeyboardInterrupt):
        evaluate_module.evaluate(cfg)
    monkeypatch.setattr(Evaluator, "_record", lambda self, point, name, *a: (calls.append(name), original(self, point, name, *a)))
    evaluate_module.evaluate(cfg)
    assert len(calls) == 4, "the 3 finished images were not recomputed"
    assert len(list(csv.DictReader((tmp_path / "eval" / "per_image.csv").open()))) == 4


def test_compressai_plot_reads_our_json(tmp_path):
    from compressai.utils.plot.__main__ import main as compressai_plot

    summaries = [{"bpp": bpp, "psnr": psnr, "ms_ssim": ms_ssim, "lpips_alex": 0.2, "encoding_time": 0.1,
                  "decoding_time": 0.1} for bpp, psnr, ms_ssim in [(0.4, 30.0, 0.97), (0.1, 25.0, 0.9)]]
    report = compressai_json("tiny", [(Point("tiny", str(i)), s) for i, s in enumerate(summaries)], "", [], {})
    (tmp_path / "tiny.json").write_text(json.dumps(report))
    for metric in ("psnr-rgb", "ms-ssim"):  # CompressAI's own names; "ms-ssim" reads ms-ssim-rgb in dB
        compressai_plot(["-f", str(tmp_path / "tiny.json"), "-m", metric, "-o", str(tmp_path / f"{metric}.png")])
        assert (tmp_path / f"{metric}.png").is_file()
    assert report["results"]["bpp"] == [0.1, 0.4] and report["results"]["psnr-rgb"] == [25.0, 30.0]
    assert report["results"]["lpips-alex"] == [0.2, 0.2], "metrics CompressAI does not plot stay beside"


def test_published_points_are_read_from_the_project_root_under_our_metric_names(tmp_path, monkeypatch):
    reference = tmp_path / "published.csv"
    reference.write_text("method,dataset,bpp,metric,value,source,kind\n"
                         "HiFiC,Kodak,0.1,psnr_rgb,27.5,paper,table\nHiFiC,Kodak,0.1,ms_ssim_rgb,0.93,paper,table\n")
    (tmp_path / "project").mkdir()
    monkeypatch.setattr("osdic.metrics.published.PROJECT_ROOT", tmp_path / "project")
    monkeypatch.chdir(tmp_path / "..")  # the working directory plays no part
    assert published_points("../published.csv", "Kodak", "psnr") == {"HiFiC (table)": [(0.1, 27.5)]}
    assert published_points(str(reference), "Kodak", "ms_ssim") == {"HiFiC (table)": [(0.1, 0.93)]}
    with pytest.warns(RuntimeWarning, match="missing.csv not found"):
        assert published_points("missing.csv", "Kodak", "psnr") == {}


def test_fid_patch_count_for_a_known_size():
    assert fid_patches(torch.zeros(3, 512, 768)).shape == (8, 3, 256, 256)  # 6 + 2 half-shifted
    assert patch_count(256, 256) == 1 and patch_count(383, 1000) == 3 and patch_count(384, 384) == 2


def test_baseline_hits_a_requested_bpp(kodak_dir):
    image = Image.open(kodak_dir / "kodim05.png").convert("RGB")
    for target in (0.3, 1.0):
        coded = baselines.encode_at_bpp(image, "jpeg", target)
        assert coded.bpp(image.width * image.height) == pytest.approx(target, rel=0.1)


def test_bd_rate_of_a_curve_against_itself_and_a_shifted_copy():
    rates, psnrs = [0.1, 0.2, 0.4, 0.8], [27.0, 29.5, 32.0, 34.5]
    assert bd_rate(rates, psnrs, rates, psnrs) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(rates, psnrs, [r * 0.8 for r in rates], psnrs) == pytest.approx(-20.0, abs=1e-6)
    lpips = [0.4, 0.3, 0.2, 0.1]
    assert bd_rate(rates, lpips, [r * 1.25 for r in rates], lpips, higher_is_better=False) == pytest.approx(25.0, abs=1e-6)


def test_bd_rate_table_holds_numbers_or_null_with_the_reason(recwarn):
    curves = {"JPEG": {"bpp": [0.2, 0.4, 0.8], "psnr": [26.0, 28.0, 30.0], "lpips_alex": [0.5, 0.4, 0.3]},
              "good": {"bpp": [0.16, 0.32, 0.64], "psnr": [26.0, 28.0, 30.0], "lpips_alex": [0.1, 0.08, 0.05]},
              "one_point": {"bpp": [0.3], "psnr": [27.0], "lpips_alex": [0.45]},
              "dips": {"bpp": [0.2, 0.3, 0.6], "psnr": [26.5, 26.0, 29.0], "lpips_alex": [0.5, 0.45, 0.3]}}
    table = bd_rate_table(curves, "JPEG", ["psnr", "lpips_alex"])
    assert [row["model"] for row in table] == ["good", "one_point", "dips"], "the anchor is not compared with itself"
    good, one_point, dips = table
    assert good["bd_rate"]["psnr"] == pytest.approx(-20.0, abs=1e-6) and "psnr" not in good["reason"]
    assert good["bd_rate"]["lpips_alex"] is None and "do not overlap" in good["reason"]["lpips_alex"]
    assert one_point["bd_rate"] == {"psnr": None, "lpips_alex": None}
    assert "1 rate point" in one_point["reason"]["psnr"]
    assert dips["bd_rate"]["psnr"] is None and "does not improve with every step" in dips["reason"]["psnr"]
    assert dips["bd_rate"]["lpips_alex"] < 0 and "lpips_alex" not in dips["reason"], "its monotone metric: fewer bits"
    json.dumps(table, allow_nan=False)  # plain numbers and nulls: any JSON reader takes it
    assert not [w for w in recwarn if "overlap" in str(w.message)], "the reason is in the table, not a warning"


def test_benchmark_mode_times_each_decode_module(tmp_path, kodak_dir, packages):
    cfg = _cfg(tmp_path, kodak_dir, packages[:1], "benchmark=true", "benchmark_repeat=2", "benchmark_resolution=[256,384]")
    report = evaluate_module.evaluate(cfg)
    figures = next(iter(report["models"].values()))
    assert list(figures["decode"]) == ["entropy decoding (CPU)", "D_a (fidelity decoder)", "total"]
    assert figures["encode"] > 0 and 0 < figures["bpp"] < 24
    assert report["resolution"] == [256, 384] and report["device"] == "CPU"
    assert not (tmp_path / "eval" / "per_image.csv").exists(), "benchmark mode measures no quality"


def _folder(root: Path, images: dict[str, tuple[int, int]]) -> Path:
    """Random images of the given (height, width) under ``root``; ``None`` for a text file."""
    rng = np.random.default_rng(0)
    for name, size in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if size is None:
            (root / name).write_text("not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name)
    return root


def _evaluate_folder(tmp_path, root, packages, metrics):
    cfg = _cfg(tmp_path, root, packages[:1], "data=folder", "max_images=null", f"metrics=[{metrics}]",
               "baselines=[]")
    evaluate_module.evaluate(cfg)
    out = tmp_path / "eval"
    rows = csv.DictReader((out / "per_image.csv").read_text().splitlines())
    return {r["image"]: r for r in rows}, json.loads((out / "tiny.json").read_text())


def test_the_library_evaluates_codec_packages_without_hydra_or_lightning(tmp_path, packages):
    root = _folder(tmp_path / "images", {"a.png": (64, 64)})
    training_side = ("pytorch_lightning", "lightning", "hydra", "lightning_modules", "datamodules", "callbacks")
    script = ("import sys\nfrom osdic.metrics.datasets import EvalImages\n"
              "from osdic.metrics.evaluate_codecs import evaluate_codecs\n"
              f"result = evaluate_codecs(EvalImages('mine', {str(root)!r}), {{'tiny': {packages!r}}}, "
              f"{str(tmp_path / 'eval')!r}, metrics=['psnr'], baselines=[])\n"
              "print(list(result.curves), len(result.rows))\n"
              f"print(sorted(m for m in {training_side!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-2:] == ["['tiny'] 2", "[]"]
    assert (tmp_path / "eval" / "tiny.json").is_file()


def _compose(config_name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=overrides)


@pytest.mark.parametrize("node, name, size, published_as", [
    ("kodak", "Kodak", (120, 80), "Kodak"), ("clic2020", "CLIC2020", (1000, 800), "CLIC2020"),
    ("clic2020_768", "CLIC2020-768", (768, 768), "CLIC2020-DiffEIC-version"),
    ("div2k", "DIV2K-val", (1020, 700), "DIV2K-val"), ("div2k_val_crop", "DIV2K-val-512", (512, 512), "DIV2K-val-512")])
def test_evaluation_reads_the_data_node_training_reads(tmp_path, monkeypatch, node, name, size, published_as):
    """One tree: evaluate.py's images are a split of the training data node, in its validation view."""
    monkeypatch.delenv("KODAK_DIR", raising=False)
    for folder, image_size in [("kodak", (80, 120)), ("CLIC2020/test", (800, 1000)), ("DIV2K/DIV2K_valid_HR", (700, 1020)),
                               ("DIV2K/DIV2K_train_HR", (64, 64))]:
        _folder(tmp_path / folder, {"a.png": image_size})
    data = _compose("evaluate", [f"data={node}", f"paths.data_dir={tmp_path}"]).data
    [(image_name, image)] = list(split_images(data))
    assert (split_images(data).name, image_name, image.size) == (name, "a.png", size)
    assert split_images(data).published_as == published_as, "the literature's points of the same protocol"
    if published_as != "DIV2K-val-512":  # the published points have no 512² crops of DIV2K
        assert published_points("../shared/reference/published_rd_points.csv", published_as, "dists")
    datamodule = instantiate_node(data, "data")
    datamodule.setup("validate")
    assert torch.equal(datamodule.datasets["val"][0], to_tensor(image)), "validation sees what evaluation sees"


@pytest.mark.parametrize("overrides, message", [
    (["data.test_dirs=[/nonexistent/kodak]"], r"data\.test_dirs: dataset directory /nonexistent/kodak does not exist"),
    (["data=lsdir"], r"data\.test_dirs: DIV2K-val has no test folders to evaluate"),
    (["split=val", "data.val_dirs=[/nonexistent/val]"], r"data\.val_dirs: dataset directory /nonexistent/val does"),
])
def test_a_missing_evaluation_folder_is_reported_under_its_key(tmp_path, packages, overrides, message):
    cfg = _compose("evaluate", [f"+codecs.tiny=[{packages[0]}]", f"output_dir={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=message):
        evaluate_module.evaluate(cfg)


def test_an_unreadable_image_is_skipped_named_and_listed(tmp_path, packages):
    root = _folder(tmp_path / "images", {"a.png": (64, 64), "broken.png": None})
    with pytest.warns(RuntimeWarning, match=r"skipping unreadable image .*broken\.png"):
        rows, report = _evaluate_folder(tmp_path, root, packages, "psnr")
    assert list(rows) == ["a.png"]
    assert list(report["skipped_images"]) == ["broken.png"]
    assert "cannot identify" in report["skipped_images"]["broken.png"]


def test_ms_ssim_is_not_available_under_its_minimum_size_and_other_metrics_are_kept(tmp_path, packages):
    root = _folder(tmp_path / "images", {"big.png": (192, 192), "small.png": (64, 96)})
    with pytest.warns(RuntimeWarning, match="ms_ssim is not defined for some images"):
        rows, report = _evaluate_folder(tmp_path, root, packages, "psnr,ms_ssim")
    assert math.isnan(float(rows["small.png"]["ms_ssim"])) and "176 px" in rows["small.png"]["not_available"]
    assert not math.isnan(float(rows["big.png"]["ms_ssim"])) and rows["big.png"]["not_available"] == ""
    assert report["results"]["ms-ssim-rgb"] == [pytest.approx(float(rows["big.png"]["ms_ssim"]))], "mean over the others"
    assert report["results"]["psnr-rgb"] == [pytest.approx(np.mean([float(r["psnr"]) for r in rows.values()]))]
    assert list(report["not_available"]) == ["small.png"]


def test_same_file_name_in_a_subfolder_keeps_its_own_results(tmp_path, packages):
    root = _folder(tmp_path / "images", {"a.png": (64, 64), "sub/a.png": (64, 128)})
    rows, _ = _evaluate_folder(tmp_path, root, packages, "psnr")
    assert {name: row["width"] for name, row in rows.items()} == {"a.png": "64", "sub/a.png": "128"}
    reconstructions = tmp_path / "eval" / "reconstructions" / "tiny:point0"
    assert Image.open(reconstructions / "a.png").width == 64
    assert Image.open(reconstructions / "sub" / "a.png").width == 128
    resumed, _ = _evaluate_folder(tmp_path, root, packages, "psnr")  # every image done: nothing recomputed
    assert resumed == rows


@pytest.mark.parametrize("metric, file_name", [("clipiqa", "RN50.pt"), ("musiq", "musiq_koniq_ckpt-e95806b9.pth")])
def test_no_reference_metrics_come_from_pyiqa_and_stop_without_their_weights(tmp_path, monkeypatch, metric, file_name):
    """CLIPQA and MUSIQ as the literature computes them (pyiqa), never downloaded behind the
    user's back and never random without the tests' flag, which then marks them."""
    from osdic.checks import MissingWeightsError
    from osdic.metrics.quality import metric_spec

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch hub cache
    with pytest.raises(MissingWeightsError, match=file_name) as error:
        metric_spec(metric).build(False)
    assert "https://" in str(error.value) and "allow_random_weights" in str(error.value)
    built = metric_spec(metric).build(True)
    assert built.random_weights and type(built.metric.net).__module__.startswith("pyiqa.")
    scores = built(torch.rand(2, 3, 96, 128))
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_a_clip_file_that_is_not_openais_is_never_run(tmp_path, monkeypatch):
    from osdic.checks import MissingWeightsError
    from osdic.metrics.iqa import WEIGHT_FILES, PyIQAMetric

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = WEIGHT_FILES["clipiqa"][0].path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a TorchScript archive from somewhere else")
    with pytest.raises(MissingWeightsError, match="not the published file"):
        PyIQAMetric("clipiqa")


def test_musiq_weights_are_read_as_tensors_only(tmp_path, monkeypatch):
    from osdic.metrics.iqa import WEIGHT_FILES, PyIQAMetric
    from osdic.utils.untrusted import UntrustedFileError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = PyIQAMetric("musiq", allow_random_weights=True)
    path = WEIGHT_FILES["musiq"][0].path
    path.parent.mkdir(parents=True)
    torch.save({k: v + 0.01 for k, v in reference.metric.net.state_dict().items()}, path)
    loaded = PyIQAMetric("musiq")
    assert not loaded.random_weights
    assert torch.equal(loaded.metric.net.head.weight, reference.metric.net.head.weight + 0.01)
    torch.save({"weights": reference.metric.net.state_dict(), "made_by": PyIQAMetric}, path)  # pickles a class
    with pytest.raises(UntrustedFileError):
        PyIQAMetric("musiq")


@pytest.mark.parametrize("metric", ["lpips_vgg", "dists", "clipiqa", "musiq"])
def test_random_weight_metrics_are_the_same_random_network_in_every_run(metric, tmp_path, monkeypatch):
    """A table's arms are evaluated by separate processes: random-weight metrics (tests, miniature
    tables) must be one network, or a table would compare draws of the metric, not the arms."""
    from osdic.metrics.quality import metric_spec

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    x_hat, x = torch.rand(1, 3, 96, 96), torch.rand(1, 3, 96, 96)
    first = metric_spec(metric).build(True)
    torch.manual_seed(123)  # the global RNG's state must not matter
    assert torch.equal(first(x_hat, x), metric_spec(metric).build(True)(x_hat, x))
