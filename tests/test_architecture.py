"""The house rules of docs/architecture.md, checked on the source: imports in the core run
downward only (no layer imports one above it, also inside functions), there is no import
circle, the core never imports a plugin, and no module is over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "harness" / "fbench"
# low to high; a module may import from its own layer or a lower one
LAYERS = ["errors", "files", "tempdirs", "figures", "markdown", "progress", "plugins",
          "metrics", "data", "runs", "train", "use", "report", "api", "cli"]
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "fbench" or len(parts) < 2:
        return None  # the package facade (lazy exports) sits above everything
    return parts[1] if parts[1] in LAYERS else None


MODULES = {_module_name(p): p for p in CORE.rglob("*.py")}


def test_every_core_module_sits_in_a_layer():
    unplaced = [m for m in MODULES if m not in ("fbench", "fbench.__main__")
                and _layer(m) is None]
    assert not unplaced, f"add these to LAYERS and docs/architecture.md: {unplaced}"


def test_imports_run_downward_only():
    upward = []
    for module, path in MODULES.items():
        own = _layer(module)
        if own is None:
            continue
        for target in _imports(path):
            other = _layer(target)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circle_between_core_modules():
    import networkx as nx

    graph = nx.DiGraph()
    for module, path in MODULES.items():
        for target in _imports(path):
            if target in MODULES and target != "fbench":
                graph.add_edge(module, target)
    graph.remove_nodes_from(["fbench"])
    assert list(nx.simple_cycles(graph)) == []


def test_the_core_never_imports_a_plugin_package():
    offenders = [f"{m} imports {t}" for m, p in MODULES.items() for t in _imports(p)
                 if t.startswith("fbench_")]
    assert not offenders, offenders


@pytest.mark.parametrize("folder", ["harness", "plugins"])
def test_no_module_is_over_400_lines(folder):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_core_folder_is_a_regular_package():
    """A folder without __init__.py works in a checkout (namespace package) but is left out of
    an installed wheel."""
    missing = [str(d.relative_to(ROOT)) for d in CORE.rglob("*") if d.is_dir()
               and d.name != "__pycache__" and any(d.glob("*.py"))
               and not (d / "__init__.py").is_file()]
    assert not missing, missing
