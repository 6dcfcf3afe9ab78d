"""A/B of the mode bandit's warm-up, as hvd bench runs methods: a fresh drafter per prompt run
(no earlier responses), the method's calibration shared across its runs; interleaved per prompt.

    python scripts/bandit_ab.py MODEL SUITES LIMIT WARMUP/MIN_STEPS,...
    python scripts/bandit_ab.py default agentic-edit,agentic-tools 6 64/8,16/8,0/16

MODEL: a packaged name or path, or `default`. Prints each setting's median decode speedup over `ar`.
"""
import statistics
import sys

from hvd.data.suites import load_suite
from hvd import methods
from hvd.engine import Engine
from hvd.hybrid.calibration import OnlineConfig, OnlineState
from hvd.targets.verify_cost import cached
from hvd.machine import cache_dir


def main() -> None:
    model, suites, limit = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    configs = [tuple(int(v) for v in c.split("/")) for c in sys.argv[4].split(",")]  # warmup/min_steps
    e = Engine.load(None if model == "default" else model, dtype="int8", threads=1)
    curve = cached(e.target, cache_dir())
    # one calibration per setting, seeded under the method's name (the hybrid takes what it finds there)
    cals = {f"w{w}/m{m}": {"hvd": OnlineState(OnlineConfig(warmup=w, min_steps=m), curve)} for w, m in configs}
    s = e.stores
    for suite in suites:
        ps = load_suite(suite, limit=limit, max_new_tokens=200)
        e.generate(ps[0].chat(), method="ar", max_new_tokens=16)
        rates = {n: [] for n in ["ar", *cals]}
        for p in ps:
            for n in rates:
                d = None if n == "ar" else methods.get("hvd").make(e.target, s.own_calibration(cals[n]))
                r = e.generate(p.chat(), method="ar" if n == "ar" else "hvd", max_new_tokens=200, drafter=d)
                rates[n].append(r.stats.tokens_per_second)
        print(suite + ": " + "  ".join(f"{n} {statistics.median(a / b for a, b in zip(rates[n], rates['ar'])):.2f}x"
                                       for n in cals) + f"  (ar {statistics.median(rates['ar']):.1f} tok/s)", flush=True)


if __name__ == "__main__":
    main()
