"""The paper's table from a graph's finished evaluations, beside the numbers the paper published:
Markdown, CSV and LaTeX (``<output_dir>/<table>.md``, ``.csv``, ``.tex``), RD plots for the
curves, and the same table in W&B.

Four kinds of table (``table.kind``):
  ablation  the paper's rows (arms) × its columns (metrics, bpp), ours then the paper's
  rd        per dataset, our points per rate point, the method's published points, the BD-rate
            of ours against them, and a plot per metric with the literature's points
  bd_rate   per arm, the BD-rate of its curve against the anchor arm's, and their average
  latency   encode and decode times (decode per module) and bpp of one image, beside the
            published rows
Every number of ours comes from real files (evaluate.py); a cell without a finished evaluation
is "–" and the notes say why. A table whose runs used random metric weights, a random start or
a miniature scale says so at its top.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from osdic.metrics.bdrate import BDRateNotAvailable, bd_rate
from osdic.metrics.evaluation import compressai_key
from osdic.metrics.published import published_points, resolve
from osdic.metrics.quality import higher_is_better
from osdic.utils.files import write_atomically
from tables.graph import Graph, Node, Point, compose_config_for
from tables.runner import is_done

MISSING = "–"


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return MISSING
    return f"{value:.{digits}g}"


def _arrow(metric: str) -> str:
    return "↓" if metric == "bpp" or not higher_is_better(metric) else "↑"


def _evaluation(node: Node) -> dict | None:
    """An evaluation node's result: its CompressAI-format JSON (one point)."""
    path = node.directory / "codec.json"
    return json.loads(path.read_text()) if is_done(node) and path.is_file() else None


def _measured(node: Node, metric: str) -> float | None:
    result = _evaluation(node)
    if result is None:
        return None
    values = result["results"].get(compressai_key(metric) if metric != "bpp" else "bpp")
    return float(values[0]) if values else None


def paper_numbers(path: str | Path, table: str | None) -> dict[tuple[str, str], str]:
    """``(row, column) → value`` of one table of paper_tables.csv (empty without the file). A row the
    paper prints twice (OSDiff's Table I: PerCo at 5 and at 20 sampling steps) lists its columns
    again in the file; each repeat is the row's next occurrence, keyed ``<row> #2``, ``#3``, …"""
    file = resolve(path)
    if not table or not file.is_file():
        return {}
    numbers: dict[tuple[str, str], str] = {}
    with file.open(newline="") as rows:
        for record in (r for r in csv.DictReader(rows) if r["table"] == table):
            row, occurrence = record["row"], 1
            while (row, record["column"]) in numbers:
                occurrence += 1
                row = f"{record['row']} #{occurrence}"
            numbers[row, record["column"]] = record["value"]
    return numbers


def paper_row_name(row: str) -> str:
    """The name a paper prints for a row of :func:`paper_numbers` (its occurrence dropped)."""
    return re.sub(r" #\d+$", "", row)


class TableWriter:
    def __init__(self, graph: Graph, config: DictConfig):
        self.graph, self.config = graph, config
        self.table, self.scale = config.table, config.scale
        self.paper = paper_numbers(config.paper_tables, self.table.get("paper"))
        self.warnings: list[str] = []

    # ------------------------------------------------------------------------- notes
    def _notes(self) -> list[str]:
        notes = [self.scale.note] if self.scale.note else []
        seen: set[str] = set()
        for point in self.graph.points:
            for node in point.evaluations.values():
                result = _evaluation(node) if node.kind == "evaluate" else None
                for text in [result.get("WARNING")] + result.get("codec_warnings", []) if result else []:
                    if text and text not in seen:
                        seen.add(text)
                        notes.append(f"{point.row}: {text}" if "RANDOM weights" not in text else text)
        unfinished = sorted({p.row for p in self.graph.points for n in p.evaluations.values() if not is_done(n)})
        if unfinished:
            notes.append(f"not finished (cells {MISSING}): {', '.join(unfinished)}")
        return notes

    def _measured_on(self, dataset: str) -> str:
        """``Kodak``, or what this scale measured in its place (``Kodak (measured on held-out, 3 images)``)."""
        for point in self.graph.points:
            result = _evaluation(point.evaluations[dataset])
            if result and result.get("dataset") and result["dataset"] != dataset:
                return f"{dataset} (measured on {result['dataset']}, {result.get('images', '?')} images)"
        return dataset

    def _protocol(self) -> str:
        return (f"bpp: whole files over original pixels; metrics on the 8-bit reconstructions, per image then "
                f"averaged ({', '.join(f'{c} = {m}' for c, m in self.table.columns.items())}); rate point "
                f"λ_3 = {self.table.rate_point}" if self.table.kind in ("ablation", "latency") else
                "bpp: whole files over original pixels; metrics on the 8-bit reconstructions, per image then averaged")

    # -------------------------------------------------------------------------- kinds
    def ablation(self) -> list[Section]:
        columns = dict(self.table.columns)
        ours = [*columns, *(["bpp"] if "bpp" not in columns.values() else [])]
        metric_of = {**columns, "bpp": "bpp"}
        sections = []
        for dataset in self.table.datasets:
            header = [self.table.row_header, *(f"{c} {_arrow(metric_of[c])}" for c in ours),
                      *(f"paper {c}" for c in columns)]
            rows = [[p.row, *(_number(_measured(p.evaluations[dataset], metric_of[c])) for c in ours),
                     *(self.paper.get((p.row, c), MISSING) for c in columns)] for p in self.graph.points]
            sections.append(Section(f"{self.table.title} — {self._measured_on(dataset)}", header, rows))
        return sections

    def _curve(self, points: list[Point], dataset: str, metric: str) -> tuple[list[float], list[float]]:
        pairs = [(_measured(p.evaluations[dataset], "bpp"), _measured(p.evaluations[dataset], metric)) for p in points]
        pairs = sorted((b, v) for b, v in pairs if b is not None and v is not None)
        return [b for b, _ in pairs], [v for _, v in pairs]

    def _published_dataset(self, dataset: str) -> str:
        """The literature's name of one of the papers' test sets (the paper scale's data node's
        ``published_as``: CLIC2020 at 768² is DiffEIC's version)."""
        overrides = list(compose_config_for("tables", [f"table={self.graph.name}", "scale=paper"], None)
                         .scale.datasets[dataset])
        data = compose_config_for("evaluate", overrides, "<run>").data
        return data.get("published_as") or data.name

    def rd(self, out: Path) -> list[Section]:
        from osdic.metrics.plots import plot_metric

        sections = []
        method = self.table.method
        for dataset in self.table.datasets:
            published_as = self._published_dataset(dataset)
            metrics = list(self.table.columns.items())
            header = ["", "rate point", "bpp ↓", *(f"{c} {_arrow(m)}" for c, m in metrics)]
            rows = [["ours", f"λ = {p.rate_point:g}", _number(_measured(p.evaluations[dataset], "bpp")),
                     *(_number(_measured(p.evaluations[dataset], m)) for _, m in metrics)] for p in self.graph.points]
            published = {m: published_points(self.config.published_points, published_as, m) for _, m in metrics}
            theirs = {m: next((pts for label, pts in found.items() if label.startswith(f"{method} (")), [])
                      for m, found in published.items()}
            for bpp in sorted({b for pts in theirs.values() for b, _ in pts}):
                rows.append([f"{method} (published)", "", _number(bpp), *(_number(
                    next((v for b, v in theirs[m] if b == bpp), None)) for _, m in metrics)])
            bd_row = [f"BD-rate of ours vs {method} (published), %", "", ""]
            notes = []
            for column, metric in metrics:
                ours_bpp, ours_values = self._curve(self.graph.points, dataset, metric)
                pts = sorted(theirs[metric])
                try:
                    bd_row.append(f"{bd_rate([b for b, _ in pts], [v for _, v in pts], ours_bpp, ours_values, higher_is_better(metric)):+.1f}")
                except BDRateNotAvailable as exc:
                    bd_row.append("n/a")
                    notes.append(f"BD-rate {column}: {exc}")
                curves = {"ours": {"bpp": ours_bpp, metric: ours_values}} if ours_bpp else {}
                plot_metric(curves, metric, f"{dataset} (published: {published_as})",
                            out / f"{self.graph.name}_{dataset}_{metric}.png", published[metric], self.scale.note
                            and "miniature/test run: toy numbers")
            rows.append(bd_row)
            sections.append(Section(f"{self.table.title} — {self._measured_on(dataset)}; published points: "
                                    f"{published_as}", header, rows, notes))
        return sections

    def bd_rates(self) -> list[Section]:
        sections = []
        anchor_row = self.table.anchor
        rows_in_order = list(dict.fromkeys(p.row for p in self.graph.points))
        columns = dict(self.table.columns)
        for dataset in self.table.datasets:
            header = ["", *(f"{c} BD-rate (%) ↓" for c in columns), "Average", *(f"paper {c}" for c in columns),
                      "paper Average"]
            anchor_points = [p for p in self.graph.points if p.row == anchor_row]
            rows, notes = [], []
            for row in rows_in_order:
                points = [p for p in self.graph.points if p.row == row]
                values = []
                for column, metric in columns.items():
                    try:
                        values.append(0.0 if row == anchor_row else bd_rate(
                            *self._curve(anchor_points, dataset, metric), *self._curve(points, dataset, metric),
                            higher_is_better(metric)))
                    except BDRateNotAvailable as exc:
                        values.append(None)
                        notes.append(f"{row}, {column}: {exc}")
                average = sum(values) / len(values) if None not in values else None
                paper_columns = {"Distortion": "distortion_bd_rate", "Perception": "perception_bd_rate"}
                rows.append([row, *(_number(v, 4) for v in values), _number(average, 4),
                             *(self.paper.get((row, paper_columns.get(c, c)), MISSING) for c in columns),
                             self.paper.get((row, "average"), MISSING)])
            notes.insert(0, f"anchor: {anchor_row}; each row's curve has {len(self.table.rate_points)} rate points "
                            f"(λ_2 = {', '.join(f'{p:g}' for p in self.table.rate_points)})")
            sections.append(Section(f"{self.table.title} — {self._measured_on(dataset)}", header, rows, notes))
        return sections

    def latency(self) -> list[Section]:
        sections = []
        columns = dict(self.table.columns)
        paper_rows = list(dict.fromkeys(row for row, _ in self.paper))
        for dataset in self.table.datasets:
            rows, notes = [], []
            for row in paper_rows:
                rows.append([f"{paper_row_name(row)} (paper)",
                             *(self.paper.get((row, metric), self.paper.get((row, title), MISSING))
                               for title, metric in columns.items())])
            for point in self.graph.points:
                node = point.evaluations[dataset]
                path = node.directory / "latency.json"
                if not (is_done(node) and path.is_file()):
                    rows.append([f"{point.row} (ours)", *([MISSING] * len(columns))])
                    continue
                report = json.loads(path.read_text())
                figures = next(iter(report["models"].values()))
                decode = figures["decode"]["total"]
                values = {"encode_ms": figures["encode"] * 1000, "decode_ms": decode * 1000,
                          "total_ms": (figures["encode"] + decode) * 1000, "bpp": figures["bpp"],
                          "encode_s": figures["encode"], "decode_s": decode, "device": report["device"],
                          "sampling_steps": 1}  # one UNet step: decompress runs the one-step decode
                rows.append([f"{point.row} (ours, {report['device']})",
                             *(str(v) if isinstance(v := values[m], (str, int)) else _number(v, 4)
                               for m in columns.values())])
                notes.append(f"{point.row} (ours), {report['resolution'][0]}×{report['resolution'][1]}, "
                             f"{report['dtype']}, median of {report['repeat']}: decode " + ", ".join(
                                 f"{k} {v * 1000:.1f} ms" for k, v in figures["decode"].items()))
            notes.append("the papers' times were measured on their GPUs (column Device, or the paper's text); ours on "
                         "this run's device, entropy coding included and synchronised")
            sections.append(Section(f"{self.table.title} — {dataset}", [""] + list(columns), rows, notes))
        return sections

    # ------------------------------------------------------------------------ output
    def write(self) -> Path:
        out = Path(resolve(self.config.output_dir))
        out.mkdir(parents=True, exist_ok=True)
        kind = self.table.kind
        sections = {"ablation": self.ablation, "bd_rate": self.bd_rates, "latency": self.latency}.get(
            kind, lambda: self.rd(out))()
        notes = [*self._notes(), self._protocol()]
        name = self.graph.name
        write_atomically(out / f"{name}.md", markdown(self.table.title, notes, sections).encode())
        write_atomically(out / f"{name}.csv", to_csv(sections).encode())
        write_atomically(out / f"{name}.tex", latex(self.table.title, notes, sections).encode())
        write_atomically(out / f"{name}.graph.json", json.dumps(self.record(), indent=2).encode())
        self.sections, self.notes = sections, notes
        return out / f"{name}.md"

    def record(self) -> dict:
        """Which node made each cell: the graph as it ran (for a reader, and for W&B)."""
        config = OmegaConf.masked_copy(self.config, [key for key in self.config if key != "hydra"])
        return {"table": self.graph.name, "config": OmegaConf.to_container(config, resolve=True),
                "points": [{"row": p.row, "rate_point": p.rate_point, "chain": [n.name for n in p.chain],
                            "evaluations": {d: n.name for d, n in p.evaluations.items()}} for p in self.graph.points]}


def markdown(title: str, notes: list[str], sections: list[Section]) -> str:
    lines = [f"# {title}", ""] + [f"> {note}" for note in notes] + [""]
    for section in sections:
        lines += [f"## {section.title}", "", "| " + " | ".join(section.header) + " |",
                  "|" + "---|" * len(section.header)]
        lines += ["| " + " | ".join(row) + " |" for row in section.rows]
        lines += [""] + [f"- {note}" for note in section.notes] + ([""] if section.notes else [])
    return "\n".join(lines) + "\n"


def to_csv(sections: list[Section]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for section in sections:
        writer.writerow(["section", *section.header])
        writer.writerows([[section.title, *row] for row in section.rows])
    return buffer.getvalue()


def _tex(text: str) -> str:
    for char, escaped in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("λ", r"$\lambda$"), ("β", r"$\beta$"),
                          ("–", "--"), ("×", r"$\times$"), ("²", r"$^2$"), ("≥", r"$\geq$")]:
        text = text.replace(char, escaped)
    return text


def latex(title: str, notes: list[str], sections: list[Section]) -> str:
    lines = [f"% {title}"] + [f"% {note}" for note in notes]
    for section in sections:
        lines += [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(section.title)}}}",
                  r"\begin{tabular}{l" + "c" * (len(section.header) - 1) + "}", r"\toprule",
                  " & ".join(_tex(h) for h in section.header) + r" \\", r"\midrule"]
        lines += [" & ".join(_tex(cell) for cell in row) + r" \\" for row in section.rows]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines) + "\n"
