"""A stand-in for ``train.py`` in the graph runner's tests: ``python tests/graph_job.py [seconds=S]
[preempt_once=1] hydra.run.dir=<node>``. It writes what a finished stage leaves (final_metrics.json,
codec/codec.json) after S seconds, and appends one line per start to ``<store>/runs.log``. SIGTERM
makes it write ``checkpoints/preempted.ckpt`` and exit 143, as train.py does; a start that finds
that checkpoint records that it resumed. ``preempt_once=1`` exits 143 at its first start (a job
the scheduler preempted) without waiting for a signal."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

arguments = dict(argument.split("=", 1) for argument in sys.argv[1:])
directory = Path(arguments["hydra.run.dir"])
directory.mkdir(parents=True, exist_ok=True)
checkpoint = directory / "checkpoints" / "preempted.ckpt"
resumed = checkpoint.is_file()
with open(directory.parent / "runs.log", "a") as log:
    log.write(f"{directory.name} {'resumed' if resumed else 'started'} {os.getpid()}\n")


def preempted(*_) -> None:
    checkpoint.parent.mkdir(exist_ok=True)
    checkpoint.touch()
    sys.exit(143)


signal.signal(signal.SIGTERM, preempted)
if arguments.get("preempt_once") == "1" and not resumed:
    preempted()
time.sleep(float(arguments.get("seconds", 0)))
(directory / "codec").mkdir(exist_ok=True)
(directory / "codec" / "codec.json").write_text("{}")
(directory / "final_metrics.json").write_text(json.dumps({"val/bpp_real": 0.1}))
