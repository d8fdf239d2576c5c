"""The import structure stays one-directional (docs/architecture.md): no module cycles, no import against the
layer order, and a reason beside every import that is deferred into a function.

The graph is read from the source with ``ast`` (nothing is imported): every ``import`` / ``from … import`` of a
project module, at module level or inside a function, except under ``if TYPE_CHECKING:``. Modules are named as
installed (``callbacks/ema.py`` is ``reasonaudio.callbacks.ema``).
"""
from __future__ import annotations

import ast
import fnmatch
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {ROOT / "src" / "reasonaudio": "reasonaudio", ROOT / "callbacks": "reasonaudio.callbacks",
           ROOT / "data_modules": "reasonaudio.data_modules",
           ROOT / "lightning_configs": "reasonaudio.lightning_configs"}

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("reasonaudio", "reasonaudio.moved", "reasonaudio.config", "reasonaudio.media", "reasonaudio.media.*",
              "reasonaudio.flow", "reasonaudio.compiled_sampler", "reasonaudio.schedules", "reasonaudio.losses", "reasonaudio.preference_objectives",
              "reasonaudio.synthetic_world", "reasonaudio.captions.format", "reasonaudio.lightning_configs")),
    ("models", ("reasonaudio.models", "reasonaudio.models.*")),
    ("metrics", ("reasonaudio.metrics", "reasonaudio.metrics.*")),
    ("data", ("reasonaudio.data_modules", "reasonaudio.data_modules.*")),
    ("systems", ("reasonaudio.systems", "reasonaudio.systems.*")),
    ("callbacks", ("reasonaudio.callbacks", "reasonaudio.callbacks.*")),
    ("apps", ("reasonaudio.cli", "reasonaudio.__main__", "reasonaudio.generate", "reasonaudio.data_tools",
              "reasonaudio.demo", "reasonaudio.experiments", "reasonaudio.experiments.*", "reasonaudio.captions",
              "reasonaudio.captions.*")),
]
"""Bottom to top; a module may import its own layer and the layers below it. The first matching pattern wins."""

LAZY = "# lazy:"
"""The comment that must open the comment block directly above an import inside a function (or follow it on its
line), with its reason."""


def modules() -> dict[str, Path]:
    """Installed module name → file, for every project source file."""
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _deferred(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> tuple[bool, bool]:
    """(inside a function, under ``if TYPE_CHECKING``)."""
    inside = checking = False
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside = True
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            checking = True
    return inside, checking


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str, bool]]]:
    """``(edges, deferred)``: module → project modules it imports; and every import inside a function as
    ``(module, line, what, has a reason)``."""
    known = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    deferred = []
    for module, path in known.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            inside, checking = _deferred(node, parents)
            if checking:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(node, module, path.name == "__init__.py")
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges[module].add(target)
            if inside:
                comments, i = [], node.lineno - 2  # the comment block directly above the import
                while i >= 0 and lines[i].strip().startswith("#"):
                    comments.append(lines[i].strip())
                    i -= 1
                reason = (bool(comments) and comments[-1].startswith(LAZY)) or LAZY in lines[node.lineno - 1]
                deferred.append((module, node.lineno, ast.unparse(node), reason))
    return edges, deferred


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                found.append(sorted(component))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int:
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return i
    raise KeyError(f"{module} is in no layer of tests/test_architecture.py LAYERS (and docs/architecture.md)")


def package_of(module: str) -> str:
    """The layer's package a module belongs to (``reasonaudio.metrics.synthetic`` → ``reasonaudio.metrics``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and layer_of(module) != 0 else module


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_is_read_from_the_sources(graph):
    edges, _ = graph
    known = modules()
    assert "reasonaudio.callbacks.ema" in known and "reasonaudio.data_modules.synthetic" in known
    # a few edges everybody can check by opening the files
    assert "reasonaudio.flow" in edges["reasonaudio.systems.flow_matching"]
    assert "reasonaudio.synthetic_world" in edges["reasonaudio.data_modules.synthetic"]
    assert "reasonaudio.synthetic_world" in edges["reasonaudio.metrics.synthetic"]
    assert len(known) > 100 and sum(map(len, edges.values())) > 250


def test_cycle_detection_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_cycles(graph):
    edges, _ = graph
    assert cycles(edges) == []


def test_every_module_has_a_layer(graph):
    for module in modules():
        layer_of(module)


def test_imports_follow_the_layer_order(graph):
    edges, _ = graph
    against = sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                     for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))
    assert against == []


def test_no_package_loops(graph):
    """Collapsed to packages (``reasonaudio.metrics``, ``reasonaudio.models``, …), the graph has no cycle either."""
    edges, _ = graph
    packages: dict[str, set[str]] = defaultdict(set)
    for a, targets in edges.items():
        for b in targets:
            if package_of(a) != package_of(b):
                packages[package_of(a)].add(package_of(b))
    assert cycles(packages) == []


def test_every_deferred_import_says_why(graph):
    _, deferred = graph
    silent = [f"{module}:{line}: {what}" for module, line, what, reason in deferred if not reason]
    assert silent == [], f"imports inside functions need a '{LAZY} <reason>' line above them"


def test_the_layers_are_documented():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name, _ in LAYERS:
        assert f"**{name}**" in text
    assert "```mermaid" in text
    for module, path in modules().items():
        if path.name == "__init__.py" and module.count(".") == 1:
            continue  # a layer's package (``reasonaudio.models``): the layer's heading describes it
        if module.count(".") <= 2 and not module.endswith("__main__"):
            assert f"`{module.removeprefix('reasonaudio.')}`" in text or f"`{module}`" in text, module
