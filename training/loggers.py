"""Logger construction and teardown: training runs' WandbLogger, evaluation's W&B run."""

from __future__ import annotations

import netrc
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from pytorch_lightning.loggers import WandbLogger

from osdic.metrics.sweep import training_runs
from training.run import hydra_config, run_name, stable_run_id, sweep_group, write_provenance

if TYPE_CHECKING:  # the evaluation's modules (metrics, plots) are not a training run's
    from osdic.metrics.evaluate_codecs import EvaluationResult


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def build_wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: Sequence[str] = (),
    offline: bool | str = "auto",
    sweep_name: str | None = None,
    **kwargs,
) -> WandbLogger:
    """WandbLogger that goes offline by itself when no credentials are configured
    (``offline: auto``; ``WANDB_MODE`` in the environment still wins, as in wandb itself).
    Unset ``name``/``group`` come from the run: the stage and the values that differ, and the
    sweep; a ``debug=…`` run is tagged so. The
    run id is derived from the output dir, so a requeued job continues the same run."""
    if offline == "auto":
        offline = not wandb_has_credentials() and "WANDB_MODE" not in os.environ
    os.makedirs(save_dir, exist_ok=True)
    debug = (hydra_config().runtime.choices.get("debug") if hydra_config() is not None else None)
    logger = WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name or run_name(job_type or "run"),
        group=group or sweep_group(sweep_name),
        job_type=job_type,
        tags=[*tags, *([f"debug={debug}"] if debug else [])],  # a smoke-test run, kept out of comparisons
        offline=bool(offline),
        id=stable_run_id(save_dir),
        resume="allow",
        **kwargs,
    )
    # Lightning passes anonymous=None, which wandb warns has no effect: leave it unset
    logger._wandb_init.pop("anonymous", None)
    return logger


def describe_wandb_run(logger: WandbLogger, output_dir: str) -> None:
    """The git commit and pip freeze saved with the run (rank 0 only). Summaries stay W&B's
    default, each metric's last value: every ``val/*`` of the last validation, so a dashboard's
    RD scatter pairs the bpp and the quality of one checkpoint (the exported codec's), never the
    best PSNR of one step with the bpp of another."""
    run = logger.experiment
    save_with_run(run, write_provenance(output_dir), output_dir)


def save_with_run(run, paths: Sequence[Path], base_path: str | Path) -> None:
    """Copy files into the run's folder, which W&B uploads with the run (``run.save`` links them
    there instead and warns each time)."""
    for path in paths:
        target = Path(run.dir) / Path(path).relative_to(base_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def log_evaluation(project: str, result: EvaluationResult, config: dict[str, Any]) -> None:
    """One W&B run (offline without credentials, ``WANDB_MODE`` wins) in the group of the runs
    that trained the codecs (one sweep) with their tags, holding the RD table and plots, the
    per-image table, the JSON summaries and the samples of ``result``. The run stays open:
    the caller closes it (:func:`finish_wandb`), after an error too."""
    import wandb

    out = result.output_dir
    mode = None if "WANDB_MODE" in os.environ else "online" if wandb_has_credentials() else "offline"
    group, tags = training_runs(result.codec_paths)
    run = wandb.init(project=project, job_type="evaluate", dir=str(out), mode=mode, name=f"evaluate-{result.dataset}",
                     group=group, tags=[*tags, "evaluate"], config=config)
    columns = list(dict.fromkeys(k for row in result.rows for k in row))
    run.log({"evaluate/per_image": wandb.Table(columns=columns, data=[[r.get(c) for c in columns]
                                                                       for r in result.rows])})
    rd_columns = ["model", "point", "bpp", *result.metrics]
    run.log({"evaluate/rd_table": wandb.Table(columns=rd_columns, data=[
        [model, (curve.get("swept") or [""] * len(curve["bpp"]))[i], *(curve[c][i] for c in rd_columns[2:])]
        for model, curve in result.curves.items() for i in range(len(curve["bpp"]))])})
    run.log({f"evaluate/rd_{m}": wandb.Image(str(out / f"rd_{m}.png")) for m in result.metrics})
    run.log({"evaluate/samples": wandb.Image(str(out / "samples.png"))})
    save_with_run(run, sorted(out.glob("*.json")), out)


def finish_wandb(exit_code: int = 0) -> None:
    """Close the W&B run if one is open (between multirun jobs, and after an exception)."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)
