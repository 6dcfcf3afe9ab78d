"""The prompt type, the fixed eval/train split rule, helpers shared by the data sources, and
custom JSONL prompts files (`load_prompts_file`).

Split rule (fixed; never change it, or training data leaks into evaluation): every item
has a *split key*, and the item is in ``train`` iff ``zlib.crc32(key) % 5 == 0``, else in
``eval``. Keys: the stdlib suites use ``stdlib:<path relative to the stdlib>``, so a file
is train (or eval) in every suite; agentic-tools uses ``bfcl-multi-turn:<scenario number>``,
so all categories and turns of one BFCL scenario land together; the other suites use the
prompt id. Custom JSONL files (``load_prompts_file``) are not split: all rows are eval.
"""
from __future__ import annotations

import importlib.util
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

SPLITS = ("eval", "train")
TRAIN_MODULUS = 5
SEED = 1729
CHARS_PER_TOKEN = 3.5  # rough proxy for SmolLM2's tokenizer on English and code
CUSTOM_MAX_NEW_TOKENS = 256  # a prompts file row's default reply length

PathLike = Union[str, os.PathLike]
Message = dict
Item = tuple[str, "Prompt"]  # (split key, prompt)


@dataclass(frozen=True)
class Prompt:
    """One prompt: chat ``messages`` ({"role", "content"} dicts, to be treated as read-only)."""

    id: str
    dataset: str
    messages: tuple[Message, ...]
    max_new_tokens: int
    schema: Optional[str] = None  # a JSON schema (text) the answer must match, where the task defines one

    def chat(self) -> list[dict[str, str]]:
        """A fresh list of the messages (the form Engine.encode/generate take)."""
        return [dict(m) for m in self.messages]


class PromptFileError(ValueError):
    """A malformed custom prompts file; the message is one line naming file and line."""


class SuiteDataError(RuntimeError):
    """The data a suite is built from is not installed."""


def split_of(key: str) -> str:
    """The split ("eval" or "train") of an item with this split key (see the module docstring)."""
    return "train" if zlib.crc32(key.encode("utf-8")) % TRAIN_MODULUS == 0 else "eval"


def estimate_tokens(text: str) -> float:
    """A rough token count for SmolLM2's tokenizer: ~3.5 characters a token, but a token per digit."""
    digits = sum(text.count(d) for d in "0123456789")
    return (len(text) - digits) / CHARS_PER_TOKEN + digits


# ---- helpers shared by the sources --------------------------------------------------------


def make_prompt(pid: str, dataset: str, max_new_tokens: int, *turns: tuple[str, str]) -> Prompt:
    """A prompt of (role, content) ``turns``."""
    messages = tuple({"role": role, "content": content} for role, content in turns)
    return Prompt(pid, dataset, messages, max_new_tokens)


def interleave(*groups: Sequence[Item]) -> list[Item]:
    """The groups' first items, then their second items, ... (a shorter group drops out when done)."""
    out: list[Item] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def is_positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def package_dir(module: str) -> Path:
    """A data package's directory, found without importing the package."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise SuiteDataError(f"data package {module!r} is not installed")
    return Path(locations[0])


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- custom prompts files -----------------------------------------------------------------


def load_prompts_file(path: PathLike, max_new_tokens: int = CUSTOM_MAX_NEW_TOKENS) -> list[Prompt]:
    """Prompts from a JSONL file, one object a line: {"id", "category"?, "messages" | "prompt", "max_new_tokens"?}.

    The dataset name is the row's category, else the file's stem. Blank lines are skipped. Any
    problem raises PromptFileError, whose one-line message names the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise PromptFileError(f"{path}: cannot read the file: {e.strerror or e}") from None
    prompts: list[Prompt] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        p = _parse_prompt_line(line, path.stem, max_new_tokens, f"{path}:{lineno}")
        if p.id in first_line:
            raise PromptFileError(f"{path}:{lineno}: duplicate id {p.id!r} (first on line {first_line[p.id]})")
        first_line[p.id] = lineno
        prompts.append(p)
    if not prompts:
        raise PromptFileError(f"{path}: empty file: no prompts in it")
    return prompts


_MESSAGES_SHAPE = 'must be a non-empty list of {"role": str, "content": str} objects'


def _parse_prompt_line(line: str, stem: str, default_max: int, where: str) -> Prompt:
    """One row of a prompts file; ``where`` ("file:line") prefixes any error."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise PromptFileError(f"{where}: bad JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(row, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(row).__name__}")
    pid, category = row.get("id"), row.get("category")
    if "id" not in row:
        raise PromptFileError(f'{where}: missing "id"')
    if not isinstance(pid, str) or not pid.strip():
        raise PromptFileError(f'{where}: "id" must be a non-empty string')
    if category is not None and (not isinstance(category, str) or not category.strip()):
        raise PromptFileError(f'{where}: "category" must be a non-empty string')
    max_new = row.get("max_new_tokens", default_max)
    if not is_positive_int(max_new):
        raise PromptFileError(f'{where}: "max_new_tokens" must be a positive integer, got {json.dumps(max_new)}')
    return Prompt(pid, category or stem, _row_messages(row, where), max_new)


def _row_messages(row: dict, where: str) -> tuple[Message, ...]:
    if ("messages" in row) == ("prompt" in row):
        both = "both" if "prompt" in row else "neither"
        raise PromptFileError(f'{where}: give exactly one of "messages" and "prompt" ({both} given)')
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise PromptFileError(f'{where}: "prompt" must be a non-empty string')
        return ({"role": "user", "content": row["prompt"]},)
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise PromptFileError(f'{where}: "messages" {_MESSAGES_SHAPE}')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise PromptFileError(f'{where}: "messages" {_MESSAGES_SHAPE}; item {i} is {json.dumps(m)[:60]}')
    if not any(m["content"].strip() for m in messages):
        raise PromptFileError(f'{where}: "messages" has no non-empty content')
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)
