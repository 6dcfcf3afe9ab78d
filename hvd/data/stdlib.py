"""The running interpreter's standard library as a data source: its .py files (tests and
generated code skipped), parsed with ``ast``, and the functions and parameters in them.

Files differ between Python versions, so everything built from them (the agentic-edit and
long-context suites, the edit episodes) depends on the interpreter's version. Their split key
is ``stdlib:<path relative to the stdlib>`` (hvd.data.prompts.split_of).
"""
from __future__ import annotations

import ast
import functools
import os
import sysconfig
from pathlib import Path
from typing import Optional, Union

_SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
    "encodings", "turtledemo", "_bundled",
})
Function = Union[ast.FunctionDef, ast.AsyncFunctionDef]


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=1)
def stdlib_files() -> tuple[tuple[str, int], ...]:
    """(path relative to the stdlib, size in bytes) of its .py files, sorted; tests and generated code skipped."""
    root, out = stdlib_root(), []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-")]
        for name in filenames:
            if name.endswith(".py"):
                full = os.path.join(dirpath, name)
                out.append((Path(full).relative_to(root).as_posix(), os.path.getsize(full)))
    return tuple(sorted(out))


def parse_stdlib(rel: str) -> Optional[tuple[str, ast.Module]]:
    """(source, with exactly one final newline; its syntax tree) of a stdlib file, None if unreadable."""
    try:
        source = (stdlib_root() / rel).read_text(encoding="utf-8").rstrip() + "\n"
        return source, ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None


def is_function(node: ast.AST) -> bool:
    """A function or method definition other than a dunder."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    return not (node.name.startswith("__") and node.name.endswith("__"))


def functions(tree: ast.Module) -> list[tuple[str, Function]]:
    """(qualified name, node) of the module's functions and methods, dunders left out."""
    out: list[tuple[str, Function]] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out += [(f"{node.name}.{n.name}", n) for n in node.body if is_function(n)]
        elif is_function(node):
            out.append((node.name, node))
    return out


def arguments(fn: Function) -> list[ast.arg]:
    """Every argument of the function, ``*args`` and ``**kwargs`` included."""
    a = fn.args
    return [x for x in (*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg) if x is not None]


def params(fn: Function, required: bool = False) -> list[str]:
    """Named parameters other than self/cls; with ``required``, only those without a default."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    n_plain = len(positional) - len(a.defaults)
    names = [x.arg for i, x in enumerate(positional) if not required or i < n_plain]
    names += [x.arg for x, d in zip(a.kwonlyargs, a.kw_defaults) if not required or d is None]
    return [n for n in names if n not in ("self", "cls")]


def module_name(rel: str) -> str:
    """The dotted module name of a stdlib file (a package's ``__init__.py`` is the package)."""
    parts = rel[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)
