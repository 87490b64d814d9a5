"""The import graph of the project's packages, and the rules its layers follow.

    python bench/import_graph.py [--check]

Prints, for each package, the project packages and the heavy frameworks it imports (from the
source, at module level and inside functions alike). The library ``osdic`` (codecs, entropy
coding, bitstreams, metrics, helpers) must not import the training side (``lightning_modules``,
``datamodules``, ``callbacks``, ``training``, ``tables``, Lightning, Hydra, OmegaConf) anywhere;
``--check`` exits 1 when it does.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("osdic.models", "osdic.metrics", "osdic.codec", "osdic.utils", "osdic", "lightning_modules",
           "datamodules", "callbacks", "training", "tables", "train", "evaluate")
FRAMEWORKS = ("pytorch_lightning", "lightning_fabric", "lightning", "hydra", "omegaconf", "wandb")
TRAINING_SIDE = ("lightning_modules", "datamodules", "callbacks", "training", "tables", "train", "evaluate",
                 "pytorch_lightning", "lightning_fabric", "lightning", "hydra", "omegaconf")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def group(name: str) -> str | None:
    return next((p for p in PROJECT + FRAMEWORKS if name == p or name.startswith(p + ".")), None)


def graph() -> dict[str, dict[str, set[str]]]:
    """package → imported package or framework → the modules that import it."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    files = [p for p in REPO.glob("**/*.py") if not any(part.startswith(".") or part in ("tests", "bench")
                                                        for part in p.relative_to(REPO).parts)]
    for path in files:
        source = module_name(path)
        source_group = group(source)
        if source_group is None:
            continue
        for target in {group(name) for name in imports_of(path)} - {None, source_group}:
            edges[source_group][target].add(source)
    return edges


def violations(edges) -> list[str]:
    found = []
    for package, targets in edges.items():
        if package != "osdic" and not package.startswith("osdic."):
            continue
        for target, modules in targets.items():
            found += [f"{m} imports {target}" for m in sorted(modules)] if target in TRAINING_SIDE else []
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the library imports the training side")
    args = parser.parse_args()
    edges = graph()
    for package in sorted(edges):
        print(f"{package} → " + ", ".join(sorted(edges[package])))
    broken = violations(edges)
    print("\nlibrary → training side: " + ("none" if not broken else "\n  " + "\n  ".join(broken)))
    if args.check and broken:
        sys.exit(1)


if __name__ == "__main__":
    main()
