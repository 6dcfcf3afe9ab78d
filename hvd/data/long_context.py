"""The long-context suite: summaries of and questions about a standard library module, given its
source (5,500-9,000 characters) or, for bigger modules (up to 30 kB), a digest of its docstrings
of the same size: under ~3000 input tokens. Split key ``stdlib:<path>``.
"""
from __future__ import annotations

import ast
import random
import textwrap
from typing import Optional

from hvd.data.prompts import SEED, Item, estimate_tokens, make_prompt
from hvd.data.stdlib import functions, is_function, module_name, parse_stdlib, stdlib_files

MAX_NEW_TOKENS = 256
LONG_DOC_CHARS = (5500, 9000)
LONG_DOC_MAX_TOKENS = 2700  # estimated
LONG_MAX_FILE_BYTES = 30000  # docstring digests only of modules up to this size: parsing big ones is slow

_SOURCE_QUESTIONS = (
    "Summarize what this module does, its main classes and functions, and how they fit together.",
    "List every public function and class defined in this module, with a one-sentence description of each.",
    "Explain step by step how `{name}` works: its inputs, what it does with them, and what it returns.",
    "Which exceptions can `{name}` raise, directly or through the functions it calls, and when?",
)
_DOC_QUESTIONS = (
    "Based on this documentation, summarize the module's purpose and its most important APIs.",
    "According to this documentation, what does `{name}` do, and how should it be called?",
    "Using only this documentation, write a short tutorial with examples for a programmer new to this module.",
)


def _doc_entry(header: str, node: ast.AST) -> Optional[str]:
    doc = ast.get_docstring(node)  # type: ignore[arg-type]
    return f"{header}\n{textwrap.indent(doc, '    ')}\n" if doc else None


def _doc_digest(tree: ast.Module) -> tuple[str, list[str]]:
    """The module's docstrings (module, classes, functions, methods) as text of at most LONG_DOC_CHARS[1]."""
    text, names = (ast.get_docstring(tree) or "") + "\n\n", []
    nodes: list[tuple[str, ast.AST, str]] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            nodes.append((node.name, node, f"class {node.name}"))
            nodes += [(f"{node.name}.{n.name}", n, f"  {node.name}.{n.name}({ast.unparse(n.args)})")
                      for n in node.body if is_function(n)]
        elif is_function(node):
            nodes.append((node.name, node, f"def {node.name}({ast.unparse(node.args)})"))  # type: ignore[attr-defined]
    for name, node, header in nodes:
        entry = _doc_entry(header, node)
        if entry and len(text) + len(entry) > LONG_DOC_CHARS[1]:
            break
        if entry:
            text, names = text + entry + "\n", names + [name]
    return text.strip() + "\n", names


def _long_document(rel: str) -> Optional[tuple[str, str, list[str]]]:
    """(kind, document text, names it mentions) for a long enough file, else None."""
    parsed = parse_stdlib(rel)
    if parsed is None:
        return None
    source, tree = parsed
    lo, hi = LONG_DOC_CHARS
    if lo <= len(source) <= hi and estimate_tokens(source) <= LONG_DOC_MAX_TOKENS:
        return "source", f"```python\n{source}```\n", [q for q, _ in functions(tree)]
    digest, names = _doc_digest(tree)
    long_enough = len(source) > hi and len(digest) >= lo and estimate_tokens(digest) <= LONG_DOC_MAX_TOKENS
    return ("docs", digest, names) if long_enough else None


def _long_request(rel: str, kind: str, document: str, names: list[str]) -> str:
    rng = random.Random(f"{SEED}:long:{rel}")
    questions = _SOURCE_QUESTIONS if kind == "source" else _DOC_QUESTIONS
    question = rng.choice(questions if names else questions[:1])  # the first asks for a summary
    question = question.format(name=rng.choice(names)) if "{name}" in question else question
    what = "the source code" if kind == "source" else "the documentation (docstrings)"
    return f"Here is {what} of the Python standard library module `{module_name(rel)}`:\n\n{document}\n{question}"


def long_context_items() -> tuple[Item, ...]:
    """The long-context suite: one prompt per long enough file, split key ``stdlib:<path>``."""
    items: list[Item] = []
    for rel, size in stdlib_files():
        found = _long_document(rel) if LONG_DOC_CHARS[0] <= size <= LONG_MAX_FILE_BYTES else None
        if found is not None:
            text = _long_request(rel, *found)
            pid = f"long-context:{rel}:{found[0]}"
            items.append((f"stdlib:{rel}", make_prompt(pid, "python-stdlib-qa", MAX_NEW_TOKENS, ("user", text))))
    return tuple(items)
