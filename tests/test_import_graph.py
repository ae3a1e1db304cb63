"""No import cycles inside the ddsweep package, function-level imports included.

The graph is read from the source with ast (nothing is imported): an edge A -> B for
every `import B` / `from B import x` / relative import in A at any depth (inside
functions too: a lazy import is still a dependency), and A -> B.x when x is a module.
A package's module-level __getattr__ (PEP 562 lazy names, as ddsweep's own facade has)
is followed precisely: `from P import name` depends on what __getattr__ imports only
when P does not bind `name` itself (`from ddsweep import __version__` does not reach
ddsweep.api; `from ddsweep import work` would).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ddsweep"

# Known cycles, as the edges that close them. None since analysis became pure and the
# plots and report read through ddsweep.store.results. Never add one: break the new
# cycle instead.
ALLOWED: set[tuple[str, str]] = set()


def module_graph(package: Path) -> dict[str, dict[str, int]]:
    """{module: {imported module of the same package: line of the first such import}}."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        files[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, (path, _) in files.items()}

    def imports(name: str, tree: ast.AST, skip: set = frozenset()):
        """(line, module, imported name or None) for each import under `tree`, not under `skip` nodes."""
        here = name if files[name][1] else name.rpartition(".")[0]
        todo = [tree]
        while todo:
            node = todo.pop()
            if id(node) in skip:
                continue
            todo.extend(ast.iter_child_nodes(node))
            if isinstance(node, ast.Import):
                yield from ((node.lineno, a.name, None) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                yield from ((node.lineno, module, a.name) for a in node.names)

    lazy: dict[str, tuple[set, set]] = {}  # package with a __getattr__ -> (names it binds itself, what it imports)
    getattrs: dict[str, ast.AST] = {}
    for name, tree in trees.items():
        fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"), None)
        if files[name][1] and fn is not None:
            getattrs[name] = fn
            bound = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                     for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
            bound |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            bound |= {(a.asname or a.name).split(".")[0] for n in tree.body
                      if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
            lazy[name] = (bound, {t for _, m, a in imports(name, fn) for t in (m, f"{m}.{a}") if t in files} - {name})

    graph: dict[str, dict[str, int]] = {}
    for name, tree in trees.items():
        edges: dict[str, int] = {}
        # a package's own __getattr__ is no dependency of the package, only of who asks it for a lazy name
        for line, module, attr in imports(name, tree, skip={id(getattrs[name])} if name in getattrs else set()):
            targets = [module]
            if attr is not None and f"{module}.{attr}" in files:
                targets.append(f"{module}.{attr}")
            elif attr is not None and module in lazy and attr not in lazy[module][0]:
                targets += sorted(lazy[module][1])
            for t in targets:
                if t in files and t != name:
                    edges[t] = min(line, edges.get(t, line))
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]], ignore: set = frozenset()) -> list[list[str]]:
    """One cycle (a list of modules, first repeated last) per strongly connected component."""
    edges = {v: sorted(w for w in ws if (v, w) not in ignore) for v, ws in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_cycle_in(set(c), edges) for c in components]


def _cycle_in(component: set[str], edges: dict[str, list[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first back to it)."""
    start = min(component)
    previous = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in edges[v]:
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w in component and w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # (a strongly connected component always has one)


def _describe(cycle: list[str], graph) -> str:
    """'a:12 -> b:30 -> a': each module with the line of its import of the next."""
    return " -> ".join(f"{a}:{graph[a][b]}" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def _reaches(graph, start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for w in graph[todo.pop()]:
            if w == goal:
                return True
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return False


def test_the_package_has_no_import_cycle():
    graph = module_graph(PACKAGE)
    assert len(graph) > 40 and graph["ddsweep.api"], "the package was not read"
    found = cycles(graph, ignore=ALLOWED)
    assert not found, "import cycle(s):\n" + "\n".join(_describe(c, graph) for c in found)


@pytest.mark.parametrize("edge", sorted(ALLOWED), ids=lambda e: f"{e[0]}->{e[1]}")
def test_each_allowed_cycle_still_exists(edge):
    """The allow-list only shrinks: an entry whose edge is gone, or closes no cycle now, must go."""
    graph = module_graph(PACKAGE)
    a, b = edge
    assert b in graph[a], f"{a} no longer imports {b}: delete it from ALLOWED"
    assert _reaches(graph, b, a), f"{a} -> {b} closes no cycle any more: delete it from ALLOWED"


def test_function_level_and_relative_imports_make_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("import os\n\ndef f():\n    from .. import c\n")
    (pkg / "c.py").write_text("def g():\n    import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import a\n")  # outside the cycle
    graph = module_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub": 1, "pkg.sub.b": 1} and graph["pkg.sub.b"] == {"pkg": 4, "pkg.c": 4}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    assert cycles(graph, ignore={("pkg.c", "pkg.a")}) == []


def test_a_lazy_package_attribute_depends_on_what_getattr_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("VERSION = '1'\n\ndef __getattr__(name):\n    from pkg import api\n"
                                     "    return getattr(api, name)\n")
    (pkg / "api.py").write_text("from pkg import low\n")
    (pkg / "low.py").write_text("def f():\n    from pkg import VERSION\n")
    (pkg / "lower.py").write_text("def f():\n    from pkg import run\n")  # a lazy name: reaches api
    graph = module_graph(pkg)
    assert graph["pkg"] == {} and graph["pkg.low"] == {"pkg": 2}
    assert graph["pkg.lower"] == {"pkg": 2, "pkg.api": 2}
    assert cycles(graph) == []
    (pkg / "low.py").write_text("def f():\n    from pkg import run\n")
    assert cycles(module_graph(pkg)) == [["pkg.api", "pkg.low", "pkg.api"]]
