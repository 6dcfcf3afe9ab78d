"""Texts for the tri-gram datastore: training data only, never an evaluation item.

Sources (see hvd/data/prompts.py for the fixed split):
  suites     every message of every suite's *train* split (agentic-edit, BFCL multi-turn and
             single-turn function calling, HumanEval, chat, long-context), each distinct text once
  stdlib     standard-library Python sources whose split key ``stdlib:<path>`` is train
  sharegpt   ShareGPT conversations (human and assistant turns), skipping every conversation
             that is an eval chat prompt and every text equal to an eval message
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

from hvd.data import suites
from hvd.data.chat import iter_json_array, sharegpt_path
from hvd.data.prompts import split_of
from hvd.data.stdlib import stdlib_files, stdlib_root


FULL_MARGIN = 2000  # a source within this many characters of its cap is full


@dataclass(frozen=True)
class CorpusConfig:
    sources: tuple[str, ...] = ("suites", "stdlib", "sharegpt")
    max_chars: Optional[int] = 8_000_000  # per source; None = everything


def _eval_texts() -> tuple[set[str], set[str]]:
    """(message texts of every eval item, ids of the eval chat prompts)."""
    texts: set[str] = set()
    ids: set[str] = set()
    for name in suites.SUITES:
        for p in suites.load_suite(name, split="eval"):
            texts.update(m["content"] for m in p.messages)
            ids.add(p.id)
    return texts, ids


def _suite_texts() -> Iterator[str]:
    seen: set[str] = set()
    for name in suites.SUITES:
        for p in suites.load_suite(name, split="train"):
            for m in p.messages:
                if m["content"] not in seen:
                    seen.add(m["content"])
                    yield m["content"]


def _stdlib_texts() -> Iterator[str]:
    root = stdlib_root()
    for rel, _ in stdlib_files():
        if split_of(f"stdlib:{rel}") == "train":
            try:
                yield (root / rel).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue


def _sharegpt_texts(eval_texts: set[str], eval_ids: set[str]) -> Iterator[str]:
    for record in iter_json_array(sharegpt_path()):
        turns = record.get("conversations") if isinstance(record, dict) else None
        if not isinstance(turns, list) or f"chat:sharegpt:{record.get('id')}" in eval_ids:
            continue
        values = [str(t.get("value", "")) for t in turns if isinstance(t, dict)]
        if any(v.strip() in eval_texts or v in eval_texts for v in values):
            continue
        for v in values:
            if v.strip():
                yield v


def corpus_texts(config: CorpusConfig = CorpusConfig()) -> Iterator[tuple[str, str]]:
    """(source, text) pairs, at most `max_chars` characters per source."""
    eval_texts, eval_ids = _eval_texts()
    makers = {"suites": _suite_texts, "stdlib": _stdlib_texts,
              "sharegpt": lambda: _sharegpt_texts(eval_texts, eval_ids)}
    for source in config.sources:
        if source not in makers:
            raise ValueError(f"unknown corpus source {source!r}; choose from: {', '.join(makers)}")
        used = 0
        for text in makers[source]():
            if text in eval_texts:
                continue
            if config.max_chars is not None and used + len(text) > config.max_chars:
                if used >= config.max_chars - FULL_MARGIN:
                    break
                continue  # too long for what is left: smaller texts may still fit
            used += len(text)
            yield source, text
