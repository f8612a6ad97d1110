"""Layers point down: an AST scan of every import in `platform/ember`.

Ember's packages sit in layers (docs/architecture.md, "Layers"):

    upper    serving, cluster, cli            what runs a service, `ember up`, the commands
    middle   tuning, bench, eval, monitoring, client
    lower    config, models, access, ingest, training, batch, vectorstore
    bottom   the top-level modules (errors, checksums, openai_errors, ray_session, ...)

A module may import its own layer and the layers below it, never one above;
every import counts, including those inside functions (the lazy ones run too,
just later). `ember.client` (the SDK) imports only its own modules and the light
bottom ones it needs. No two modules import each other, directly or around a
longer loop. Each failure names the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "platform"

LAYERS = {
    "bottom": 0,
    "config": 1, "models": 1, "access": 1, "ingest": 1, "training": 1, "batch": 1,
    "vectorstore": 1,
    "tuning": 2, "bench": 2, "eval": 2, "monitoring": 2, "client": 2,
    "serving": 3, "cluster": 3, "cli": 3,
}
LAYER_NAMES = {0: "bottom", 1: "lower", 2: "middle", 3: "upper"}
# what the SDK may import of Ember besides itself: nothing heavy (tests/unit/test_layout.py)
CLIENT_MAY_IMPORT = {"ember.errors", "ember.config.paths"}


def modules(source: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module under `source/ember` (packages by __init__)."""
    found = {}
    for path in sorted((source / "ember").rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if "migrations" in parts:  # Alembic's scripts: data to setuptools, not modules
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(Ember module imported, line) for every import in the file, wherever it sits."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import sub` imports the submodule; `from mod import name`, the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import ember.x.y` names the module
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] == "ember" and target != name:
                found.append((target, node.lineno))
    return sorted(set(found), key=lambda pair: (pair[1], pair[0]))


def import_graph(source: Path) -> dict[str, list[tuple[str, int]]]:
    known = modules(source)
    return {name: imports(name, path, known) for name, path in known.items()}


def layer_of(name: str, source: Path) -> str | None:
    """The layer a module belongs to; None for `ember` itself (the SDK's re-exports)."""
    parts = name.split(".")
    if len(parts) == 1:
        return None
    if (source / "ember" / f"{parts[1]}.py").is_file():
        return "bottom"
    return parts[1]


def upward_imports(source: Path) -> list[str]:
    """`file:line: <module> (layer) imports <module> (higher layer)` for each violation."""
    problems = []
    graph, files = import_graph(source), modules(source)
    for name, targets in graph.items():
        layer = layer_of(name, source)
        if layer is None:
            continue
        for target, line in targets:
            other = layer_of(target, source) or "client"
            if LAYERS[other] > LAYERS[layer]:
                problems.append(
                    f"{files[name].relative_to(source.parent)}:{line}: {name} "
                    f"({LAYER_NAMES[LAYERS[layer]]} layer '{layer}') imports {target} "
                    f"({LAYER_NAMES[LAYERS[other]]} layer '{other}')")
            elif layer == "client" and other != "client" and target not in CLIENT_MAY_IMPORT:
                problems.append(f"{files[name].relative_to(source.parent)}:{line}: the SDK "
                                f"module {name} imports {target}; it may import only "
                                f"{sorted(CLIENT_MAY_IMPORT)} of Ember")
    return problems


def import_cycles(source: Path) -> list[str]:
    """Each loop of modules importing each other (a strongly connected component)."""
    graph, files = import_graph(source), modules(source)
    edges = {name: sorted({t for t, _ in targets}) for name, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                loops.append(sorted(members))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [" <-> ".join(f"{m} ({files[m].relative_to(source.parent)}:"
                         f"{', '.join(str(n) for t, n in graph[m] if t in loop)})"
                         for m in loop) for loop in loops]


def test_no_lower_layer_imports_a_higher_one():
    problems = upward_imports(SOURCE)
    assert not problems, "imports that point up a layer (move the shared code down):\n" + \
        "\n".join(problems)


def test_no_modules_import_each_other():
    loops = import_cycles(SOURCE)
    assert not loops, "modules that import each other:\n" + "\n".join(loops)


def test_every_package_has_a_layer():
    packages = {layer_of(name, SOURCE) for name in modules(SOURCE)} - {None}
    assert packages <= set(LAYERS), f"give these packages a layer: {packages - set(LAYERS)}"


# --- the scan itself, on a planted tree ------------------------------------------------------
def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    """A `platform/` folder holding `files` (and the packages' __init__.py)."""
    root = tmp_path / "platform"
    for relative, text in {"ember/__init__.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(root).parents:
            if str(folder) != "." and not (root / folder / "__init__.py").exists():
                (root / folder / "__init__.py").write_text("")
        path.write_text(text)
    return root


@pytest.mark.parametrize(("files", "expected"), [
    ({"ember/access/gate.py": "def f():\n    from ember.serving.errors import openai_error\n",
      "ember/serving/errors.py": ""},
     ["platform/ember/access/gate.py:2: ember.access.gate (lower layer 'access') imports "
      "ember.serving.errors (upper layer 'serving')"]),
    ({"ember/ray_session.py": "import ember.cluster.local\n", "ember/cluster/local.py": ""},
     ["platform/ember/ray_session.py:1: ember.ray_session (bottom layer 'bottom') imports "
      "ember.cluster.local (upper layer 'cluster')"]),
    ({"ember/client/types.py": "from ember.models import catalogue\n",
      "ember/models/catalogue.py": ""},
     ["platform/ember/client/types.py:1: the SDK module ember.client.types imports "
      "ember.models.catalogue; it may import only ['ember.config.paths', 'ember.errors'] "
      "of Ember"]),
    ({"ember/serving/app.py": "from ember.access.gate import AccessGate\n",
      "ember/access/gate.py": "from ember.errors import EmberError\n",
      "ember/errors.py": ""}, []),
])
def test_the_scan_finds_a_planted_upward_import(tmp_path, files, expected):
    assert upward_imports(plant(tmp_path, files)) == expected


def test_the_scan_finds_planted_cycles(tmp_path):
    root = plant(tmp_path, {
        "ember/models/catalogue.py": "def f():\n    from ember.models.prepare import g\n",
        "ember/models/prepare.py": "from ember.models.catalogue import Entry\n",
        "ember/batch/a.py": "import ember.batch.b\n",
        "ember/batch/b.py": "from ember.batch import c\n",
        "ember/batch/c.py": "from . import a\n",
        "ember/batch/d.py": "from ember.batch import a\n",
    })
    assert import_cycles(root) == [
        "ember.batch.a (platform/ember/batch/a.py:1) <-> "
        "ember.batch.b (platform/ember/batch/b.py:1) <-> "
        "ember.batch.c (platform/ember/batch/c.py:1)",
        "ember.models.catalogue (platform/ember/models/catalogue.py:2) <-> "
        "ember.models.prepare (platform/ember/models/prepare.py:1)",
    ]
