"""A run's identity under Hydra: its overrides, sweep, output dir — for W&B naming, requeue and
resume, and for keeping Hydra multirun and Lightning's DDP launcher apart."""

from __future__ import annotations

import hashlib
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import torch

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, read_write

from osdic import PROJECT_ROOT
from osdic.metrics.sweep import display_name, group_name
from training.checkpoint_io import checksum_path, file_sha256

#: overrides that locate a run rather than define it (left out of W&B run names)
_LOCATING = ("hydra.", "paths.", "ckpt_path", "logger", "trainer.devices", "trainer.num_nodes", "model.init_from",
             "experiment", "debug")
log = logging.getLogger(__name__)


CONF_DIR = PROJECT_ROOT / "conf"


def compose_run_config(overrides: list[str], output_dir: str | Path, config_name: str = "train"):
    """Compose a config as ``python train.py <overrides>`` would, for a run in ``output_dir``
    (benchmarks and tests call ``train()`` on it without Hydra's command line)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    output_dir = Path(output_dir)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.paths.cache_dir = str(output_dir.parent / "cache")
        cfg.paths.root_dir = str(output_dir)
        del cfg.hydra
    return cfg


def hydra_config():
    return HydraConfig.get() if HydraConfig.initialized() else None


def job_overrides() -> list[str]:
    hc = hydra_config()
    return list(hc.overrides.task) if hc is not None else []


def is_multirun() -> bool:
    hc = hydra_config()
    return hc is not None and hc.mode == RunMode.MULTIRUN


def _is_sweep_value(value: str) -> bool:
    """``a,b`` (a comma outside brackets) or one of Hydra's sweep functions."""
    if value.startswith(("range(", "choice(", "interval(", "glob(", "tag(")):
        return True
    depth = 0
    for char in value:
        depth += char in "[({"
        depth -= char in "])}"
        if char == "," and depth == 0:
            return True
    return False


def swept_keys() -> set[str]:
    """The keys a multirun varies: its sweeper's params and its sweeping command-line overrides."""
    hc = hydra_config()
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return set()
    keys = set((hc.sweeper.get("params") or {}).keys())
    multirun = Path(hc.sweep.dir) / "multirun.yaml"
    if multirun.is_file():
        for override in OmegaConf.load(multirun).hydra.overrides.task:
            key, _, value = override.lstrip("+~").partition("=")
            if _is_sweep_value(value):
                keys.add(key)
    return keys


def run_name(stage: str) -> str:
    """The stage and the values that make this run differ from its sweep's other jobs (in a
    multirun) or from the defaults (otherwise), e.g. ``sodec_stage3 λ=2, rank=16`` — never where
    it runs or starts from (output dirs, ``model.init_from``)."""
    overrides = [o.lstrip("+~") for o in job_overrides()]
    swept = swept_keys()
    if swept:
        defining = [o for o in overrides if o.split("=", 1)[0] in swept]
    else:
        defining = [o for o in overrides if not o.startswith(_LOCATING)]
    values = ", ".join(f"{display_name(key)}={value}" for key, _, value in (o.partition("=") for o in defining))
    return f"{stage} {values}" if values else stage


def sweep_group(sweep_name: str | None = None) -> str | None:
    """All jobs of one multirun share a W&B group named after the sweep (:func:`group_name`);
    None outside a multirun."""
    hc = hydra_config()
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return None
    return group_name(Path(hc.sweep.dir), sweep_name)


def stable_run_id(output_dir: str) -> str:
    """A W&B run id derived from the job's output dir: a requeued job continues its run."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]


def isolate_multirun_job(script: Path) -> None:
    """Lightning's DDP launcher re-runs ``sys.argv`` (or ``python -m <__main__>``) for ranks > 0;
    in a multirun job that would start the whole sweep again, and under a submitit launcher it
    would run submitit's worker. Make it ``python <script> <this job's overrides>`` in the job's
    output dir (which Lightning appends), so every sweep job is its own process tree."""
    if is_multirun():
        import __main__

        sys.argv = [str(script), *job_overrides()]
        if getattr(__main__, "__spec__", None) is not None:
            __main__.__spec__ = None  # Lightning then launches the script by path
        hc = HydraConfig.get()
        with read_write(hc):  # Lightning builds the child command from hydra.run.dir
            hc.run.dir = hc.runtime.output_dir


def resume_checkpoint(ckpt_path: str | None, output_dir: str) -> str | None:
    """``ckpt_path: auto``: the newest complete checkpoint the job wrote (requeue after a
    preemption), None when it wrote none. Candidates: ``checkpoints/*.ckpt`` (last.ckpt, the
    step checkpoints, preempted.ckpt) and Lightning's SLURM ``hpc_ckpt_*.ckpt``; the newest is
    the last written. One whose bytes differ from the SHA-256 written beside it, or that cannot be
    read (truncated by a full disk or a kill), is skipped with a warning; if none can be used,
    the run stops rather than start over."""
    if ckpt_path != "auto":
        return ckpt_path
    out = Path(output_dir)
    candidates = sorted([*(out / "checkpoints").glob("*.ckpt"), *out.glob("hpc_ckpt_*.ckpt")],
                        key=lambda path: path.stat().st_mtime_ns, reverse=True)
    for path in candidates:
        checksum = checksum_path(path)
        if checksum.is_file() and checksum.read_text().split()[0] != file_sha256(path):
            log.warning("ckpt_path=auto: skipping corrupt checkpoint %s (its bytes no longer match %s)", path,
                        checksum.name)
            continue
        try:  # the structure and every tensor's record are read; the tensor data is only mapped
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
            log.warning("ckpt_path=auto: skipping unreadable checkpoint %s (%s: %s)", path, type(exc).__name__, exc)
            continue
        log.info("ckpt_path=auto: resuming from %s", path)
        return str(path)
    if candidates:
        raise RuntimeError(f"ckpt_path=auto: none of the checkpoints of {out} can be read "
                           f"({', '.join(p.name for p in candidates)}); set ckpt_path=null to start over")
    return None


def write_provenance(output_dir: str) -> list[Path]:
    """The git commit (and dirty state) and ``pip freeze``, saved with the run."""
    folder = Path(output_dir) / "provenance"
    folder.mkdir(parents=True, exist_ok=True)
    git = subprocess.run(["git", "-C", str(PROJECT_ROOT), "log", "-1", "--format=%H %s"], capture_output=True, text=True)
    status = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--short"], capture_output=True, text=True)
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True)
    files = {"git.txt": git.stdout + ("\nuncommitted changes:\n" + status.stdout if status.stdout else ""),
             "pip_freeze.txt": freeze.stdout}
    for name, text in files.items():
        (folder / name).write_text(text)
    return [folder / name for name in files]
