"""Modelled decode speed of methods from replays: each step costs its measured drafting time
plus this machine's verify-cost curve at its draft size and context length
(hvd/targets/verify_cost.py), `ar` one 0-node verify per token. No timing noise, so policies can be compared in minutes; the
hybrids run with clock="model" (their online state charges the curve, not the wall clock).
A method's calibration is shared across its prompts, as in `hvd bench`.

    python scripts/policy_sim.py MODEL SUITES LIMIT METHODS [-v] [--dtype=int8]
    python scripts/policy_sim.py default agentic-edit,code 6 suffix,aded-greedy,rule-hybrid,hvd

MODEL: a packaged name or path, or `default`. Prints per suite each method's median modelled
speedup over `ar` and its τ.
"""
import collections
from dataclasses import fields, replace
import statistics
import sys

from hvd.offline.references import ReferenceStore, reference
from hvd.offline.replay import replay
from hvd.bench.replay_runner import replay_drafter
from hvd.data.suites import load_suite
from hvd.hybrid.drafter import HybridDrafter
from hvd.drafters.stores import SharedStores
from hvd.hybrid.calibration import OnlineConfig, OnlineState
from hvd.hybrid.policy import PolicyConfig
from hvd.engine import Engine
from hvd.targets.verify_cost import cached
from hvd.machine import cache_dir


def modelled(records, cost) -> float:
    """Seconds the steps would take: drafting as timed plus the curve's verify cost at the
    step's context length."""
    return sum(r.draft_seconds + cost(r.draft_len, r.prompt_len + r.position) for r in records)


def parse(kind: type, value: str):
    return value.lower() in ("1", "true") if kind is bool else kind(value)


def settings(method: str, cls: type) -> dict:
    """The `cls` fields a variant `hvd@warmup=0;allow_both=0` sets (OnlineConfig or PolicyConfig),
    each read as its annotated type (`Optional[bool]` as bool)."""
    if "@" not in method:
        return {}
    kinds = {f.name: next((t for t in (bool, int, float, str) if t.__name__ in str(f.type)), str) for f in fields(cls)}
    pairs = (x.split("=") for x in method.split("@")[1].split(";"))
    return {k: parse(kinds[k], v) for k, v in pairs if k in kinds}


def variant(stores: SharedStores, method: str, cost) -> SharedStores:
    """`hvd@warmup=0;allow_both=0`: hvd with those OnlineConfig (and PolicyConfig) fields, its own calibration."""
    if "@" not in method:
        return stores.own_calibration()
    return stores.own_calibration({method.split("@")[0]: OnlineState(OnlineConfig(**settings(method, OnlineConfig)), cost)})


def main() -> None:
    model, suites, limit = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    methods = sys.argv[4].split(",")
    dtype = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--dtype=")), "int8")
    e = Engine.load(None if model == "default" else model, dtype=dtype, threads=1)
    cost = cached(e.target, cache_dir())
    store = ReferenceStore.for_target(e.target)
    stores = {m: variant(e.stores, m, cost) for m in methods}  # one calibration per method, across suites
    for suite in suites:
        ps = load_suite(suite, limit=limit, max_new_tokens=200)
        speed = {m: [] for m in methods}
        tau = {m: [] for m in methods}
        for p in ps:
            ids = e.encode(list(p.messages))
            ref = reference(e, store, p.id, ids, 200)
            limit_ = e.token_limit(len(ids), 200)
            base = sum(cost(0, len(ids) + i) for i in range(1, len(ref)))  # the first token comes from prefill
            for m in methods:
                d = replay_drafter(e, m.split("@")[0], [], stores[m])
                if isinstance(d, HybridDrafter):
                    d.policy = replace(d.policy, **settings(m, PolicyConfig))
                recs = replay(d, ids, ref, limit=limit_)
                speed[m].append(base / max(modelled(recs, cost), 1e-9))
                tau[m].append(sum(r.committed for r in recs) / max(len(recs), 1))
                if "-v" in sys.argv and isinstance(d, HybridDrafter):
                    shares = collections.Counter(r.source for r in recs)
                    snap = d.online_state()
                    modes = snap.modes if snap is not None else None
                    print(f"    {p.id} {m}: " + " ".join(f"{k} {v}" for k, v in shares.most_common())
                          + (f" | modes {modes.steps} best {modes.best} {modes.tokens_per_second}" if modes else ""))
        if "-v" in sys.argv:
            for i, p in enumerate(ps):
                print(f"  {p.id}: " + "  ".join(f"{m} {speed[m][i]:.2f}x/τ{tau[m][i]:.2f}" for m in methods))
        print(f"{suite} ({len(ps)}): " + "  ".join(
            f"{m} {statistics.median(speed[m]):.2f}x/τ{statistics.median(tau[m]):.2f}" for m in methods), flush=True)


if __name__ == "__main__":
    main()
