"""The import map: domain code never reaches into the command line, and no module circle exists.

Every import counts, top-level and inside functions: a function-level import
is still a dependency, only a later one. Imports under ``if TYPE_CHECKING:`` are
left out: they never run, and they are how a type names its user's class.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fsapp"
COMMAND_LAYER = ("fsapp.cli", "fsapp.commands")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The fsapp modules ``name`` imports anywhere in its file (``from fsapp import x`` names x if a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {_owner(f, known) for f in found if _owner(f, known)} - {name}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _owner(dotted: str, known: set[str]) -> str:
    """The fsapp module a dotted import name lands in ('' outside fsapp)."""
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def is_command_layer(name: str) -> bool:
    return name in ("fsapp.cli", "fsapp.__main__") or name == "fsapp.commands" or name.startswith("fsapp.commands.")


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import circle as [a, b, ..., a], or [] when there is none (depth-first, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_the_walk_sees_function_level_imports() -> None:
    """The checker itself: it reads imports inside functions and resolves `from fsapp import x`."""
    edges = graph()
    assert "fsapp.commands.base" in edges["fsapp.commands.calls"]
    assert "fsapp.app" in edges["fsapp.commands.serve"]  # imported inside run()
    assert "fsapp.render" in edges["fsapp.journal"]  # `from fsapp import render`


def test_type_checking_imports_are_left_out() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fsapp.cli\nelse:\n"
                     "    import fsapp.log\ndef f():\n    import fsapp.store\n")
    names = {a.name for n in _runtime_nodes(tree) if isinstance(n, ast.Import) for a in n.names}
    assert names == {"fsapp.log", "fsapp.store"}


def test_find_cycle_names_the_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_domain_modules_never_import_the_command_layer() -> None:
    """Only fsapp.cli, fsapp.__main__ and fsapp.commands may import fsapp.cli or fsapp.commands."""
    bad = sorted(f"{name} imports {target}" for name, targets in graph().items() if not is_command_layer(name)
                 for target in targets if is_command_layer(target) and target != "fsapp.__main__")
    assert bad == [], "domain code reaches into the command line:\n" + "\n".join(bad)


def test_no_import_circle() -> None:
    """No chain of imports (top-level or in functions) leads from an fsapp module back to itself."""
    cycle = find_cycle(graph())
    assert cycle == [], "import circle: " + " -> ".join(cycle)
