"""The engine's layering: imports only point down, and no two modules import each other.

Every import statement of every engine module counts, even one inside a function (a deferred
import is still a dependency). Layers, bottom to top (docs/architecture.md):

    0  errors, _version, _config, tasks, utils
    1  prompts, losses, data, nuclei, corrections, samples
    2  models
    3  scoring, early_checks (path and option checks before heavy imports)
    4  predict
    5  train | eval          (siblings: neither imports the other)
    6  experiments, demo, real_tile
    7  commands, cli, __main__
"""

from __future__ import annotations

import ast
from pathlib import Path

import sampo_engine

ENGINE_DIR = Path(sampo_engine.__file__).resolve().parent

LAYERS = {
    "errors": 0,
    "_version": 0,
    "_config": 0,
    "tasks": 0,
    "utils": 0,
    "prompts": 1,
    "losses": 1,
    "data": 1,
    "nuclei": 1,
    "corrections": 1,
    "samples": 1,
    "models": 2,
    "early_checks": 3,
    "scoring": 3,
    "predict": 4,
    "train": 5,
    "eval": 5,
    "experiments": 6,
    "demo": 6,
    "real_tile": 6,
    "commands": 7,
    "cli": 7,
    "__main__": 7,
}
#: Same-layer packages that must not import each other.
SIBLINGS = {("train", "eval"), ("eval", "train")}


def _module_name(path: Path) -> str:
    parts = ["sampo_engine", *path.relative_to(ENGINE_DIR).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ENGINE_DIR.rglob("*.py"))}


def _imports(module: str, path: Path) -> set[str]:
    """The engine modules ``module`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] == "sampo_engine" and t != module}
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_engine_module_has_a_layer():
    rooms = {_room(m) for m in MODULES} - {""}
    assert rooms <= set(LAYERS), f"modules without a layer: {sorted(rooms - set(LAYERS))}"


def test_imports_only_point_down():
    upward = []
    for module, targets in GRAPH.items():
        if _room(module) == "":
            continue  # the package's face (its version) sits under everything
        for target in targets:
            here, there = _room(module), _room(target)
            if there == "":
                continue
            if LAYERS[there] > LAYERS[here] or (here, there) in SIBLINGS:
                upward.append(f"{module} (layer {LAYERS[here]}) -> {target} ({LAYERS[there]})")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_loops():
    """No strongly connected component of the module graph holds two modules (Tarjan)."""
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not loops, f"import loops: {loops}"


def test_the_checker_sees_a_deferred_upward_import(tmp_path):
    """The graph counts imports inside functions, so a deferred upward import cannot hide."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from sampo_engine.train.trainer import Trainer\n")
    assert "sampo_engine.train.trainer" in _imports("sampo_engine.models.m", source)
