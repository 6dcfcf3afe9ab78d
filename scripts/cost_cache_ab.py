"""Verify-cost caches compared in one process, interleaved: does a cache made under load cost the
methods that size drafts by its curves their speed?

One loaded target; the start-up curves of each cache are made first, then every prompt runs
every method with every cache's curves, in a shuffled order per prompt and repeat, so that each
ratio compares runs made minutes apart on the same machine state:

  clean    curves measured here, now, on the idle machine (a fresh cache);
  planted  the clean curves given the shape one measured during a burst had (every point 2.3x,
           4+ nodes 4.5x and flat, 164 µs per context token: scripts/plant_cost_curve.py), then
           read as a new process reads them: checked at start-up, re-measured if they fail;
  nocheck  the planted curves used as they are (HVD_COST_CHECK=0): the online correction alone;
  bursty   a cache whose first start ran under scripts/bursty_load.py (every core busy and idle
           in random 0.2-1.5 s stretches), read by a second start on the idle machine.

Methods that read no curve (`ar`, `suffix`, `pld`) run once per prompt and repeat; `hvd` and
its model arm `aded-greedy` once per cache, labelled `hvd@planted` etc., each cache with an
online calibration of its own that, as in `hvd bench` and a server, carries over between its
generations. Every run is checked token for token against `ar`.

    python scripts/cost_cache_ab.py --suite agentic-edit --suite agentic-tools --limit 12 \\
        --repeats 2 --json docs/results/cost-ab.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from plant_cost_curve import plant  # noqa: E402

from hvd.bench.command import load_prompts, machine  # noqa: E402
from hvd.bench.report import summarize, suite_label  # noqa: E402
from hvd.bench.runner import PromptRuns, run_once  # noqa: E402
from hvd.engine import Engine  # noqa: E402
from hvd.machine import cache_dir  # noqa: E402
from hvd.targets import verify_cost  # noqa: E402

VARIANTS = ("clean", "planted", "nocheck", "bursty")
PLAIN = ("ar", "suffix", "pld")  # read no curve
CURVED = ("aded-greedy", "hvd")  # size their drafts by the curves
ARMS = ("suffix", "pld", "aded-greedy")  # what `hvd` is compared with: its two arms, and `pld`
TREES = (False, True)  # chain and tree curves


def _both(target, folder: Path) -> dict[bool, verify_cost.VerifyCost]:
    """The chain and tree curves a new process would start with from `folder`."""
    verify_cost.forget()
    return {tree: verify_cost.cached(target, folder, tree) for tree in TREES}


def _plant_copy(src: Path, dst: Path) -> None:
    (dst / "verify_cost").mkdir(parents=True)
    for path in sorted((src / "verify_cost").glob("*.json")):
        d = json.loads(path.read_text())
        d["curve"] = plant(d["curve"], 2.3, 4.5, 4, 164e-6)
        (dst / "verify_cost" / path.name).write_text(json.dumps(d) + "\n")


def start_curves(target, root: Path, variants, burst_seconds: float) -> tuple[dict, dict]:
    """{variant: {tree: curve}} and {variant: how each start went}."""
    curves, notes = {}, {}
    curves["clean"] = _both(target, root / "clean")
    if "planted" in variants or "nocheck" in variants:
        _plant_copy(root / "clean", root / "planted")
        _plant_copy(root / "clean", root / "nocheck")
    if "planted" in variants:
        curves["planted"] = _both(target, root / "planted")
    if "nocheck" in variants:
        os.environ["HVD_COST_CHECK"] = "0"
        try:
            curves["nocheck"] = _both(target, root / "nocheck")
        finally:
            del os.environ["HVD_COST_CHECK"]
    if "bursty" in variants:
        load = subprocess.Popen([sys.executable, str(HERE / "bursty_load.py"), "--seconds", str(burst_seconds)])
        try:
            time.sleep(1.0)
            first = _both(target, root / "bursty")
        finally:
            load.terminate()
            load.wait()
        notes["bursty first start (under load)"] = {str(t): c.info.to_dict() for t, c in first.items()}
        time.sleep(2.0)
        curves["bursty"] = _both(target, root / "bursty")
    for v, cs in curves.items():
        notes[v] = {("tree" if t else "chain"): c.info.to_dict() for t, c in cs.items()}
    verify_cost.forget()
    return {v: curves[v] for v in variants if v in curves}, notes


def labels(variants) -> list[tuple[str, str, str]]:
    """(label, method, variant or "") for every run of a prompt and repeat."""
    out = [(m, m, "") for m in PLAIN]
    out += [(f"{m}@{v}", m, v) for v in variants for m in CURVED]
    return out


def run_all(engine, prompts, variants, curves, repeats: int, seed: int, tick) -> list[PromptRuns]:
    rng = random.Random(seed)
    home = cache_dir()
    runs = labels(variants)
    learnt: dict[str, dict] = {v: {} for v in variants}  # each cache's own online calibration, across the run

    def one(label, method, variant, ids, n, reference):
        if not variant:
            return run_once(engine, method, ids, n, reference)
        for tree, curve in curves[variant].items():
            verify_cost.use(engine.target, home, curve, tree)
        stores = engine.stores.fresh()
        stores.calibration = learnt[variant]  # the same dict every time: the hybrid's state persists in it
        return run_once(engine, method, ids, n, reference, stores=stores)

    if prompts:  # warm-up, excluded
        ids = engine.encode(list(prompts[0].messages))
        for label, method, variant in runs:
            one(label, method, variant, ids, 32, [])
    results = []
    for p in prompts:
        ids = engine.encode(list(p.messages))
        n = p.max_new_tokens
        pr = PromptRuns(p.id, p.dataset, [], {label: [] for label, _, _ in runs})
        for r in range(repeats):
            order = runs[1:]
            rng.shuffle(order)
            if r == 0:
                order = [runs[0], *order]  # `ar` first: the reference
            else:
                order.insert(rng.randrange(len(order) + 1), runs[0])
            for label, method, variant in order:
                run = one(label, method, variant, ids, n, pr.reference)
                if label == "ar" and r == 0:
                    pr.reference = run.token_ids
                pr.runs[label].append(run)
                tick()
        results.append(pr)
    return results


def verdicts(rows, variants) -> list[dict]:
    """Per suite and cache: each method's median speedup, `hvd` over its best arm and over its
    own clean-cache speedup (the median of the per-prompt ratios too)."""
    by = {(r.dataset, r.method): r for r in rows}
    out = []
    for ds in sorted({r.dataset for r in rows}):
        clean = by.get((ds, "hvd@clean"))
        for v in variants:
            get = lambda m: by.get((ds, m if m in PLAIN else f"{m}@{v}"))
            hvd = get("hvd")
            if hvd is None:
                continue
            arms = {m: get(m).speedup for m in ARMS if get(m) is not None}
            best = max(arms, key=arms.get)
            paired = [a / b for a, b in zip(hvd.prompt_speedups, clean.prompt_speedups)] if clean else []
            out.append({"suite": ds, "cache": v, "hvd": hvd.speedup, "hvd_geomean": hvd.speedup_geomean,
                        "arms": arms, "best_arm": best, "hvd_over_best": hvd.speedup / arms[best],
                        "hvd_over_clean": hvd.speedup / clean.speedup if clean else None,
                        "hvd_over_clean_paired": statistics.median(paired) if paired else None,
                        "suffix": get("suffix").speedup, "exact": all(get(m).exact for m in (*PLAIN[1:], *CURVED)
                                                                     if get(m) is not None),
                        "hvd_arm_share": hvd.arm_share, "prompts": hvd.n_prompts})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", action="append", required=True)
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--burst-seconds", type=float, default=90.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    variants = tuple(v for v in a.variants.split(",") if v)
    if not set(variants) <= set(VARIANTS) or "clean" not in variants:
        print(f"cost_cache_ab: --variants must include clean and be among {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    prompts, groups = load_prompts(a.suite, None, a.limit)
    engine = Engine.load()
    root = Path(tempfile.mkdtemp(prefix="hvd-cost-ab-"))
    t0 = time.time()
    curves, notes = start_curves(engine.target, root, variants, a.burst_seconds)
    print(f"curves ready in {time.time() - t0:.0f} s: " + json.dumps(
        {v: {k: (i["status"], i.get("why", "")) for k, i in n.items()} for v, n in notes.items() if v in curves}),
        flush=True)
    total = len(prompts) * a.repeats * len(labels(variants))
    done = [0]

    def tick():
        done[0] += 1
        if done[0] % 25 == 0 or done[0] == total:
            print(f"{done[0]}/{total} runs, {time.time() - t0:.0f} s", flush=True)

    results = run_all(engine, prompts, variants, curves, a.repeats, a.seed, tick)
    rows = summarize(results, groups)
    keep = {suite_label(s) for s in set(groups.values())} | {ds for ds, s in groups.items()
                                                           if list(groups.values()).count(s) == 1}
    rows = [r for r in rows if r.dataset in keep]
    table = verdicts(rows, variants)
    print("| suite | cache | hvd | suffix | best arm | hvd ÷ best | hvd ÷ hvd@clean (paired) | exact |")
    print("|---|---|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['suite']} | {t['cache']} | {t['hvd']:.2f}x | {t['suffix']:.2f}x | {t['best_arm']} "
              f"{t['arms'][t['best_arm']]:.2f}x | {t['hvd_over_best']:.3f} | {t['hvd_over_clean']:.3f} "
              f"({t['hvd_over_clean_paired']:.3f}) | {t['exact']} |")
    if a.json:
        a.json.write_text(json.dumps({
            "command": "python scripts/cost_cache_ab.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:])),
            "date": datetime.date.today().isoformat(), "machine": machine(engine.target), "curves": notes,
            "verdicts": table, "results": [r.to_dict() for r in rows]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
