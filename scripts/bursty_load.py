"""Bursts of other work on every core, for benchmarks of hvd on a machine that is not quiet:
one process per core alternates busy (a spin loop) and idle stretches of random lengths within
[--min, --max] seconds, and all stop after --seconds (bounded: nothing outlives it).

    python scripts/bursty_load.py --seconds 120 &   # then start hvd while it runs
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import time


def _worker(seed: int, until: float, lo: float, hi: float) -> None:
    rng = random.Random(seed)
    busy = rng.random() < 0.5
    while time.monotonic() < until:
        end = min(time.monotonic() + rng.uniform(lo, hi), until)
        if busy:
            x = 0
            while time.monotonic() < end:
                x += 1
        else:
            time.sleep(max(end - time.monotonic(), 0.0))
        busy = not busy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the load runs in all")
    ap.add_argument("--min", type=float, default=0.2, help="shortest busy or idle stretch, seconds")
    ap.add_argument("--max", type=float, default=1.5, help="longest busy or idle stretch, seconds")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not (0 < a.min <= a.max) or a.seconds <= 0 or a.cores <= 0 or a.seconds > 3600:
        print("bursty_load: need 0 < --min <= --max, 0 < --seconds <= 3600, --cores > 0", file=sys.stderr)
        return 2
    until = time.monotonic() + a.seconds
    procs = [mp.Process(target=_worker, args=(a.seed * 1000 + i, until, a.min, a.max), daemon=True)
             for i in range(a.cores)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(a.seconds + 5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
