"""Run one of the papers' tables and write it: ``python -m tables <table> [overrides]``.

    python -m tables gan_weight                          # the papers' settings (conf/scale/paper.yaml)
    python -m tables gan_weight scale=miniature          # `make table T=gan_weight`: on a CPU, toy numbers
    python -m tables sodec_rd executor=slurm executor.partition=gpu
    python -m tables gan_weight --dry-run                # the graph, and which of its nodes already finished
    python -m tables all scale=miniature                 # `make tables`: every table, their nodes as one graph
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
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from osdic import PROJECT_ROOT
from osdic.metrics.published import resolve
from tables.graph import Node, build_graph, compose_config_for, table_names, union
from tables.runner import Runner, exit_status, is_done, job_seconds, schedule_seconds
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


def timing(nodes: list[Node], parallel: int) -> str:
    """How many of ``nodes`` finished, in how much job time, and — all finished — how long they
    would take run alone (:func:`schedule_seconds`)."""
    seconds = {n.name: job_seconds(n) for n in nodes if is_done(n)}
    text = f"{len(seconds)} of {len(nodes)} finished ({sum(seconds.values()):.0f} s of job time"
    if len(seconds) == len(nodes):
        text += f"; alone, {parallel} at once: about {schedule_seconds(nodes, seconds, parallel):.0f} s"
    return text + ")"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="a table of conf/table/ (gan_weight, lora_rank, sodec_rd, ...), or all")
    parser.add_argument("overrides", nargs="*", help="overrides of the tables config (conf/tables.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print the graph and exit")
    parser.add_argument("--write-only", action="store_true", help="write the table from finished nodes; run nothing")
    args = parser.parse_intermixed_args(argv)  # flags before or after the overrides
    start = time.perf_counter()
    tables = {}
    for name in table_names() if args.table == "all" else [args.table]:
        config = compose_config_for("tables", [f"table={name}", *args.overrides], None)
        tables[name] = (config, build_graph(name, args.overrides, Path(resolve(config.store))))
    graph = union([g for _, g in tables.values()])
    config = next(iter(tables.values()))[0]
    parallel = config.executor.get("parallel", 1)
    for name, (_, table_graph) in tables.items():
        described = table_graph.describe()
        print(described if len(tables) == 1 else described.splitlines()[0], flush=True)
        print(f"  {timing(table_graph.nodes, parallel)}", flush=True)
    if len(tables) > 1:
        kinds = Counter(n.label for n in graph.nodes)
        print(f"all tables: {len(graph.nodes)} distinct nodes ({', '.join(f'{c} {k}' for k, c in sorted(kinds.items()))}); "
              f"{timing(graph.nodes, parallel)}", flush=True)
    print(f"store: {resolve(config.store)}", flush=True)
    if args.dry_run:
        return 0
    status = {}
    if not args.write_only:
        prepare(config.scale)
        status = Runner(graph, config.executor).run()
    for name, (table_config, table_graph) in tables.items():
        writer = TableWriter(table_graph, table_config)
        path = writer.write()
        print("\n" + path.read_text(), flush=True)
        if table_config.wandb.enabled:
            from tables.report import log_table, write_arm_summaries

            write_arm_summaries(table_graph, table_config.wandb.project)
            log_table(writer, table_config.wandb.project, path.parent)
        print(f"[tables] {name}: {path} (and .csv, .tex)", flush=True)
    print(f"[tables] {args.table}: {time.perf_counter() - start:.0f} s", flush=True)
    return exit_status(status)


if __name__ == "__main__":
    sys.exit(main())
