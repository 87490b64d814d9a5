"""Before a long job, everything the composed config needs, checked in one pass:

    python -m training.preflight doctor experiment=sodec_stage3 data=lsdir
    python -m training.preflight doctor --config evaluate data=kodak "metrics=[psnr,lpips_alex,fid256]"
    python -m training.preflight download experiment=sodec_stage3 data=lsdir   # on a machine with internet

``doctor`` lists every dataset folder, pretrained weight (the Hugging Face cache looked up
offline, the torch hub cache), GPU and package the config needs, with its state and the command
that fixes it, and exits with status 1 when anything is missing. It never touches the network.
``download`` fetches every weight the config needs into the caches (``HF_HOME``, ``TORCH_HOME``),
so a training node without internet only reads files.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from osdic.metrics.iqa import WEIGHT_FILES, WeightFile

#: metrics (validation's and evaluation's) → the torchvision backbone whose weights they read
TORCHVISION_BACKBONE = {"lpips_alex": "alex", "lpips_vgg": "vgg", "dists": "vgg"}


@dataclass
class Requirement:
    kind: str  # dataset | weights | gpu | package
    key: str  # the config key that asks for it
    what: str
    ok: bool
    state: str
    fix: str = ""
    fetch: Callable[[], None] | None = None  # what `download` runs for a missing weight


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """The config as ``python train.py <overrides>`` (or evaluate.py) would compose it here."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from training.run import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")
    else:
        yield path, node


# ------------------------------------------------------------------------- datasets
def _folder(key: str, folder: str) -> Requirement:
    path = Path(folder)
    if not path.is_dir():
        return Requirement("dataset", key, folder, False, "no such folder",
                           f"put the images there, or set {key.split('[')[0]}=[<your folder>]")
    if next(path.iterdir(), None) is None:
        return Requirement("dataset", key, folder, False, "empty folder", "put the images there")
    return Requirement("dataset", key, folder, True, "present")


def dataset_requirements(cfg: dict) -> list[Requirement]:
    """The folders the run reads: training's and validation's, or evaluation's ``split``."""
    found = []
    data = cfg.get("data") or {}
    for key in (f"{cfg['split']}_dirs",) if "split" in cfg else ("train_dirs", "val_dirs"):
        for index, folder in enumerate(data.get(key) or []):
            found.append(_folder(f"data.{key}[{index}]", folder))
    shards = data.get("train_shards")
    if shards and "://" in str(shards):
        found.append(Requirement("dataset", "data.train_shards", shards, True, "remote, read when training starts"))
    elif shards:
        ok = (Path(shards) / "index.json").is_file()
        found.append(Requirement("dataset", "data.train_shards", shards, ok, "prepared" if ok else "no index.json",
                                 "" if ok else f"python -m datamodules.prepare <image folder> -o {shards}"))
    return found


# -------------------------------------------------------------------------- weights
def hf_model(key: str, repo: str, revision: str | None = None) -> Requirement:
    """A model id in the Hugging Face cache (looked up offline), or a local directory."""
    if Path(repo).expanduser().is_absolute() or repo.startswith(".") or Path(repo).exists():
        ok = Path(repo).expanduser().is_dir()
        return Requirement("weights", key, repo, ok, "local directory" if ok else "no such directory",
                           "" if ok else f"hf download <model id> --local-dir {repo}")
    from huggingface_hub import snapshot_download

    def fetch() -> None:
        snapshot_download(repo, revision=revision)

    try:
        path = snapshot_download(repo, revision=revision, local_files_only=True)
    except Exception:  # huggingface_hub's "not in the cache" errors differ between versions
        return Requirement("weights", key, repo, False, "not in the Hugging Face cache",
                           f"hf download {repo}" + (f" --revision {revision}" if revision else ""), fetch)
    return Requirement("weights", key, repo, True, f"cached ({path})")


def torchvision_backbone(key: str, net: str) -> Requirement:
    from osdic.metrics.perceptual import torchvision_weights_path

    path, url = torchvision_weights_path(net)
    ok = path.is_file()
    return Requirement("weights", key, path.name, ok, f"cached ({path})" if ok else f"not at {path}",
                       "" if ok else f"curl -L {url} -o {path}",
                       lambda: (path.parent.mkdir(parents=True, exist_ok=True), torch.hub.download_url_to_file(url, str(path))))


def weight_file(key: str, file: WeightFile) -> Requirement:
    """A file of a pyiqa metric in the torch hub folder, checked as the metric checks it."""
    problem = file.problem()
    return Requirement("weights", key, file.path.name, problem is None, f"cached ({file.path})" if problem is None
                       else problem, "" if problem is None else f"curl -L {file.url} -o {file.path}",
                       lambda: (file.path.parent.mkdir(parents=True, exist_ok=True),
                                torch.hub.download_url_to_file(file.url, str(file.path))))


def fid_inception(key: str) -> Requirement:
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    except ImportError:
        return Requirement("package", key, "torch-fidelity", False, "not installed", "pip install torch-fidelity")
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(URL_INCEPTION_V3).name
    ok = path.is_file()
    return Requirement("weights", key, path.name, ok, f"cached ({path})" if ok else f"not at {path}",
                       "" if ok else f"curl -L {URL_INCEPTION_V3} -o {path}",
                       lambda: (path.parent.mkdir(parents=True, exist_ok=True),
                                torch.hub.download_url_to_file(URL_INCEPTION_V3, str(path))))


def weight_requirements(cfg: dict) -> list[Requirement]:
    if cfg.get("allow_random_weights"):
        return []
    found: dict[str, Requirement] = {}  # by what: a model several keys ask for is listed once
    items = dict(_walk(cfg))
    for key, value in items.items():
        if key.endswith(".pretrained") and isinstance(value, str) and not key.startswith("hydra"):
            revision = items.get(key.rsplit(".", 1)[0] + ".revision")
            found.setdefault(value, hf_model(key, value, revision))
    model = cfg.get("model") or {}
    distortion = model.get("distortion") or {}
    if distortion.get("lpips_weight"):
        net = distortion.get("lpips_net", "vgg")  # DistortionLoss's default
        found.setdefault(f"tv:{net}", torchvision_backbone("model.distortion.lpips_net", net))
    for key, metrics in [("model.val_metrics", model.get("val_metrics")), ("metrics", cfg.get("metrics"))]:
        for metric in metrics or []:
            if metric in TORCHVISION_BACKBONE:
                net = TORCHVISION_BACKBONE[metric]
                found.setdefault(f"tv:{net}", torchvision_backbone(key, net))
            elif metric in WEIGHT_FILES:
                for file in WEIGHT_FILES[metric]:
                    found.setdefault(file.relative_path, weight_file(key, file))
            elif metric in ("fid256", "kid256"):
                found.setdefault("fid", fid_inception(key))
    return list(found.values())


# ----------------------------------------------------------------- GPU and packages
def gpu_requirements(cfg: dict) -> list[Requirement]:
    trainer = cfg.get("trainer") or {}
    wants_gpu = trainer.get("accelerator") in ("gpu", "cuda") or cfg.get("device") == "cuda"
    if not wants_gpu:
        return []
    devices = trainer.get("devices", 1)
    wanted = devices if isinstance(devices, int) and devices > 0 else 1
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    found = [Requirement("gpu", "trainer.devices", f"{wanted} CUDA GPU(s)", have >= wanted,
                         f"{have} visible" + (f" ({torch.cuda.get_device_name(0)})" if have else ""),
                         "" if have >= wanted else "run on a GPU node (CUDA_VISIBLE_DEVICES), or trainer=cpu")]
    if have and "bf16" in str(trainer.get("precision")) and not torch.cuda.is_bf16_supported():
        found.append(Requirement("gpu", "trainer.precision", "bfloat16", False, "not supported by this GPU",
                                 "trainer.precision=16-mixed"))
    return found


def package_requirements(cfg: dict, hydra_cfg: dict) -> list[Requirement]:
    """The module of every ``_target_`` (the launcher's and sweeper's included) and the
    baselines' plugins, imported: a missing dependency shows up here, not hours later."""
    from osdic.metrics import baselines

    targets = {value.rsplit(".", 1)[0]: key.rsplit("._target_", 1)[0]
               for key, value in [*_walk(cfg), *_walk({"hydra": hydra_cfg})]
               if key.endswith("_target_") and isinstance(value, str) and "." in value}
    found = []
    for module, key in targets.items():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            package = (exc.name or module).split(".")[0].replace("_", "-")
            found.append(Requirement("package", key, module, False, f"cannot import: {exc}", f"pip install {package}"))
    found.append(Requirement("package", "_target_", f"{len(targets) - len(found)} of {len(targets)} modules",
                             not found, "importable"))
    for codec in cfg.get("baselines") or []:
        ok = baselines.available(codec)
        plugin = {"hevc": "pillow-heif", "jxl": "pillow-jxl-plugin"}.get(codec, "pillow")
        found.append(Requirement("package", "baselines", codec, ok, "available" if ok else "no encoder",
                                 "" if ok else f"pip install {plugin}"))
    return found


def requirements(config_name: str, overrides: list[str]) -> list[Requirement]:
    cfg = compose(config_name, overrides)
    hydra_cfg = {part: OmegaConf.to_container(cfg.hydra[part], resolve=False) for part in ("launcher", "sweeper")}
    with open_dict(cfg):
        del cfg.hydra  # its run-time values (job number, …) do not exist before a run
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return [*dataset_requirements(plain), *weight_requirements(plain), *gpu_requirements(plain),
            *package_requirements(plain, hydra_cfg)]


def report(found: list[Requirement]) -> str:
    lines = []
    for req in found:
        mark = "ok     " if req.ok else "MISSING"
        lines.append(f"[{mark}] {req.kind:8} {req.key}: {req.what} — {req.state}" + (f"\n          fix: {req.fix}"
                                                                                   if req.fix else ""))
    missing = [r for r in found if not r.ok]
    lines.append(f"\n{len(found)} checked, {len(missing)} missing" + (
        "; `python -m training.preflight download <the same overrides>` fetches the weights on a machine with internet"
        if any(r.fetch for r in missing) else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["doctor", "download"])
    parser.add_argument("--config", default="train", choices=["train", "evaluate"], help="the entry point's config")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to train.py / evaluate.py")
    args = parser.parse_intermixed_args(argv)  # `doctor --config evaluate data=kodak`: options among the overrides
    if args.command == "doctor":
        os.environ["HF_HUB_OFFLINE"] = "1"  # a lookup in the cache, never a request
        found = requirements(args.config, args.overrides)
        print(report(found))
        return 0 if all(r.ok for r in found) else 1
    found = requirements(args.config, args.overrides)
    failed = []
    for req in (r for r in found if not r.ok and r.fetch):
        print(f"downloading {req.what} ({req.key})", flush=True)
        try:
            req.fetch()
        except Exception as exc:  # report every failure, then fail
            failed.append(f"{req.what}: {exc}")
    print("\n".join(["download failed:", *failed]) if failed else "every weight the config needs is in the caches")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
