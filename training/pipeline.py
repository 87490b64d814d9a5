"""A chain of training stages as one job: ``python train.py pipeline=sodec_rd_point``.

Each stage is ``python train.py <its overrides> <the job's other overrides>`` in its own process
and directory (``<job dir>/<stage>``), started from its predecessor's ``checkpoints/last.ckpt``
(``model.init_from``). A stage whose directory holds ``final_metrics.json`` is finished and
skipped, and an unfinished one resumes from its own last checkpoint, so a requeued job
continues the chain where it stopped. Separate processes keep stages apart: each builds its own
model, its DDP processes (Lightning re-launches the stage, not the chain) and its W&B run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from osdic.checks import ConfigError

#: overrides of the chain's own job that are not forwarded to its stages
_CHAIN_ONLY = ("pipeline", "sweep=", "hydra.", "hydra/", "ckpt_path")


def stage_command(script: Path, stage_overrides: Sequence[str], forwarded: Sequence[str], stage_dir: Path,
                  previous: Path | None) -> list[str]:
    command = [sys.executable, str(script), *stage_overrides, *forwarded, f"hydra.run.dir={stage_dir}"]
    if previous is not None:
        command.append(f"model.init_from={previous / 'checkpoints' / 'last.ckpt'}")
    return command


def run_pipeline(script: Path, stages: Mapping[str, Sequence[str]], job_overrides: Sequence[str],
                 output_dir: str | Path) -> dict[str, float]:
    """Run the stages in order; return the last stage's final metrics."""
    if not stages:
        raise ConfigError("pipeline.stages", "no stages to run")
    output_dir = Path(output_dir)
    forwarded = [o for o in job_overrides if not o.lstrip("+~").startswith(_CHAIN_ONLY)]
    previous: Path | None = None
    metrics: dict[str, float] = {}
    for number, (name, overrides) in enumerate(stages.items(), start=1):
        stage_dir = output_dir / name
        finished = stage_dir / "final_metrics.json"
        if finished.is_file():
            print(f"[pipeline] stage {number}/{len(stages)} {name}: finished earlier ({finished})", flush=True)
        else:
            print(f"[pipeline] stage {number}/{len(stages)} {name} → {stage_dir}", flush=True)
            command = stage_command(script, list(overrides), forwarded, stage_dir, previous)
            result = subprocess.run(command, env=os.environ.copy())
            if result.returncode != 0:
                raise RuntimeError(f"pipeline stage {name} failed (exit {result.returncode}): {' '.join(command)}")
        metrics = json.loads(finished.read_text())
        previous = stage_dir
    return metrics
