"""The package keeps its shape (issue 34): imports run one way (no cycle among its modules, imports inside
functions counted, those under `if TYPE_CHECKING:` not), no module over 400 lines, no function over 80 lines.
Each failure names the cycle, module or function. Read from the source with `ast`: nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "competition"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """'competition.inference.predictor' -> its file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _typing_only(tree: ast.AST) -> set[int]:
    return {id(node) for test in ast.walk(tree) if isinstance(test, ast.If) and "TYPE_CHECKING" in ast.unparse(test.test)
            for stmt in test.body for node in ast.walk(stmt)}


def _imported(module: str, path: Path, tree: ast.AST, known: set[str]) -> set[str]:
    """The package's modules that `module` imports anywhere in its file (TYPE_CHECKING blocks excepted)."""
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip, found = _typing_only(tree), set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                b = base
                for _ in range(node.level - 1):
                    b = b.rpartition(".")[0]
                target = f"{b}.{node.module}" if node.module else b
            names = [target, *(f"{target}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n in known and n not in (module, "competition")}
    return found


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _parsed() -> dict[str, tuple[Path, str, ast.AST]]:
    return {m: (p, p.read_text(), ast.parse(p.read_text())) for m, p in _modules().items()}


def test_imports_run_one_way():
    parsed = _parsed()
    edges = {m: _imported(m, p, tree, set(parsed)) for m, (p, _, tree) in parsed.items()}
    cycles = _cycles(edges)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_a_cycle_is_found_and_named():
    """The checker itself: a two-module cycle and a three-module one are reported, a chain is not."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert _cycles(edges) == [["a", "b"], ["c", "d", "e"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\ndef f():\n"
                     "    from .c import y\n")
    assert _imported("competition.a", PACKAGE / "a.py", tree, {"competition.b", "competition.c"}) == {"competition.c"}


def test_no_module_over_400_lines():
    big = [f"{m} ({text.count(chr(10))} lines)" for m, (_, text, _) in _parsed().items()
           if text.count("\n") > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {', '.join(big)}"


def test_no_function_over_80_lines():
    long = [f"{m}.{n.name} ({n.end_lineno - n.lineno + 1} lines)" for m, (_, _, tree) in _parsed().items()
            for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
