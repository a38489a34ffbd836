"""The package's import graph: layers import only downwards, every name is imported from its home, no cycle,
and the library never imports its CLI."""

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


def lazy_homes() -> dict[str, str]:
    """`heritage_cnn.<name>` -> the module the root package's `__getattr__` loads it from, for each name of its
    `__all__` but `__version__`: `from heritage_cnn import Classifier` imports that module, and its layer."""
    init = PACKAGE / "__init__.py"
    homes = {
        alias.name: node.module
        for node in ast.walk(ast.parse(init.read_text(), str(init)))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{ROOT}.")
        for alias in node.names
    }
    lazy = [name for name in heritage_cnn.__all__ if name != "__version__"]
    assert set(lazy) <= set(homes), f"{init}: no `from heritage_cnn.<module> import` for {set(lazy) - set(homes)}"
    return {f"{ROOT}.{name}": homes[name] for name in lazy}


LAZY_HOMES = lazy_homes()


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
            target = LAZY_HOMES.get(target, target)
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


def test_the_walk_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    edges = graph()
    assert f"{ROOT}.cli.options" in edges[f"{ROOT}.cli.main"]
    assert f"{ROOT}.training.loop" in edges[f"{ROOT}.apps.pipeline"]  # imported inside a function
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from heritage_cnn import Classifier, __version__\n")
    lazy = imports_of(f"{ROOT}.base.probe", probe, module_names())
    assert lazy == {f"{ROOT}.inference.classifier"}  # the root's lazy name counts as an import of its home
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
    from heritage_cnn.inference.classifier import Classifier as Same

    assert Classifier is Same
    code = "import sys, heritage_cnn; print('torch' in sys.modules, heritage_cnn.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", heritage_cnn.__version__]


def test_importing_the_package_leaves_matplotlib_as_the_user_set_it() -> None:
    """Every module was imported with `matplotlib.use("Agg")` at its top, which switched a notebook's backend for the
    rest of the session; figures are made without pyplot, so neither the backend nor pyplot's state is touched."""
    names = [name for name in module_names() if not name.endswith("__main__")]
    code = (
        "import importlib, sys, matplotlib; matplotlib.use('svg')\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["svg", "False"]


MAX_MODULE_LINES = 450  # a module longer than this holds two ideas: split it


def test_no_module_is_two_ideas_long() -> None:
    long = {
        name: n for name, path in module_names().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


# The layers, lowest first: a module imports from its own layer and the layers before it, never after.
LAYERS = ["base", "data", "models", "inference", "inside", "training", "apps", "cli"]


def layer_of(name: str) -> str | None:
    """`heritage_cnn.models.checkpoint` -> "models"; the root package (the lazy `Classifier`) has none."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(edges: dict[str, set[str]]) -> dict[str, list[str]]:
    """Each module's imports of a later layer than its own."""
    found = {}
    for name, targets in edges.items():
        if (own := layer_of(name)) is None:
            continue
        up = sorted(t for t in targets if (other := layer_of(t)) and LAYERS.index(other) > LAYERS.index(own))
        if up:
            found[name] = up
    return found


def test_every_module_lives_in_a_layer() -> None:
    flat = [name for name in module_names() if name != ROOT and layer_of(name) not in LAYERS]
    assert flat == [], f"modules outside the layers {LAYERS}: {flat}"


def test_layers_import_only_downwards() -> None:
    assert upward_imports({f"{ROOT}.data.x": {f"{ROOT}.models.y", f"{ROOT}.base.z"}}) == {
        f"{ROOT}.data.x": [f"{ROOT}.models.y"]
    }
    assert upward_imports(graph()) == {}


def defined_names(path: Path) -> set[str]:
    """What a module defines at its top level (functions, classes, assignments), not what it imports."""
    names = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def imports_not_from_home(path: Path, modules: dict[str, Path]) -> list[str]:
    """`from heritage_cnn.X import name` where X neither defines `name` nor has it as a submodule: a re-export."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(ROOT)):
            continue
        if node.module not in modules:
            found.append(f"{node.module} (no such module)")
            continue
        defined = defined_names(modules[node.module])
        if node.module == ROOT:
            defined |= set(heritage_cnn.__all__)  # the public API: `Classifier` is loaded on first use
        for alias in node.names:
            if alias.name not in defined and f"{node.module}.{alias.name}" not in modules:
                found.append(f"{node.module}.{alias.name}")
    return found


def test_every_name_is_imported_from_its_home(tmp_path: Path) -> None:
    modules = module_names()
    shim = tmp_path / "shim.py"
    shim.write_text("from heritage_cnn.models.checkpoint import load_checkpoint, TTA_MODES\n")
    assert imports_not_from_home(shim, modules) == ["heritage_cnn.models.checkpoint.TTA_MODES"]
    repository = PACKAGE.parents[1]
    users = [*PACKAGE.rglob("*.py"), *(repository / "tests").rglob("*.py"), *(repository / "benchmarks").rglob("*.py")]
    found = {str(p): bad for p in users if (bad := imports_not_from_home(p, modules))}
    assert found == {}


def test_all_lists_only_names_the_module_defines() -> None:
    for name, path in module_names().items():
        tree = ast.parse(path.read_text(), str(path))
        listed = [
            e.value
            for node in tree.body
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for e in node.value.elts
        ]
        public = set(heritage_cnn.__all__) if name == ROOT else set()
        assert set(listed) <= defined_names(path) | public, name
