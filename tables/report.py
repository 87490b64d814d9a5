"""The table in W&B: a run of its own (job type ``table``) holding it as ``wandb.Table``s, and every
arm's final evaluation written into the summary of the run that trained that arm's final model
(``eval/<dataset>/<metric>``, with the table, row and rate point in its config), so W&B's run table
and parallel-coordinates charts compare real-file numbers keyed by what the table varies."""

from __future__ import annotations

import json
import os
from pathlib import Path

from osdic.utils.files import write_atomically
from training.loggers import wandb_has_credentials
from training.run import stable_run_id
from tables.graph import Graph
from tables.runner import is_done
from tables.writer import TableWriter

SUMMARY_RECORD = "wandb_table_summary.json"


def _mode() -> str | None:
    return None if "WANDB_MODE" in os.environ else "online" if wandb_has_credentials() else "offline"


def group(graph: Graph) -> str:
    return f"table-{graph.name}"


def write_arm_summaries(graph: Graph, project: str) -> int:
    """Each finished arm's evaluations into its final stage's W&B run; returns how many runs
    were updated (a run already holding these numbers is left alone)."""
    import wandb

    updated = 0
    for point in graph.points:
        final = point.final.directory
        if not (final / "wandb").is_dir():  # trained without the W&B logger
            continue
        summary = {}
        for dataset, node in point.evaluations.items():
            result = node.directory / "codec.json"
            if node.kind != "evaluate" or not (is_done(node) and result.is_file()):
                continue
            results = json.loads(result.read_text())["results"]
            summary.update({f"eval/{dataset}/{key}": values[0] for key, values in results.items() if values})
        config = {"table": graph.name, "row": point.row, "rate_point": point.rate_point}
        record = {"summary": summary, "config": config}
        previous = final / SUMMARY_RECORD
        if not summary or (previous.is_file() and json.loads(previous.read_text()) == record):
            continue
        run = wandb.init(project=project, id=stable_run_id(str(final)), dir=str(final), resume="allow", mode=_mode(),
                         group=group(graph), job_type=point.final.label, reinit="create_new",
                         settings=wandb.Settings(silent=True))
        run.config.update(config, allow_val_change=True)
        run.summary.update(summary)
        run.finish()
        write_atomically(previous, json.dumps(record, indent=2).encode())
        updated += 1
    return updated


def log_table(writer: TableWriter, project: str, directory: Path) -> None:
    """The table's own run: each section as a wandb.Table, the notes and the files."""
    import wandb

    graph = writer.graph
    run = wandb.init(project=project, job_type="table", group=group(graph), name=f"{graph.name} ({writer.scale.name})",
                     dir=str(directory), mode=_mode(), config=writer.record(), reinit="create_new",
                     settings=wandb.Settings(silent=True))
    for number, section in enumerate(writer.sections):
        run.log({f"table/{number}": wandb.Table(columns=section.header, data=section.rows)})
    run.summary["notes"] = "\n".join(writer.notes)
    for suffix in (".md", ".csv", ".tex"):
        path = directory / f"{graph.name}{suffix}"
        target = Path(run.dir) / path.name
        target.write_bytes(path.read_bytes())
    run.finish()

