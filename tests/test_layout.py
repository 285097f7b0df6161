"""The architecture, checked: layers, no import cycles, no Gradio in the core, small modules,
one sentence splitter."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assistant", "knowledge")
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports, at the top or inside a function alike
    (a lazy import is still a dependency)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target not in PACKAGES:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _layer(module: str) -> str:
    """The capability a module belongs to: ``assistant.answering``, ``assistant.config``, ``knowledge``."""
    parts = module.split(".")
    return "knowledge" if parts[0] == "knowledge" else ".".join(parts[:2])


def test_no_module_imports_in_a_cycle():
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_capabilities_depend_on_each_other_in_one_direction():
    graph = import_graph(_modules())
    layers: dict[str, set[str]] = {}
    for module, edges in graph.items():
        layers.setdefault(_layer(module), set()).update(
            _layer(e) for e in edges if _layer(e) != _layer(module)
        )
    cycle = find_cycle(layers)
    assert cycle is None, "capabilities import each other: " + " → ".join(cycle)


def test_knowledge_is_the_lower_layer():
    graph = import_graph(_modules())
    upward = {m: sorted(e for e in edges if e.startswith("assistant")) for m, edges in graph.items()}
    assert {m: e for m, e in upward.items() if m.startswith("knowledge") and e} == {}


def test_the_cycle_check_sees_a_lazy_import_cycle():
    graph = {"a.x": {"a.y"}, "a.y": set()}
    assert find_cycle(graph) is None
    graph["a.y"].add("a.x")
    assert find_cycle(graph) == ["a.x", "a.y", "a.x"]
    # And it reads imports inside functions, which is where the old cycle hid.
    modules = _modules()
    assert "assistant.serving.service" in import_graph(modules)["assistant.serving.worker"]


def test_the_core_imports_no_gradio():
    code = "import sys, assistant, knowledge\n"
    code += "".join(
        f"import {m}\n" for m in sorted(_modules()) if not m.startswith(("assistant.ui", "assistant.server"))
    )
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_module_is_over_the_size_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules().values()
        if (n := len(p.read_text("utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_one_sentence_splitter():
    # A sentence-ending class followed by whitespace, the signature of a sentence splitter.
    splitter = re.compile(r"""\[[^\]]*\.!\?[^\]]*\][^\n]*\\s""")
    defined = [
        str(p.relative_to(ROOT))
        for p in _modules().values()
        for line in p.read_text("utf-8").splitlines()
        if "re.compile" in line and splitter.search(line)
    ]
    assert defined == ["knowledge/text.py"]
