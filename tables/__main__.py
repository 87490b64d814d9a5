"""Run one of the papers' tables and write it: ``python -m tables <table> [overrides]``.

    python -m tables gan_weight                          # the papers' settings (conf/scale/paper.yaml)
    python -m tables gan_weight scale=miniature          # `make table T=gan_weight`: on a CPU, toy numbers
    python -m tables sodec_rd executor=slurm executor.partition=gpu
    python -m tables gan_weight --dry-run                # the graph, and which of its nodes already finished
    python -m tables gan_weight --write-only             # the table from what has finished, nothing run

Overrides set the tables config (conf/tables.yaml: ``table.rate_point=4``, ``store=/shared/stages``,
``executor.parallel=2``, ``wandb.enabled=false``). Exit status: 0 when every node finished, 143
when SIGTERM stopped it (run it again: it continues), 1 when a node failed (the table is written
with what finished).
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from osdic import PROJECT_ROOT
from osdic.metrics.published import resolve
from tables.graph import build_graph, compose_config_for
from tables.runner import Runner, exit_status, is_done
from tables.writer import TableWriter


def prepare(scale: DictConfig) -> None:
    """What a scale's runs read that no run makes: the embedded photos and the stand-in for SD 2.1
    (each reused when already there)."""
    if scale.samples or scale.standin:
        from datamodules.samples import materialize_samples

        materialize_samples(PROJECT_ROOT / ".cache" / "skimage_samples")
    if scale.standin:
        from omegaconf import OmegaConf

        from training.standin_backbone import build_standin

        backbone = OmegaConf.to_container(OmegaConf.load(PROJECT_ROOT / "conf" / "standin_backbone.yaml"))
        build_standin([resolve(scale.standin.photos)], resolve(scale.standin.out), backbone, backbone["text_config"],
                      scale.standin.vae_steps, scale.standin.unet_steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="a table of conf/table/ (gan_weight, lora_rank, sodec_rd, ...)")
    parser.add_argument("overrides", nargs="*", help="overrides of the tables config (conf/tables.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print the graph and exit")
    parser.add_argument("--write-only", action="store_true", help="write the table from finished nodes; run nothing")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    config = compose_config_for("tables", [f"table={args.table}", *args.overrides], None)
    store = Path(resolve(config.store))
    graph = build_graph(args.table, args.overrides, store)
    finished = sum(is_done(n) for n in graph.nodes)
    print(graph.describe() + f"\n{finished} of {len(graph.nodes)} nodes already finished (store: {store})", flush=True)
    if args.dry_run:
        return 0
    status = {}
    if not args.write_only:
        prepare(config.scale)
        status = Runner(graph, config.executor).run()
    writer = TableWriter(graph, config)
    path = writer.write()
    print("\n" + path.read_text(), flush=True)
    if config.wandb.enabled:
        from tables.report import log_table, write_arm_summaries

        write_arm_summaries(graph, config.wandb.project)
        log_table(writer, config.wandb.project, path.parent)
    print(f"[tables] {args.table}: {path} (and .csv, .tex), {time.perf_counter() - start:.0f} s", flush=True)
    return exit_status(status)


if __name__ == "__main__":
    sys.exit(main())
