"""Offline simulator: estimated speedups of hybrid configurations on TRAIN-split prompts.

Replays each drafter over recorded `ar` outputs (hvd/offline/replay.py: no target forwards) and
prices every step with this machine's verify-cost curve (hvd/targets/verify_cost.py):
estimated speedup = (tokens after the first x cost(0)) / sum over steps of (draft seconds +
cost(draft nodes)). Used to choose the hybrid's model arm and policy knobs without touching
evaluation prompts.

The `ceiling` rows are the best any per-step arm choice can do with a given set of drafts: an
oracle that reads the reference takes, each step, whichever of the cache draft (cut to
exactly what gets accepted), the model draft, both merged, or no draft has the best realised
rate. The richer ceilings add drafts no shipped method proposes: the model arm's MCTS trees
(`aded`) instead of its greedy chain, the cache draft uncapped by match length
(SuffixConfig.spec_factor = 0), and that cache draft continued by a greedy tri-gram chain
from its deepest token ("extension"). They bound what better drafts, not a better chooser,
could add.
Run: python scripts/simulate_hybrid.py [--limit N] [--suite S ...]
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from typing import Optional, Sequence

from hvd import Engine
from hvd.offline.references import ReferenceStore, reference
from hvd.offline.replay import replay
from hvd.data.suites import load_suite
from hvd import methods
from hvd.drafters.base import DecodeContext
from hvd.methods import MODEL_ARM
from hvd.drafters.suffix import SuffixConfig, SuffixDrafter
from hvd.targets import verify_cost as cost_curve
from hvd.cost.curve import VerifyCost
from hvd.machine import cache_dir
from hvd.types import Draft

SUITES = ("agentic-edit", "agentic-tools", "structured", "code", "chat")
UNCAPPED = SuffixConfig(spec_factor=0.0)


def extended(draft: Draft, extender, ctx: DecodeContext) -> Draft:
    """`draft` with the extender's chain hung under its deepest node, drafted as if that
    node's root path had been committed."""
    depths = draft.depths()
    last = max(range(len(draft)), key=depths.__getitem__)
    path, node = [], last
    while node >= 0:
        path.append(draft.tokens[node])
        node = draft.parents[node]
    chain = extender.propose(DecodeContext(ctx.tokens + path[::-1], ctx.prompt_len, ctx.max_draft - len(path)))
    extender.sizer.forget()  # its outcomes are not the root's: nothing to calibrate
    parents = tuple(last if p < 0 else p + len(draft) for p in chain.parents)
    return Draft(draft.tokens + chain.tokens, draft.parents + parents)


class CeilingHybrid:
    """The oracle arm chooser: sees the reference, so it is a bound, never a method."""

    name = "ceiling"

    def __init__(self, target, reference: Sequence[int], prompt_len: int, cost: VerifyCost, max_nodes: int,
                 cache: SuffixConfig = SuffixConfig(), model_arm: str = MODEL_ARM, extend: bool = False) -> None:
        self.cache, self.model = SuffixDrafter(cache), methods.get(model_arm).make(target)
        self.extender = methods.get("aded-greedy").make(target) if extend else None
        self.capabilities = self.model.capabilities
        self.reference, self.prompt_len, self.cost, self.max_nodes = list(reference), prompt_len, cost, max_nodes

    def _drafters(self):
        return [d for d in (self.cache, self.model, self.extender) if d is not None]

    def begin(self, prompt: Sequence[int]) -> None:
        for d in self._drafters():
            d.begin(prompt)

    def propose(self, ctx: DecodeContext) -> Draft:
        rest = self.reference[len(ctx.tokens) - self.prompt_len:]
        cdraft = self.cache.propose(ctx).truncate(ctx.max_draft)
        options = [Draft.empty(), self.model.propose(ctx).truncate(ctx.max_draft)]
        if len(cdraft):
            if self.extender is not None and cdraft.max_depth() < ctx.max_draft:
                cdraft = extended(cdraft, self.extender, ctx)
            cut = cdraft.truncate(max(1, len(cdraft.accepted_path(rest))))
            options += [cut, cut.union(options[1])]
        fits = [d for d in options if len(d) <= self.max_nodes]  # the target's cap on draft nodes
        return max(fits, key=lambda d: (len(d.accepted_path(rest)) + 1) / self.cost(len(d)))

    def observe(self, committed: Sequence[int]) -> None:
        for d in self._drafters():
            d.observe(committed)

    def end(self, output: Sequence[int]) -> None:
        for d in self._drafters():
            d.end(output)


def variants(target, cost, max_nodes: int):
    def ceiling(**arms):
        return lambda ref, n: CeilingHybrid(target, ref, n, cost, max_nodes, **arms)

    yield "suffix", lambda ref, n: methods.get("suffix").make(target)
    yield MODEL_ARM, lambda ref, n: methods.get(MODEL_ARM).make(target)
    yield "rule-hybrid", lambda ref, n: methods.get("rule-hybrid").make(target)
    yield "hvd", lambda ref, n: methods.get("hvd").make(target)
    yield "ceiling", ceiling()
    yield "ceiling, aded trees", ceiling(model_arm="aded")
    yield "ceiling, uncapped cache + extension", ceiling(cache=UNCAPPED, extend=True)
    yield "ceiling, all three", ceiling(cache=UNCAPPED, extend=True, model_arm="aded")


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--suite", action="append", choices=SUITES)
    a = ap.parse_args(argv)
    e = Engine.load()
    store = ReferenceStore.for_target(e.target)
    cost = cost_curve.cached(e.target, cache_dir())  # non-decreasing (hvd/targets/verify_cost.py)
    max_draft = e.target.max_draft_nodes
    est: dict[tuple[str, str], list[float]] = defaultdict(list)
    names = [name for name, _ in variants(e.target, cost, max_draft)]
    for p in [p for s in a.suite or SUITES for p in load_suite(s, split="train", limit=a.limit)]:
        ids = e.encode(list(p.messages))
        ref = reference(e, store, p.id, ids, a.max_new_tokens)
        for name, make in variants(e.target, cost, max_draft):
            recs = replay(make(ref, len(ids)), ids, ref, max_draft=max_draft, limit=a.max_new_tokens)
            spent = sum(r.draft_seconds + cost(r.draft_len) for r in recs)
            est[(p.dataset, name)].append((len(ref) - 1) * cost(0) / spent if spent else 1.0)
    print("estimated speedup over `ar`, median over prompts (x rule-hybrid in brackets)")
    print("| dataset | " + " | ".join(names) + " | prompts |\n|---|" + "---|" * (len(names) + 1))
    for ds in sorted({d for d, _ in est}):
        med = {n: statistics.median(est[(ds, n)]) for n in names}
        cells = [f"{med[n]:.2f}x ({med[n] / med['rule-hybrid']:.2f})" for n in names]
        print(f"| {ds} | " + " | ".join(cells) + f" | {len(est[(ds, names[0])])} |")


if __name__ == "__main__":
    main()
