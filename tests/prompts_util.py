"""Prompt-suite helpers for tests: a suite's prompts of both splits, a small mix of real eval
prompts, and forgetting every cached suite (to time a cold load)."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Optional, Sequence

import hvd.data
from hvd.data.prompts import Prompt
from hvd.data.suites import MIXED_SUITES, load_suite


def both_splits(name: str) -> list[Prompt]:
    return load_suite(name, "eval") + load_suite(name, "train")


def spread(items: Sequence[Prompt], n: int) -> list[Prompt]:
    """``n`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    n = min(max(n, 0), len(items))
    return [items[i * len(items) // n] for i in range(n)] if n else []


def mixed_real_prompts(n_per_suite: int = 4, max_new_tokens: Optional[int] = None) -> list[Prompt]:
    """``n_per_suite`` eval prompts, spread over each suite, of each of ``MIXED_SUITES``."""
    out: list[Prompt] = []
    for suite in MIXED_SUITES:
        pool = load_suite(suite, max_new_tokens=max_new_tokens)
        if suite == "agentic-tools":  # prefer prompts with earlier calls and results in context
            pool = [p for p in pool if any(m["role"] == "tool" for m in p.messages)]
        out += spread(pool, n_per_suite)
    return out


def clear_data_caches() -> None:
    """Forget every built suite and cached source listing in hvd.data (each module's cached functions)."""
    for info in pkgutil.iter_modules(hvd.data.__path__):
        module = importlib.import_module(f"hvd.data.{info.name}")
        for obj in vars(module).values():
            if callable(getattr(obj, "cache_clear", None)) and getattr(obj, "__module__", None) == module.__name__:
                obj.cache_clear()
