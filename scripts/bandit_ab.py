"""A/B of the mode bandit's warm-up, as hvd bench runs methods: a fresh drafter per prompt run
(no earlier responses), the method's calibration shared across its runs; interleaved per prompt.

    python scripts/bandit_ab.py MODEL SUITES LIMIT WARMUP/MIN_STEPS,...
    python scripts/bandit_ab.py default agentic-edit,agentic-tools 6 64/8,16/8,0/16

MODEL: a packaged name or path, or `default`. Prints each setting's median decode speedup over `ar`.
"""
import statistics
import sys

from hvd.engine import Engine
from hvd.bench.suites import load_suite
from hvd.drafters import registry
from hvd.drafters.stores import SharedStores
import hvd.drafters.hybrid as H
model, suites, limit = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
configs = [tuple(int(v) for v in c.split("/")) for c in sys.argv[4].split(",")]  # warmup/min_steps
e = Engine.load(None if model == "default" else model, dtype="int8", threads=1)
s0 = e.stores
cals = [{} for _ in configs]
orig = H.OnlineConfig
def make(i):
    w, m = configs[i]
    H.OnlineConfig = lambda: orig(warmup=w, min_steps=m)
    try:
        return registry.get("hvd").make(e.target, SharedStores(s0.max_response_tokens, s0.assets, s0.classes, cals[i]))
    finally:
        H.OnlineConfig = orig
names = [f"w{w}/m{m}" for w, m in configs]
for suite in suites:
    ps = load_suite(suite, limit=limit, max_new_tokens=200)
    e.generate(ps[0].chat(), method="ar", max_new_tokens=16)
    rows = {n: [] for n in ["ar"] + names}
    for p in ps:
        for n in rows:
            d = None if n == "ar" else make(names.index(n))
            r = e.generate(p.chat(), method="ar" if n == "ar" else "hvd", max_new_tokens=200, drafter=d)
            st = r.stats
            rows[n].append((st.new_tokens - 1) / max(st.wall_seconds - st.prefill_seconds, 1e-9))
    print(suite + ": " + "  ".join(f"{n} {statistics.median(a / b for a, b in zip(rows[n], rows['ar'])):.2f}x" for n in names)
          + f"  (ar {statistics.median(rows['ar']):.1f} tok/s)", flush=True)
