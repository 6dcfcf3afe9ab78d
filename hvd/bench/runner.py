"""Run methods on prompts, interleaved round-robin, and collect timed runs.

Fairness rules: every method sees the same token ids and the same max_new_tokens; one warm-up
generation is excluded; within a repeat the methods run back to back on one prompt (the order
rotates between repeats, `ar` first in the first one so the oracle has its reference); each
speculative drafter is made fresh per generation, so nothing learnt from one repeat of a
prompt helps the next.

With `grammar` on, a prompt that carries a JSON schema (the structured suite) is decoded under
it by every method, twice: `m`, its drafts verified as proposed (plain constrained decoding for
`ar`: the baseline), and `m+gd`, with grammar-aware drafting (forced tokens taken as they come,
drafts cut where the grammar refuses them). All are compared with constrained `ar`.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from hvd.bench.peers import PEERS, peer
from hvd.bench.run import Run
from hvd import methods
from hvd.constraints.grammar import GrammarSpec
from hvd.drafters.base import Drafter
from hvd.drafters.oracle import OracleDrafter
from hvd.engine import Engine

if TYPE_CHECKING:
    from hvd.drafters.stores import SharedStores

ORACLE = "oracle"
WARMUP_TOKENS = 32
AWARE = "+gd"  # a method's key with grammar-aware drafting


def known_methods() -> list[str]:
    return [*methods.METHODS, ORACLE, *PEERS]


@dataclass(frozen=True)
class BenchConfig:
    methods: tuple[str, ...]
    repeats: int = 1
    max_new_tokens: Optional[int] = None  # None: each prompt's own
    gguf: Optional[Path] = None  # the model's GGUF file, for the llama.cpp peers
    grammar: bool = False  # decode prompts that carry a schema under it (`m` and `m+gd`)


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
             gguf: Optional[Path] = None, stores: Optional["SharedStores"] = None,
             grammar: Optional[GrammarSpec] = None) -> Run:
    """One timed generation of `method` (a fresh drafter over `stores`, default the engine's);
    under `grammar` for a key `m+gd` with grammar-aware drafting."""
    if method in PEERS:
        return peer(method, gguf)(engine, ids, n)
    base = method.removesuffix(AWARE)
    drafter = make_drafter(engine, base, reference, stores)
    res = engine.generate(ids, method=base, max_new_tokens=n, drafter=drafter, grammar=grammar,
                          grammar_drafts=method.endswith(AWARE))
    s = res.stats
    sources = collections.Counter(step.drafter for step in s.steps)
    return Run(res.token_ids, s.prefill_seconds, s.wall_seconds, s.n_steps, s.draft_seconds, dict(sources), s.forced_tokens)


def keys(cfg: BenchConfig, prompt=None) -> list[str]:
    """The runs' keys on a prompt: `ar` first; with a grammar each method plain and `+gd`."""
    methods = ["ar", *[m for m in cfg.methods if m != "ar"]]
    if not cfg.grammar or prompt is not None and prompt.schema is None:
        return methods
    out = []
    for m in methods:
        out += [m] if m in PEERS or m == ORACLE else [m, m + AWARE]
    return out


def run_prompt(engine: Engine, prompt, cfg: BenchConfig, tick: Callable[[], None] = lambda: None) -> PromptRuns:
    ids = engine.encode(list(prompt.messages))
    n = cfg.max_new_tokens or prompt.max_new_tokens
    methods = keys(cfg, prompt)
    grammar = GrammarSpec("json_schema", prompt.schema) if cfg.grammar and prompt.schema is not None else None
    out = PromptRuns(prompt.id, prompt.dataset, [], {m: [] for m in methods})
    for r in range(cfg.repeats):
        order = methods if r == 0 else methods[r % len(methods):] + methods[: r % len(methods)]
        for m in order:
            run = run_once(engine, m, ids, n, out.reference, cfg.gguf, grammar=grammar)
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
        schema = prompts[0].schema if cfg.grammar else None
        for m in keys(cfg, prompts[0]):
            run_once(engine, m, ids, WARMUP_TOKENS, [], cfg.gguf,
                     grammar=GrammarSpec("json_schema", schema) if schema is not None else None)
    return [run_prompt(engine, p, cfg, tick) for p in prompts]
