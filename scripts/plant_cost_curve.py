"""Copy an hvd cache with its verify-cost curves given the shape of one measured while other
work shared the cores: every size below `--large` nodes x `--points`, `--large` nodes and more
x `--factor` and flat (one inflated point spread over the bigger sizes), and `--slope` seconds
per context token at every size. The curves keep their dates and load, as if measured quietly.

    python scripts/plant_cost_curve.py ~/.cache/hvd /tmp/hvd-planted   # then HVD_CACHE=/tmp/hvd-planted hvd bench ...

The defaults are the shape that hvd's benchmarks of a cache made during a test run found.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def plant(curve: dict, points: float, factor: float, large: int, slope: float) -> dict:
    sizes, seconds = curve["sizes"], curve["seconds"]
    flat_until = max([n for n in sizes if n <= 16] or [sizes[-1]])  # the fit spread one inflated point up to 16 nodes
    flat = factor * seconds[sizes.index(flat_until)]
    out = [s * points if n < large else max(flat, s * factor) for n, s in zip(sizes, seconds)]
    return {**curve, "seconds": out, "per_token": [max(slope, x) for x in curve.get("per_token") or [0.0] * len(sizes)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="an HVD_CACHE directory whose verify_cost/ holds measured curves")
    ap.add_argument("dest", type=Path, help="a new directory: the copy with planted curves")
    ap.add_argument("--points", type=float, default=2.3)
    ap.add_argument("--factor", type=float, default=4.5)
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--slope", type=float, default=164e-6)
    a = ap.parse_args(argv)
    curves = sorted((a.source / "verify_cost").glob("*.json"))
    if not curves:
        print(f"plant_cost_curve: no curves under {a.source / 'verify_cost'}", file=sys.stderr)
        return 2
    if a.dest.exists():
        print(f"plant_cost_curve: {a.dest} exists", file=sys.stderr)
        return 2
    shutil.copytree(a.source, a.dest, symlinks=True)
    for path in sorted((a.dest / "verify_cost").glob("*.json")):
        d = json.loads(path.read_text())
        if "curve" in d:
            d["curve"] = plant(d["curve"], a.points, a.factor, a.large, a.slope)
        else:
            d = plant(d, a.points, a.factor, a.large, a.slope)
        path.write_text(json.dumps(d) + "\n")
        print(f"planted {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
