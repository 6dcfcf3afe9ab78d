"""`hvd bench --replay`: every method's acceptance against recorded `ar` outputs, target never run.

Per prompt, `ar`'s greedy output is taken from the reference store (generated and stored the
first time), then each method's drafter, made fresh as in timed runs, is replayed over it
(hvd/offline/replay.py). Peers cannot be replayed: they are not drafters. One warm-up replay
per method on the first prompt is excluded (numba compiles, lazy imports).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from hvd.offline.references import ReferenceStore, reference
from hvd.offline.replay import StepRecord, replay
from hvd.bench.runner import BenchConfig, make_drafter
from hvd.engine import Engine


@dataclass(frozen=True)
class ReplayRun:
    """One method replayed on one prompt."""

    prompt_id: str
    dataset: str
    method: str
    new_tokens: int  # the reference's length
    records: tuple[StepRecord, ...]


def replay_prompt(engine: Engine, prompt, cfg: BenchConfig, store: ReferenceStore,
                  tick: Callable[[], None] = lambda: None) -> list[ReplayRun]:
    ids = engine.encode(list(prompt.messages))
    n = cfg.max_new_tokens or prompt.max_new_tokens
    ref = reference(engine, store, prompt.id, ids, n)
    limit = engine.token_limit(len(ids), n)
    out = []
    for m in ["ar", *[m for m in cfg.methods if m != "ar"]]:
        records = replay(replay_drafter(engine, m, ref), ids, ref, limit=limit)
        out.append(ReplayRun(prompt.id, prompt.dataset, m, len(ref), tuple(records)))
        tick()
    return out


def replay_drafter(engine: Engine, method: str, reference, stores=None):
    """`make_drafter`'s (over `stores` when given), a hybrid set to charge its verify-cost curve
    for the verifications a replay does not run (on the wall clock it would learn that
    verifying costs nothing)."""
    from hvd.hybrid.drafter import HybridDrafter

    d = make_drafter(engine, method, reference, stores)
    if isinstance(d, HybridDrafter):
        d.clock = "model"
    return d


def run_replay(engine: Engine, prompts: Sequence, cfg: BenchConfig, store: ReferenceStore,
               tick: Callable[[], None] = lambda: None) -> list[ReplayRun]:
    if prompts:  # warm-up, excluded
        p = prompts[0]
        ids = engine.encode(list(p.messages))
        ref = reference(engine, store, p.id, ids, cfg.max_new_tokens or p.max_new_tokens)
        for m in cfg.methods:
            replay(replay_drafter(engine, m, ref), ids, ref[:16])
    return [r for p in prompts for r in replay_prompt(engine, p, cfg, store, tick)]
