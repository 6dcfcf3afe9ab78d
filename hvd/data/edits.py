"""Whole-file edit requests over small standard library modules: the agentic-edit suite.

Each file of 40-150 lines (at most ~1400 estimated tokens) with functions gets up to two
requests (rename a function or parameter, add type hints, add a docstring or comments, fix a
described bug), chosen with a per-file seed; the function named in each request is found in
the file with ``ast``. The edit episodes (hvd.data.episodes) use the same files and requests.
"""
from __future__ import annotations

import ast
import random
from typing import Callable, Iterator, Optional

from hvd.data.prompts import CHARS_PER_TOKEN, SEED, Item, estimate_tokens, make_prompt
from hvd.data.stdlib import Function, arguments, functions, params, parse_stdlib, stdlib_files

MAX_NEW_TOKENS = 256
EDIT_FILE_LINES = (40, 150)
EDIT_FILE_MAX_TOKENS = 1400  # estimated (estimate_tokens); the request adds ~50
EDITS_PER_FILE = 2

Funcs = list[tuple[str, Function]]


def _edit_rename_function(rng: random.Random, funcs: Funcs) -> Optional[str]:
    qual, fn = rng.choice(funcs)
    new = fn.name + rng.choice(("_impl", "_helper", "_internal"))
    kind = "method" if "." in qual else "function"
    return f"Rename the {kind} `{qual}` to `{new}` and update every reference to it in this file."


def _edit_rename_parameter(rng: random.Random, funcs: Funcs) -> Optional[str]:
    choices = [(qual, p) for qual, fn in funcs for p in params(fn)]
    if not choices:
        return None
    qual, p = rng.choice(choices)
    return f"Rename the parameter `{p}` of `{qual}` to `{p}_arg` and update all of its uses inside `{qual}`."


def _edit_type_hints(rng: random.Random, funcs: Funcs) -> Optional[str]:
    bare = [q for q, fn in funcs if fn.returns is None and not any(a.annotation for a in arguments(fn))]
    if not bare:
        return None
    return f"Add type hints to every parameter and the return value of `{rng.choice(bare)}`, without changing its behaviour."


def _edit_document(rng: random.Random, funcs: Funcs) -> Optional[str]:
    undocumented = [(q, fn) for q, fn in funcs if ast.get_docstring(fn) is None]
    if undocumented:
        qual, fn = rng.choice(undocumented)
        described = ", what its parameters are" if params(fn) else ""
        return f"Add a docstring to `{qual}` that says what it does{described} and what it returns."
    return f"Add short comments inside `{rng.choice(funcs)[0]}` that explain each step it takes."


def _edit_fix_bug(rng: random.Random, funcs: Funcs) -> Optional[str]:
    choices = [(qual, p) for qual, fn in funcs for p in params(fn, required=True)]
    if not choices:
        return None
    qual, p = rng.choice(choices)
    return (f"Bug report: when `{p}` is None, `{qual}` fails later with a confusing error. Fix it: at the start "
            f"of `{qual}`, raise a `TypeError` with a clear message if `{p}` is None.")


_EDIT_KINDS: dict[str, Callable[[random.Random, Funcs], Optional[str]]] = {
    "rename-function": _edit_rename_function,
    "rename-parameter": _edit_rename_parameter,
    "type-hints": _edit_type_hints,
    "docstring": _edit_document,
    "fix-bug": _edit_fix_bug,
}


def edit_requests(rel: str, funcs: Funcs) -> list[tuple[str, str]]:
    """Up to EDITS_PER_FILE (kind, instruction) pairs for a file, chosen with a per-file seed."""
    rng = random.Random(f"{SEED}:edit:{rel}")
    kinds = sorted(_EDIT_KINDS)
    rng.shuffle(kinds)
    out = []
    for kind in kinds:
        instruction = _EDIT_KINDS[kind](rng, funcs)
        if instruction:
            out.append((kind, instruction))
        if len(out) == EDITS_PER_FILE:
            break
    return out


def _fits_edit(source: str) -> bool:
    lo, hi = EDIT_FILE_LINES
    return lo <= source.count("\n") <= hi and estimate_tokens(source) <= EDIT_FILE_MAX_TOKENS


def edit_files() -> Iterator[tuple[str, str, Funcs]]:
    """(path relative to the stdlib, source, its functions) of every file small enough to edit whole."""
    for rel, size in stdlib_files():
        parsed = parse_stdlib(rel) if size <= EDIT_FILE_MAX_TOKENS * CHARS_PER_TOKEN * 1.25 else None
        if parsed is None or not _fits_edit(parsed[0]) or not functions(parsed[1]):
            continue
        yield rel, parsed[0], functions(parsed[1])


def edit_request_text(rel: str, source: str, instruction: str) -> str:
    """The request to edit the whole file ``rel`` (whose text is ``source``) as ``instruction`` says."""
    return (f"Here is the file `{rel}` from the Python standard library:\n\n```python\n{source}```\n\n"
            f"{instruction} Return the complete updated file.")


def agentic_edit_items() -> tuple[Item, ...]:
    """The agentic-edit suite: one prompt per (file, edit request), split key ``stdlib:<path>``."""
    items: list[Item] = []
    for rel, source, funcs in edit_files():
        for kind, instruction in edit_requests(rel, funcs):
            text = edit_request_text(rel, source, instruction)
            items.append((f"stdlib:{rel}", make_prompt(f"agentic-edit:{rel}:{kind}", "python-stdlib", MAX_NEW_TOKENS, ("user", text))))
    return tuple(items)
