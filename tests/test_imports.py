"""The library's modules import one another one way only: no cycle, not even through a
function-level or annotation-only import (a cycle hidden there breaks when the import is moved),
and the engine and the recipe (``coordjax.sweep``, ``coordjax.train``) import nothing of the
paper's experiment."""

import ast
import pathlib
import subprocess
import sys

import coordjax

PACKAGE = pathlib.Path(coordjax.__file__).parent


def _module_files() -> dict[str, pathlib.Path]:
    """``{"coordjax.sweep.engine": path, ...}`` for every module of the package."""
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


PAPER = ("coordjax.paper", "coordjax.datasets", "coordjax.models", "coordjax.tasks",
         "coordjax.handbuilt", "coordjax.report", "coordjax.catalog", "coordjax.gan")  # fmt: skip
"""The experiments (the paper's, and what only it uses; the GAN's): the tenants on the top
floor."""


def import_graph(files: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports, at module level, in a function or under
    ``if TYPE_CHECKING:`` (an annotation-only import is still an arrow between the modules)."""
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in files else node.module)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search)."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_find_cycle_finds_one_through_a_function_level_import(tmp_path):
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from c import g\n")
    (tmp_path / "c.py").write_text("from a import x\n")
    (tmp_path / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    import a\n")  # fmt: skip
    files = {name: tmp_path / f"{name}.py" for name in "abcd"}
    graph = import_graph(files)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    graph["c"] = set()
    assert find_cycle(graph) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph(_module_files())
    assert "coordjax.sweep.engine" in graph and graph["coordjax.sweep.engine"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_engine_and_the_recipe_import_nothing_of_the_paper():
    graph = import_graph(_module_files())
    engine = [m for m in graph if m.startswith(("coordjax.sweep", "coordjax.train"))]
    assert "coordjax.sweep.engine" in engine and "coordjax.train.step" in engine
    for module in engine:
        paper = sorted(t for t in graph[module] if t.startswith(PAPER))
        assert not paper, f"{module} imports {paper}"


def test_every_module_imports_first_in_a_fresh_interpreter():
    # Whichever module comes first must import without the others loaded before it: all of them
    # in alphabetical order, then in reverse (each leaf then comes before what imports it).
    modules = sorted(_module_files())
    for order in (modules, modules[::-1]):
        code = "; ".join(f"import {m}" for m in order)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
