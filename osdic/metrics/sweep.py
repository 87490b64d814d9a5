"""A sweep's (Hydra multirun's) jobs read from its directory, as data: each job's overrides
(``<job>/.hydra/overrides.yaml``), final metrics and codec package, and the label of its point
on an RD curve — its swept values, e.g. ``λ=2, rank=16``. A job of a stage chain
(``pipeline=…``) is represented by its last stage."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

#: swept keys that set a job's rate: jobs differing only in these are points of one RD curve
RATE_KEYS = ("lambda_start", "lambda_end", "rate_point", "target_bpp")
#: short names of keys in run names and RD-curve labels (the key's last part otherwise)
DISPLAY_NAMES = {"lambda_start": "λ", "lambda_end": "λ_end", "rate_point": "λ", "lora_rank": "rank",
                 "weight": "β", "target_bpp": "target bpp"}


@dataclass
class SweepJob:
    directory: Path
    overrides: dict[str, str]

    @property
    def output_dir(self) -> Path:
        """The job's run directory; for a stage chain, its last stage's."""
        config_file = self.directory / ".hydra" / "config.yaml"
        config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
        stages = ((config or {}).get("pipeline") or {}).get("stages") or {}
        return self.directory / list(stages)[-1] if stages else self.directory

    @property
    def codec(self) -> Path | None:
        codec = self.output_dir / "codec"
        return codec if (codec / "codec.json").is_file() else None

    @property
    def final_metrics(self) -> dict[str, float]:
        """``final_metrics.json``, empty for a job that failed or has not finished."""
        path = self.output_dir / "final_metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def display_name(key: str) -> str:
    """``callbacks.rate_annealing.lambda_start`` → ``λ``, ``model/codec/guidance`` → ``guidance``."""
    last = key.replace("/", ".").rsplit(".", 1)[-1]
    return DISPLAY_NAMES.get(last, last)


def group_name(sweep_dir: Path, sweep_name: str | None) -> str:
    """The W&B group of a sweep's runs: ``<sweep_name>-<sweep dir>`` (the directory alone for an
    ad-hoc sweep), so two launches of one sweep stay apart."""
    return f"{sweep_name}-{sweep_dir.name}" if sweep_name else sweep_dir.name


def is_sweep(path: str | Path) -> bool:
    return any(Path(path).glob("*/.hydra/overrides.yaml"))


def read_sweep(sweep_dir: str | Path) -> list[SweepJob]:
    """The jobs of a multirun directory, in job order."""
    files = sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml"),
                   key=lambda p: (not p.parts[-3].isdigit(), int(p.parts[-3]) if p.parts[-3].isdigit() else p.parts[-3]))
    if not files:
        raise FileNotFoundError(f"no sweep jobs (*/.hydra/overrides.yaml) under {sweep_dir}")
    return [SweepJob(f.parent.parent, dict(o.lstrip("+~").split("=", 1) for o in yaml.safe_load(f.read_text()) or []))
            for f in files]


def swept_keys(overrides: list[dict[str, str]]) -> list[str]:
    """The keys whose values differ between the jobs' ``overrides`` (the first key for a single job)."""
    keys = list(dict.fromkeys(k for job in overrides for k in job))
    return [k for k in keys if len({job.get(k) for job in overrides}) > 1] or keys[:1]


def is_rate_key(key: str) -> bool:
    return key.replace("/", ".").rsplit(".", 1)[-1] in RATE_KEYS


def point_label(job: SweepJob, keys: list[str]) -> str:
    """``λ=2, rank=16``: the job's values of ``keys``."""
    return ", ".join(f"{display_name(k)}={job.overrides.get(k, '')}" for k in keys)


def training_runs(codecs: list[str]) -> tuple[str | None, list[str]]:
    """The W&B group and tags of the runs that trained ``codecs`` (packages ``<run>/codec`` or
    checkpoints ``<run>/checkpoints/*.ckpt``), read from the runs' saved configs as data: the
    group when they all come from one sweep, else None."""
    groups, tags = [], []
    for codec in map(Path, codecs):
        run = codec.parent.parent if codec.suffix == ".ckpt" else codec.parent
        config_file = run / ".hydra" / "config.yaml"
        config = (yaml.safe_load(config_file.read_text()) if config_file.is_file() else None) or {}
        tags += [tag for tag in config.get("tags") or [] if tag not in tags]
        if (run.parent / "multirun.yaml").is_file():
            groups.append(group_name(run.parent, config.get("sweep_name")))
    return (groups[0] if len(set(groups)) == 1 else None), tags
