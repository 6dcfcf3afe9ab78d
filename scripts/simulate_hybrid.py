"""Offline simulator: estimated speedups of hybrid configurations on TRAIN-split prompts.

Replays each drafter over recorded `ar` outputs (hvd/bench/replay.py: no target forwards) and
prices every step with this machine's verify-cost curve (hvd/hybrid/cost.py):
estimated speedup = (tokens after the first x cost(0)) / sum over steps of (draft seconds +
cost(draft nodes)). Used to choose the hybrid's model arm and policy knobs without touching
evaluation prompts. Run: python scripts/simulate_hybrid.py [--limit N]
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from hvd import Engine
from hvd.bench.references import ReferenceStore, reference
from hvd.bench.replay import replay
from hvd.bench.suites import load_suite
from hvd.drafters import registry
from hvd.drafters.hybrid import build
from hvd.hybrid import cost as cost_curve
from hvd.hybrid.policy import PolicyConfig
from hvd.models import cache_dir

SUITES = ("agentic-edit", "agentic-tools", "structured", "code", "chat")


def variants(target, cost):
    yield "suffix", lambda: registry.get("suffix").make(target)
    for arm in ("aded", "aded-greedy", "pld"):
        for none in (True, False):
            def make(arm=arm, none=none):
                h = build(target, "hvd", PolicyConfig(rule="cost", allow_none=none), model_arm=arm)
                h.cost = cost
                return h
            yield f"hvd arm={arm} none={none}", make


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    a = ap.parse_args()
    e = Engine.load()
    store = ReferenceStore.for_model(e.target.model)
    cost = cost_curve.cached(e.target, cache_dir())  # non-decreasing (hvd/hybrid/cost.py)
    est: dict[tuple[str, str], list[float]] = defaultdict(list)
    for p in [p for s in SUITES for p in load_suite(s, split="train", limit=a.limit)]:
        ids = e.encode(list(p.messages))
        ref = reference(e, store, p.id, ids, a.max_new_tokens)
        for name, make in variants(e.target, cost):
            recs = replay(make(), ids, ref, limit=a.max_new_tokens)
            spent = sum(r.draft_seconds + cost(r.draft_len) for r in recs)
            est[(p.dataset, name)].append((len(ref) - 1) * cost(0) / spent if spent else 1.0)
    print("| dataset | config | est. speedup (median) | prompts |\n|---|---|---|---|")
    for (ds, name), xs in sorted(est.items()):
        print(f"| {ds} | {name} | {statistics.median(xs):.2f}x | {len(xs)} |")


if __name__ == "__main__":
    main()
