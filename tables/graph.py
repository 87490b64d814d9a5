"""A paper's table as an experiment graph: the training stages of every arm at every rate point,
the evaluations of their final models, and what waits for what.

Each node is a ``train.py`` or ``evaluate.py`` run, keyed by a hash of its resolved config (as
that script would compose it) and of the keys of the nodes it starts from. Two arms that share
a prefix (stages 1–3 of the GAN-weight table) therefore share its nodes, and a node another table
or an earlier run already finished is the same node: it is reused, never retrained. A node's
directory in the store is ``<store>/<label>-<key>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

from osdic import PROJECT_ROOT
from osdic.checks import ConfigError
from training.config import RANDOM_INIT  # noqa: F401  (registers the configs' ${mul:} resolver)

#: keys of a run's config that say where it runs, how it is named or what it starts from, not
#: what it computes (the predecessor enters the key as its own key instead)
LOCATING_KEYS = ("hydra", "paths", "ckpt_path", "logger", "tags", "task_name", "sweep_name", "output_dir", "wandb",
                 "model.init_from")
#: ``@{<arm key>/<stage>}`` in an override: the directory of that arm's node of that stage (same
#: rate point), e.g. the run whose final bpp a "matched bpp" arm aims at
REFERENCE = re.compile(r"@\{([^/}]+)/([^}]+)\}")
KEY_LENGTH = 12


@dataclass(eq=False)
class Node:
    """One run of ``script`` with ``overrides`` in its own directory of the store."""

    kind: str  # train | evaluate | latency
    label: str  # what it is: the stage (``sodec_stage3``) or the evaluation (``evaluate-Kodak``)
    script: str  # train.py | evaluate.py
    overrides: list[str]  # the command line, without the run directory
    key: str
    store: Path
    needs: list["Node"] = field(default_factory=list)  # nodes that must finish first
    devices: int = 1  # GPUs (or CPU processes) per machine its trainer asks for
    num_nodes: int = 1
    accelerator: str = "cpu"
    config: DictConfig | None = field(default=None, repr=False)  # the script's composed config

    @property
    def directory(self) -> Path:
        return self.store / f"{self.label}-{self.key}"

    @property
    def name(self) -> str:
        return f"{self.label}-{self.key}"

    def command(self) -> list[str]:
        return [self.script, *self.overrides, f"hydra.run.dir={self.directory}"]


@dataclass
class Point:
    """One arm at one rate point: its chain of training nodes and the evaluations of its last."""

    arm: dict
    rate_point: float
    chain: list[Node]
    evaluations: dict[str, Node]  # dataset → evaluation (or latency) node

    @property
    def row(self) -> str:
        return self.arm["row"]

    @property
    def final(self) -> Node:
        return self.chain[-1]


@dataclass
class Graph:
    name: str
    config: DictConfig  # the table's composed config (at its first rate point)
    points: list[Point]
    nodes: list[Node]  # every node once, each after the nodes it needs

    def describe(self) -> str:
        shared = {n.key: sum(n in p.chain for p in self.points) for n in self.nodes if n.kind == "train"}
        lines = [f"{self.name}: {len(self.points)} arm×rate point(s), {sum(n.kind == 'train' for n in self.nodes)} "
                 f"training stage(s), {sum(n.kind != 'train' for n in self.nodes)} evaluation(s)"]
        for node in self.nodes:
            uses = f" (shared by {shared[node.key]} arms)" if shared.get(node.key, 0) > 1 else ""
            after = ", ".join(n.name for n in node.needs)
            lines.append(f"  {node.name}{uses}" + (f" ← {after}" if after else ""))
        return "\n".join(lines)


def table_names() -> list[str]:
    return sorted(p.stem for p in (PROJECT_ROOT / "conf" / "table").glob("*.yaml"))


def union(graphs: list[Graph]) -> Graph:
    """One graph of every node the tables need, each once (tables share prefixes), in an order
    where each follows the nodes it needs: the runner keeps its slots full across tables."""
    nodes: dict[str, Node] = {}
    for graph in graphs:
        nodes.update((n.name, n) for n in graph.nodes if n.name not in nodes)
    return Graph("all", graphs[0].config, [p for g in graphs for p in g.points], list(nodes.values()))


def compose_config_for(config_name: str, overrides: list[str], output_dir: str | None) -> DictConfig:
    """The config ``python <script> <overrides>`` composes when started from the project root (as
    the graph starts every run): its paths resolve as the run's will; its own directory, not known
    before its key, is the placeholder ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        config = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(config):
        config.hydra.runtime.cwd = str(PROJECT_ROOT)
        config.hydra.runtime.output_dir = output_dir or "<run>"
    HydraConfig.instance().set_config(config)
    return config


def _flat(values: Iterable[Any]) -> list[str]:
    """Override lists may nest (a scale's list inside a table's): flattened, in order."""
    out: list[str] = []
    for value in values or []:
        if isinstance(value, (list, tuple, ListConfig)):
            out += _flat(value)
        elif value is not None:
            out.append(str(value))
    return out


def override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def merged(*groups: Iterable[str]) -> list[str]:
    """Overrides in order, a later one of the same key replacing an earlier one (a table's arm
    over its chain's default; Hydra refuses two values for one key on a command line), and a
    config group chosen anew (``callbacks/rate_annealing=target_bpp``) dropping the earlier
    values set inside that group's node, which the new option may not have."""
    out: dict[str, str] = {}
    for override in _flat(groups):
        key = override_key(override)
        if "/" in key:
            node = key.split("@")[-1].replace("/", ".") + "."
            out = {k: v for k, v in out.items() if not k.startswith(node)}
        out.pop(key, None)
        out[key] = override
    return list(out.values())


def _drop(container: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if rest and isinstance(container.get(head), dict):
        _drop(container[head], rest)
    elif not rest:
        container.pop(head, None)


def content_key(resolved: dict, predecessors: Iterable[str], store: Path) -> str:
    """The hash of what a run computes: its resolved config without the keys that only locate it,
    its store and project folders written as placeholders (so a moved checkout keeps its keys),
    and the keys of the runs it starts from."""
    for dotted in LOCATING_KEYS:
        _drop(resolved, dotted)
    text = json.dumps(resolved, sort_keys=True, default=str)
    text = text.replace(str(store.resolve()), "<store>").replace(str(PROJECT_ROOT), "<project>")
    digest = hashlib.sha256(text.encode())
    for key in predecessors:
        digest.update(key.encode())
    return digest.hexdigest()[:KEY_LENGTH]


class GraphBuilder:
    """Nodes of one table, deduplicated by key across its arms and rate points."""

    def __init__(self, store: Path):
        self.store = store.resolve()
        self.nodes: dict[str, Node] = {}
        self._configs: dict[tuple, DictConfig] = {}  # arms sharing a prefix compose its stages once

    def _compose(self, config_name: str, overrides: list[str]) -> DictConfig:
        key = (config_name, *overrides)
        if key not in self._configs:
            self._configs[key] = compose_config_for(config_name, overrides, "<run>")
        return self._configs[key]

    def _node(self, kind: str, label: str, script: str, overrides: list[str], config: DictConfig,
              needs: list[Node], **resources: Any) -> Node:
        resolved = OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]),
                                          resolve=True, throw_on_missing=False)
        key = content_key(resolved, [n.key for n in needs], self.store)
        if key not in self.nodes:
            self.nodes[key] = Node(kind, label, script, overrides, key, self.store, needs, config=config, **resources)
        return self.nodes[key]

    def train(self, overrides: list[str], previous: Node | None, needs: list[Node]) -> Node:
        """A training stage started from ``previous``'s last checkpoint (``model.init_from``)."""
        if previous is not None:
            overrides = [*overrides, f"model.init_from={previous.directory / 'checkpoints' / 'last.ckpt'}"]
        config = self._compose("train", overrides)
        label = str(config.model.get("stage") or "train")
        if previous is None and OmegaConf.is_missing(config.model, "init_from"):
            raise ConfigError("model.init_from", f"{label} is the first stage of a chain but continues another: "
                                                 f"the chain must start from {config.model.predecessor_stage}")
        trainer = config.trainer
        devices = trainer.get("devices", 1)
        return self._node("train", label, "train.py", overrides, config, [*([previous] if previous else []), *needs],
                          devices=devices if isinstance(devices, int) and devices > 0 else 1,
                          num_nodes=int(trainer.get("num_nodes") or 1), accelerator=str(trainer.get("accelerator")))

    def evaluate(self, kind: str, dataset: str, overrides: list[str], codec: Node) -> Node:
        overrides = [*overrides, f"+codecs.codec=[{codec.directory / 'codec'}]"]
        config = self._compose("evaluate", overrides)
        gpu = config.get("device") in ("cuda", "auto")
        return self._node(kind, f"{kind}-{dataset}", "evaluate.py", overrides, config, [codec],
                          accelerator="gpu" if gpu else "cpu")


def _stage_overrides(table: DictConfig, scale: DictConfig, arm: dict, stages: list[str], index: int) -> list[str]:
    stage = stages[index]
    branch = arm.get("branch", stages[0])
    if branch not in stages:
        raise ConfigError("table.arms", f"arm {arm['key']!r} branches at {branch!r}, not a stage of {stages}")
    from_branch = index >= stages.index(branch)
    return merged(table.chain.stages[stage], scale.overrides, (scale.stage_overrides or {}).get(stage),
                  (table.stage_overrides or {}).get(stage), arm.get("overrides") if from_branch else [],
                  (arm.get("stage_overrides") or {}).get(stage))


def _arm_order(arms: list[dict]) -> list[dict]:
    """Arms in the table's order, but one an override refers to (``@{arm/stage}``) before the arm
    that refers to it."""
    keys = [arm["key"] for arm in arms]
    if len(set(keys)) != len(keys):
        raise ConfigError("table.arms", f"arm keys must differ: {keys}")
    ordered: list[dict] = []

    def visit(arm: dict, seen: tuple[str, ...]) -> None:
        if arm in ordered:
            return
        if arm["key"] in seen:
            raise ConfigError("table.arms", f"arms refer to each other in a circle: {' → '.join(seen)}")
        text = json.dumps(arm, default=str)
        for referred, _ in REFERENCE.findall(text):
            if referred not in keys:
                raise ConfigError("table.arms", f"arm {arm['key']!r} refers to an arm {referred!r} the table lacks")
            visit(arms[keys.index(referred)], (*seen, arm["key"]))
        ordered.append(arm)

    for arm in arms:
        visit(arm, ())
    return ordered


def build_graph(table_name: str, overrides: list[str], store: Path) -> Graph:
    """Every node of ``table_name`` (conf/table/) with the tables config ``overrides``."""
    config = compose_config_for("tables", [f"table={table_name}", *overrides], None)
    builder = GraphBuilder(store)
    points: list[Point] = []
    for rate_point in config.table.rate_points:
        at_point = compose_config_for("tables", [f"table={table_name}", *overrides, f"table.rate_point={rate_point}"],
                                      None)
        table, scale = at_point.table, at_point.scale
        stages = list(table.chain.stages)
        arms = [OmegaConf.to_container(arm, resolve=True) for arm in table.arms]
        built: dict[str, list[Node]] = {}
        for arm in _arm_order(arms):
            chain: list[Node] = []
            last = stages.index(arm.get("until", stages[-1]))
            for index in range(last + 1):
                stage_overrides, needs = _resolve_references(
                    _stage_overrides(table, scale, arm, stages, index), built, stages)
                chain.append(builder.train(stage_overrides, chain[-1] if chain else None, needs))
            built[arm["key"]] = chain
            evaluations = {dataset: _evaluation(builder, table, scale, dataset, chain[-1])
                           for dataset in table.datasets}
            points.append(Point(arm, float(rate_point), chain, evaluations))
    keys = [arm["key"] for arm in config.table.arms]
    nodes = _ordered(builder.nodes.values())
    if config.get("only_arms"):  # run these arms (and what they need); the table keeps every row
        unknown = sorted(set(config.only_arms) - set(keys))
        if unknown:
            raise ConfigError("only_arms", f"{unknown} are not arms of {table_name}: {keys}")
        nodes = _ordered(node for point in points if point.arm["key"] in config.only_arms
                         for node in (*point.chain, *point.evaluations.values()))
    return Graph(table_name, config, sorted(points, key=lambda p: (keys.index(p.arm["key"]), p.rate_point)), nodes)


def _resolve_references(overrides: list[str], built: dict[str, list[Node]], stages: list[str]
                        ) -> tuple[list[str], list[Node]]:
    needs: list[Node] = []

    def directory(match: re.Match) -> str:
        node = built[match.group(1)][stages.index(match.group(2))]
        needs.append(node)
        return str(node.directory)

    return [REFERENCE.sub(directory, o) for o in overrides], needs


def _evaluation(builder: GraphBuilder, table: DictConfig, scale: DictConfig, dataset: str, codec: Node) -> Node:
    if dataset not in scale.datasets:
        raise ConfigError("table.datasets", f"{dataset!r} is not a dataset of scale {scale.name}: "
                                            f"{list(scale.datasets)}")
    common = merged(scale.datasets[dataset], scale.evaluation_overrides,
                    [f"allow_random_weights={str(bool(scale.allow_random_weights)).lower()}", "baselines=[]"])
    if table.kind == "latency":
        height, width = table.resolution
        return builder.evaluate("latency", dataset, merged(common, ["benchmark=true", f"benchmark_resolution=[{height},"
                                                                                       f"{width}]"]), codec)
    metrics = [m for m in table.columns.values() if m != "bpp"]
    return builder.evaluate("evaluate", dataset, merged(common, [f"metrics=[{','.join(metrics)}]"]), codec)


def _ordered(nodes: Iterable[Node]) -> list[Node]:
    """Each node after every node it needs (a depth-first topological order)."""
    ordered: list[Node] = []

    def visit(node: Node) -> None:
        if node in ordered:
            return
        for need in node.needs:
            visit(need)
        ordered.append(node)

    for node in nodes:
        visit(node)
    return ordered
