"""The house: no import cycle among hvd's modules (function-level imports counted), and no
source file over 800 lines. The layering itself is `lint-imports`' (pyproject.toml), run by
`make test`."""
import ast
import collections
import pathlib

import hvd

ROOT = pathlib.Path(hvd.__file__).parent
MAX_LINES = 800


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(("hvd", *p.relative_to(ROOT).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(mods: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    graph = collections.defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hvd"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    graph[name].add(full if full in mods else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.startswith("hvd"))
    return graph


def test_no_import_cycle_among_hvd_modules():
    mods = _modules()
    graph = _imports(mods)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if n not in mods or n == "hvd":  # the package's face re-exports the engine
                continue
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path[path.index(n):] + [n]) if n in path else n
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m, [m])


def test_no_source_file_over_800_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*") if p.suffix in (".py", ".c", ".h")
            for n in [len(p.read_text().splitlines())] if n > MAX_LINES}
    assert not long, long
