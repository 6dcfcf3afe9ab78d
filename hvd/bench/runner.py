"""Run methods on prompts, interleaved round-robin, and collect timed runs.

Fairness rules: every method sees the same token ids and the same max_new_tokens; one warm-up
generation is excluded; within a repeat the methods run back to back on one prompt (the order
rotates between repeats, `ar` first in the first one so the oracle has its reference); each
speculative drafter is made fresh per generation, so nothing learnt from one repeat of a
prompt helps the next.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from hvd.bench.peers import PEERS, peer
from hvd.bench.run import Run
from hvd import methods
from hvd.drafters.base import Drafter
from hvd.drafters.oracle import OracleDrafter
from hvd.engine import Engine

if TYPE_CHECKING:
    from hvd.drafters.stores import SharedStores

ORACLE = "oracle"
WARMUP_TOKENS = 32


def known_methods() -> list[str]:
    return [*methods.METHODS, ORACLE, *PEERS]


@dataclass(frozen=True)
class BenchConfig:
    methods: tuple[str, ...]
    repeats: int = 1
    max_new_tokens: Optional[int] = None  # None: each prompt's own
    gguf: Optional[Path] = None  # the model's GGUF file, for the llama.cpp peers


@dataclass
class PromptRuns:
    """All timed runs of every method on one prompt."""

    prompt_id: str
    dataset: str
    reference: list[int]  # `ar` greedy output: the exactness and oracle reference
    runs: dict[str, list[Run]] = field(default_factory=dict)


def check_methods(methods: Sequence[str]) -> None:
    unknown = [m for m in methods if m not in known_methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from: {', '.join(known_methods())}")


def make_drafter(engine: Engine, method: str, reference: Sequence[int],
                 stores: Optional["SharedStores"] = None) -> Optional[Drafter]:
    """A fresh drafter for a method (the oracle drafts `reference`), over the model's own parts
    (`stores`' when given: a calibration of its own) but no earlier responses; None for `ar`."""
    if method == ORACLE:
        return OracleDrafter(reference)
    make = methods.get(method).make
    return make(engine.target, (stores or engine.stores).fresh()) if make else None


def run_once(engine: Engine, method: str, ids: list[int], n: int, reference: Sequence[int],
             gguf: Optional[Path] = None, stores: Optional["SharedStores"] = None) -> Run:
    """One timed generation of `method` (a fresh drafter over `stores`, default the engine's)."""
    if method in PEERS:
        return peer(method, gguf)(engine, ids, n)
    drafter = make_drafter(engine, method, reference, stores)
    res = engine.generate(ids, method=method, max_new_tokens=n, drafter=drafter)
    s = res.stats
    sources = collections.Counter(step.drafter for step in s.steps)
    return Run(res.token_ids, s.prefill_seconds, s.wall_seconds, s.n_steps, s.draft_seconds, dict(sources))


def run_prompt(engine: Engine, prompt, cfg: BenchConfig, tick: Callable[[], None] = lambda: None) -> PromptRuns:
    ids = engine.encode(list(prompt.messages))
    n = cfg.max_new_tokens or prompt.max_new_tokens
    methods = ["ar", *[m for m in cfg.methods if m != "ar"]]
    out = PromptRuns(prompt.id, prompt.dataset, [], {m: [] for m in methods})
    for r in range(cfg.repeats):
        order = methods if r == 0 else methods[r % len(methods):] + methods[: r % len(methods)]
        for m in order:
            run = run_once(engine, m, ids, n, out.reference, cfg.gguf)
            if m == "ar" and r == 0:
                out.reference = run.token_ids
            out.runs[m].append(run)
            tick()
    return out


def run_bench(engine: Engine, prompts: Sequence, cfg: BenchConfig, tick: Callable[[], None] = lambda: None) -> list[PromptRuns]:
    check_methods(cfg.methods)
    if prompts:  # warm-up, excluded: first-call allocations, lazy imports, JIT compiles (long
        # enough that copy drafters find matches and compile their expansion kernels too)
        ids = engine.encode(list(prompts[0].messages))
        for m in {"ar", *cfg.methods}:
            run_once(engine, m, ids, WARMUP_TOKENS, [], cfg.gguf)
    return [run_prompt(engine, p, cfg, tick) for p in prompts]
