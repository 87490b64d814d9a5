"""Checkpoint writing: Lightning's own writer against the atomic one the trainer config uses.

    python bench/checkpoint_save.py [--mib 256] [--dir DIR]

Each writer saves a checkpoint of ``--mib`` MiB of float32 weights three times in a fresh
process; printed: the median save time and the peak memory above the checkpoint itself (what
a save costs on top of the training state).
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from osdic.utils.devices import timed

WRITERS = {
    "lightning (TorchCheckpointIO)": "lightning_fabric.plugins.io.torch_io:TorchCheckpointIO",
    "atomic (AtomicCheckpointIO)": "training.checkpoint_io:AtomicCheckpointIO",
}


def measure(writer: str, mib: int, directory: Path) -> tuple[float, float]:
    module, name = writer.split(":")
    checkpoint_io = getattr(__import__(module, fromlist=[name]), name)()
    checkpoint = {"state_dict": {"weights": torch.randn(mib, 2**18)}}  # 2**18 float32 = 1 MiB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # no warm-up: the first save's memory is part of what a save costs
    _, seconds = timed(lambda: checkpoint_io.save_checkpoint(checkpoint, directory / "last.ckpt"), repeat=3, warmup=0)
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary dir)")
    parser.add_argument("--writer", help=argparse.SUPPRESS)  # one measurement, in its own process
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    if args.writer:
        print(*measure(args.writer, args.mib, directory))
        return
    print(f"checkpoint of {args.mib} MiB in {directory}; median of 3 saves, peak memory above the checkpoint")
    for label, writer in WRITERS.items():
        result = subprocess.run([sys.executable, __file__, "--writer", writer, "--mib", str(args.mib),
                                 "--dir", str(directory)], capture_output=True, text=True, check=True)
        seconds, extra_mib = map(float, result.stdout.split())
        print(f"  {label}: {seconds:.2f} s, +{extra_mib:.0f} MiB")


if __name__ == "__main__":
    main()
