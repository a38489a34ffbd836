"""The package's import graph: no cycle among library modules, and the library never imports its CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import heritage_cnn

PACKAGE = Path(heritage_cnn.__file__).parent
ROOT = "heritage_cnn"


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every heritage_cnn module `name` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from pkg import name`: the module, else the package
                target = target.rpartition(".")[0]
            # every module already imports the root package (its parent); an edge to it is no cycle
            if target and target != ROOT and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def is_cli(name: str) -> bool:
    return name == f"{ROOT}.cli" or name.startswith(f"{ROOT}.cli.")


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_function_level_and_relative_imports() -> None:
    edges = graph()
    assert f"{ROOT}.cli.options" in edges[f"{ROOT}.cli"]
    assert f"{ROOT}.train" in edges[f"{ROOT}.pipeline"]  # imported inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_library_modules() -> None:
    edges = graph()
    library = {name: {t for t in targets if not is_cli(t)} for name, targets in edges.items() if not is_cli(name)}
    assert find_cycle(library) is None


def test_the_library_never_imports_the_cli() -> None:
    offenders = {name: sorted(filter(is_cli, targets)) for name, targets in graph().items() if not is_cli(name)}
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_classifier_is_importable_from_the_package_which_stays_light() -> None:
    from heritage_cnn import Classifier
    from heritage_cnn.predict import Classifier as Same

    assert Classifier is Same
    code = "import sys, heritage_cnn; print('torch' in sys.modules, heritage_cnn.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", heritage_cnn.__version__]


MAX_MODULE_LINES = 450  # a module longer than this holds two ideas: split it


def test_no_module_is_two_ideas_long() -> None:
    long = {
        name: n for name, path in module_names().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
