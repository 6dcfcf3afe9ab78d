"""Offline simulator: estimated speedups of hybrid configurations on TRAIN-split prompts.

Replays each drafter over recorded `ar` outputs (hvd/bench/replay.py: no target forwards) and
prices every step with this machine's verify-cost curve (hvd/hybrid/cost.py):
estimated speedup = (tokens after the first x cost(0)) / sum over steps of (draft seconds +
cost(draft nodes)). Used to choose the hybrid's model arm and policy knobs without touching
evaluation prompts.

`ceiling` is the best any per-step arm choice can do with the same two drafters: an oracle
that reads the reference takes, each step, whichever of the cache draft (cut to exactly
what gets accepted), the model draft, both merged, or no draft has the best realised rate.
Run: python scripts/simulate_hybrid.py [--limit N] [--suite S ...]
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from typing import Sequence

from hvd import Engine
from hvd.bench.references import ReferenceStore, reference
from hvd.bench.replay import replay
from hvd.bench.suites import load_suite
from hvd.drafters import registry
from hvd.drafters.base import DecodeContext
from hvd.drafters.hybrid import CACHE_ARM, MODEL_ARM, build
from hvd.hybrid import cost as cost_curve
from hvd.hybrid.cost import VerifyCost
from hvd.hybrid.policy import PolicyConfig
from hvd.models import cache_dir
from hvd.types import Draft

SUITES = ("agentic-edit", "agentic-tools", "structured", "code", "chat")


class CeilingHybrid:
    """The oracle arm chooser: sees the reference, so it is a bound, never a method."""

    name = "ceiling"

    def __init__(self, target, reference: Sequence[int], prompt_len: int, cost: VerifyCost) -> None:
        self.cache, self.model = registry.get(CACHE_ARM).make(target), registry.get(MODEL_ARM).make(target)
        self.capabilities = self.cache.capabilities
        self.reference, self.prompt_len, self.cost = list(reference), prompt_len, cost

    def begin(self, prompt: Sequence[int]) -> None:
        self.cache.begin(prompt)
        self.model.begin(prompt)

    def propose(self, ctx: DecodeContext) -> Draft:
        rest = self.reference[len(ctx.tokens) - self.prompt_len:]
        cdraft = self.cache.propose(ctx).truncate(ctx.max_draft)
        mdraft = self.model.propose(ctx).truncate(ctx.max_draft)
        cut = cdraft.truncate(max(1, len(cdraft.accepted_path(rest))))
        options = [Draft.empty(), cut, mdraft, cut.union(mdraft)]
        return max(options, key=lambda d: (len(d.accepted_path(rest)) + 1) / self.cost(len(d)))

    def observe(self, committed: Sequence[int]) -> None:
        self.cache.observe(committed)
        self.model.observe(committed)

    def end(self, output: Sequence[int]) -> None:
        self.cache.end(output)
        self.model.end(output)


def variants(target, cost):
    yield "suffix", lambda ref, n: registry.get("suffix").make(target)
    yield MODEL_ARM, lambda ref, n: registry.get(MODEL_ARM).make(target)
    yield "rule-hybrid", lambda ref, n: registry.get("rule-hybrid").make(target)
    for none in (True, False):
        yield ("hvd" if none else "hvd without the none arm",
               lambda ref, n, none=none: build(target, "hvd", PolicyConfig(rule="cost", allow_none=none)))
    yield "ceiling", lambda ref, n: CeilingHybrid(target, ref, n, cost)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--suite", action="append", choices=SUITES)
    a = ap.parse_args()
    e = Engine.load()
    store = ReferenceStore.for_model(e.target.model)
    cost = cost_curve.cached(e.target, cache_dir())  # non-decreasing (hvd/hybrid/cost.py)
    max_draft = e.target.max_draft_nodes
    est: dict[tuple[str, str], list[float]] = defaultdict(list)
    for p in [p for s in a.suite or SUITES for p in load_suite(s, split="train", limit=a.limit)]:
        ids = e.encode(list(p.messages))
        ref = reference(e, store, p.id, ids, a.max_new_tokens)
        for name, make in variants(e.target, cost):
            recs = replay(make(ref, len(ids)), ids, ref, max_draft=max_draft, limit=a.max_new_tokens)
            spent = sum(r.draft_seconds + cost(r.draft_len) for r in recs)
            est[(p.dataset, name)].append((len(ref) - 1) * cost(0) / spent if spent else 1.0)
    print("| dataset | config | est. speedup (median) | prompts |\n|---|---|---|---|")
    for (ds, name), xs in sorted(est.items()):
        print(f"| {ds} | {name} | {statistics.median(xs):.2f}x | {len(xs)} |")


if __name__ == "__main__":
    main()
