"""``sampo_engine`` is headless: no module in it imports Qt, napari or magicgui, directly or not.

Two checks: the source of every ``.py`` file (any import statement, even inside a function or an
``if``), and the modules actually loaded after importing every engine module in a fresh process.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import sampo_engine

FORBIDDEN = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui")
ENGINE_DIR = Path(sampo_engine.__file__).resolve().parent
ENGINE_FILES = sorted(ENGINE_DIR.rglob("*.py"))


def _is_forbidden(module: str) -> bool:
    return module.split(".")[0] in FORBIDDEN


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
        elif (  # importlib.import_module("napari") / __import__("qtpy") with a literal name
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.append((node.lineno, node.args[0].value))
    return names


def test_source_check_catches_every_import_form() -> None:
    code = (
        "import qtpy.QtWidgets\n"
        "from napari.layers import Labels\n"
        "def f():\n    import magicgui as mg\n"
        "import importlib\nimportlib.import_module('PySide6')\n"
        "from . import napari_utils\n"  # relative: our own module, not the napari package
        "import napari_sampo_like_name_is_fine as ok\n"
    )
    bad = [name for _, name in _imported_names(ast.parse(code)) if _is_forbidden(name)]
    assert sorted(bad) == ["PySide6", "magicgui", "napari.layers", "qtpy.QtWidgets"]


def test_engine_has_python_files() -> None:
    assert ENGINE_DIR.name == "sampo_engine"
    assert len(ENGINE_FILES) > 1


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(ENGINE_DIR)))
def test_source_imports_no_gui(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [
        f"{path.name}:{line}: import {name}"
        for line, name in _imported_names(tree)
        if _is_forbidden(name)
    ]
    assert not bad, "sampo_engine must not import GUI packages:\n" + "\n".join(bad)


def _module_names() -> list[str]:
    """Dotted names of every engine module, from the files (``__main__`` left out: it runs the CLI)."""
    names = []
    for path in ENGINE_FILES:
        parts = list(path.relative_to(ENGINE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


# Imports each module in turn and records, per module, the GUI modules that importing it added to
# sys.modules, and any import error.
_PROBE = r"""
import importlib, json, sys
forbidden, names = json.loads(sys.argv[1])
def gui():
    return {m for m in sys.modules if m.split(".")[0] in forbidden}
report = {"gui": {}, "errors": {}}
for name in names:
    before = gui()
    try:
        importlib.import_module(name)
    except Exception as exc:
        report["errors"][name] = f"{type(exc).__name__}: {exc}"
    added = gui() - before
    if added:
        report["gui"][name] = sorted(added)
print(json.dumps(report))
"""


def test_importing_every_engine_module_loads_no_gui() -> None:
    names = _module_names()
    assert "sampo_engine" in names and len(names) > 1
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([FORBIDDEN, names])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["errors"], f"engine modules failed to import: {report['errors']}"
    assert not report["gui"], f"importing these engine modules loaded GUI packages: {report['gui']}"
