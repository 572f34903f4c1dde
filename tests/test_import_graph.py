"""The package's import graph: stage packages import the shared core (training, decoding, sid,
artifacts, models, prompts, ...) and never each other, and no module imports itself back."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sidreasoner_core"
STAGES = {"data", "sids", "enrich", "align", "reasoning", "evaluation"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (at module level or inside functions)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)  # `from . import x` names a module
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_the_graph_sees_imports():
    graph = import_graph()
    assert "sidreasoner_core.training.sft" in graph["sidreasoner_core.align.stage"]
    assert "sidreasoner_core.sid" in graph["sidreasoner_core.reasoning.stage"]
    assert "sidreasoner_core.decoding.constrained" in graph["sidreasoner_core.evaluation.load"]
    assert len(graph) > 60


def test_no_stage_package_imports_another():
    crossing = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                      if _stage(a) and _stage(b) and _stage(a) != _stage(b))
    assert not crossing, "stage packages import each other:\n" + "\n".join(crossing)


def test_shared_core_imports_no_stage_package():
    """The core stages build on must not reach back into a stage (the CLI, the stage registry and
    the promotion gate, the pipeline's last step reading the evaluation, are the entry points)."""
    entry_points = {"sidreasoner_core.cli", "sidreasoner_core.pipeline_cli", "sidreasoner_core.stages",
                    "sidreasoner_core.promotion"}
    reaching = sorted(f"{a} -> {b}" for a, targets in import_graph().items() if not _stage(a) and a not in entry_points
                      for b in targets if _stage(b))
    assert not reaching, "shared modules import stage packages:\n" + "\n".join(reaching)


def test_no_import_cycles():
    graph = import_graph()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
