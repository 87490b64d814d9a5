"""What the framework costs the stage-1 recipe in learning: batches per CPU second against its bare loop.

    python bench/framework_overhead.py [--minutes 2] [--pairs 6] [--lmbda 0.012] [--slope 2.2] [--out DIR]

bench/learning.py's ``ours`` and ``ours-bare`` jobs (the recipe through ``train()``, and the same
module, datamodule and seed in training/bare_loop.py; one thread each, the same malloc policy) for
the same CPU time, a pair at a time side by side on two cores, so both arms share whatever else
loads the machine, each pinned to one core and the cores swapped from pair to pair: the same job
on the two cores of the project's machine trained 557 and 568 batches in one CPU minute, a 2 %
difference as large as what is measured. The two arms take the same step on the same batch
(tests/test_train.py), so at equal CPU time the framework's whole effect on learning is the
batches it does not get to. Printed:
each pair's batches, the deficit's mean with a 95 % t-interval over the pairs, each job's share of
CPU time in the kernel, and what the deficit is worth in BD-rate at the learning curve's slope
(``--slope``: per cent of rate at equal quality per per cent of batches, early in training; 2.2 is
what bench/learning.py --against measured from 10 to 20 CPU minutes, BENCHMARKS.md).
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from scipy import stats

from learning import KODAK, image_files, link_training_photos, run_jobs

ARMS = ("ours", "ours-bare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2, help="CPU minutes per job")
    parser.add_argument("--pairs", type=int, default=6, help="pairs of jobs (ours beside ours-bare), an even number")
    parser.add_argument("--lmbda", type=float, default=0.012)
    parser.add_argument("--slope", type=float, default=2.2,
                        help="per cent of BD-rate per per cent of batches (bench/learning.py --against)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.pairs < 2 or args.pairs % 2:
        parser.error("--pairs: an even number, at least 2 (the spread is over pairs, each arm as often on each core)")
    out = args.out or Path(tempfile.mkdtemp(prefix="framework-overhead-"))
    train_dir = link_training_photos(image_files(KODAK)[:12], out / "training_photos")
    learning = Path(__file__).with_name("learning.py")
    batches = {arm: [] for arm in ARMS}
    kernel = {arm: [] for arm in ARMS}
    print(f"{args.pairs} pairs of {args.minutes:g} CPU min jobs, λ = {args.lmbda}, in {out}…", flush=True)
    cores = sorted(os.sched_getaffinity(0))
    for pair in range(args.pairs):
        jobs = {(arm, args.lmbda): [sys.executable, str(learning), "--job", arm, "--lmbda", str(args.lmbda),
                                    "--minutes", str(args.minutes), "--seed", "0", "--train", str(train_dir),
                                    "--out", str(out / f"{arm}_{pair}"), "--cpu", str(cores[(pair + i) % len(cores)])]
                for i, arm in enumerate(ARMS)}
        run_jobs(jobs, parallel=len(ARMS))
        for arm in ARMS:
            job = json.loads((out / f"{arm}_{pair}" / "steps.json").read_text())
            batches[arm].append(job["steps"])
            kernel[arm].append(job["kernel_cpu_share"])
    deficits = [100 * (1 - ours / bare) for ours, bare in zip(batches["ours"], batches["ours-bare"])]
    mean = statistics.mean(deficits)
    half_width = stats.t.ppf(0.975, len(deficits) - 1) * statistics.stdev(deficits) / len(deficits) ** 0.5
    worth = [100 * ((1 - d / 100) ** -args.slope - 1) for d in (mean - half_width, mean, mean + half_width)]
    print("\n| pair | ours batches | ours-bare batches | deficit |\n|---|---|---|---|")
    for pair, (ours, bare, deficit) in enumerate(zip(batches["ours"], batches["ours-bare"], deficits)):
        print(f"| {pair} (ours on the {'first' if pair % 2 == 0 else 'second'} core) | {ours} | {bare} | {deficit:+.1f} % |")
    print(f"\nthe framework trained {mean:.1f} % fewer batches than its bare loop in the same CPU time "
          f"(95 % t-interval over {len(deficits)} pairs {mean - half_width:+.1f} to {mean + half_width:+.1f} %)")
    print(f"worth about {worth[1]:+.1f} % BD-rate at a slope of {args.slope:g} ({worth[0]:+.1f} to {worth[2]:+.1f} %)")
    print("CPU time in the kernel, set-up included: " + "; ".join(
        arm + " " + ", ".join(f"{100 * share:.1f} %" for share in kernel[arm]) for arm in ARMS))


if __name__ == "__main__":
    main()
