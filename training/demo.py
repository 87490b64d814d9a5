"""`make demo`: the whole method on a CPU in minutes, on photos shipped inside installed packages.

    python -m training.demo [--out logs/demo]

1. In parallel, one CPU thread each: the stand-in for SD 2.1 (:mod:`training.standin_backbone`,
   cached) and stage 1 at three λ (an RD curve of the stage-1 codec).
2. SODEC stage 2 from the middle λ's stage 1, on the stand-in backbone.
3. SODEC stage 3 from stage 2, λ annealed upwards (the rate falls).
4. evaluate.py on the held-out photos: real files of every codec beside JPEG and WebP on a
   quality grid, BD-rates, RD plots, a sample grid.
5. The summary (:mod:`training.demo_report`): each stage's start and end, then the RD table.

Every job writes its log into its run directory; a failed job stops the demo with its log's tail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from osdic import PROJECT_ROOT

LAMBDAS = ("0.004", "0.012", "0.04")
STANDIN = PROJECT_ROOT / ".cache" / "standin-sd"
SAMPLES = PROJECT_ROOT / ".cache" / "skimage_samples"


def _job(name: str, command: list[str], log: Path, threads: int) -> tuple[str, subprocess.Popen, Path, float]:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return name, process, log, time.perf_counter()


def run(jobs: list[tuple[str, list[str], Path]], threads: int, start: float) -> None:
    """Run ``jobs`` at once and wait for all; stop the demo at the first failure."""
    running = [_job(name, command, log, threads) for name, command, log in jobs]
    print(f"[demo {time.perf_counter() - start:4.0f} s] started: " + ", ".join(name for name, *_ in running), flush=True)
    while running:
        time.sleep(1)
        for job in list(running):
            name, process, log, began = job
            if process.poll() is None:
                continue
            running.remove(job)
            if process.returncode != 0:
                for _, other, _, _ in running:
                    other.terminate()
                tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
                sys.exit(f"[demo] {name} failed (exit {process.returncode}); the end of {log}:\n{tail}")
            print(f"[demo {time.perf_counter() - start:4.0f} s] done: {name} ({time.perf_counter() - began:.0f} s)",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "logs" / "demo")
    args = parser.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    python, train = sys.executable, str(PROJECT_ROOT / "train.py")

    from datamodules.samples import materialize_samples

    train_photos, held_out = materialize_samples(SAMPLES)
    stage1 = {lmbda: out / f"stage1_lambda{lmbda}" for lmbda in LAMBDAS}
    run([("stand-in SD", [python, "-m", "training.standin_backbone", "--photos", str(train_photos), "--out", str(STANDIN),
                           "--vae-steps", "300", "--unet-steps", "150"],
          out / "standin.log")]
        + [(f"stage 1, λ = {lmbda}", [python, train, "experiment=demo", f"callbacks.rate_annealing.lambda_start={lmbda}",
                                      f"hydra.run.dir={run_dir}"], run_dir / "train.log")
           for lmbda, run_dir in stage1.items()], threads=1, start=start)
    previous = stage1[LAMBDAS[1]]
    for stage in ("stage2", "stage3"):
        run_dir = out / stage
        run([(stage, [python, train, f"experiment=demo_{stage}", f"model.codec.backbone.pretrained={STANDIN}",
                      f"model.init_from={previous / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run_dir}"],
              run_dir / "train.log")], threads=2, start=start)
        previous = run_dir
    codecs = ",".join(str(run_dir / "codec") for run_dir in stage1.values())
    run([("evaluation", [python, str(PROJECT_ROOT / "evaluate.py"), f"+codecs.HiFiC-small=[{codecs}]",
                         f"+codecs.SODEC-tiny=[{out / 'stage3' / 'codec'}]", "data=folder",
                         f"data.test_dirs=[{held_out}]", "data.name=held-out", "metrics=[psnr,ms_ssim]",
                         "baselines=[jpeg,webp]", f"hydra.run.dir={out / 'evaluation'}"],
          out / "evaluation" / "evaluate.log")], threads=2, start=start)
    from training.demo_report import report

    report(out)
    print(f"\n[demo] {time.perf_counter() - start:.0f} s in all; logs, checkpoints, codecs and W&B offline runs "
          f"under {out}\n(wandb sync <run>/wandb/offline-run-* uploads a run; wandb leet inspect --summary reads it)")


if __name__ == "__main__":
    main()
