"""Held-out τ of DFlash drafters trained with different losses (issue 5's ablation).

Each checkpoint drafts full blocks (no cost-aware cut, so τ measures the drafter, not the
sizing) for the same eval-split prompts of each suite, through the real engine; greedy, so
every output is `ar`'s and only the acceptance differs. τ = new tokens after the first ÷
verify forwards, pooled over a suite's prompts.

    python scripts/dflash_ablation.py --checkpoint uniform=hvd/checkpoints/dflash-uniform \\
        --checkpoint full=hvd/checkpoints/dflash --limit 3 --max-new-tokens 64 --json out.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hvd.data.suites import load_suite
from hvd.drafters import dflash
from hvd.engine import Engine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, help="name=directory (repeatable)")
    p.add_argument("--suite", action="append", default=None, help="default: code, chat, agentic-edit, agentic-tools")
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    checkpoints = dict(c.split("=", 1) for c in a.checkpoint)
    engine = Engine.load(dtype=a.dtype)
    rows = []
    for suite in a.suite or ["code", "chat", "agentic-edit", "agentic-tools"]:
        prompts = load_suite(suite, split="eval", limit=a.limit)
        for name, path in checkpoints.items():
            accepted = steps = 0
            for prompt in prompts:
                drafter = dflash.for_target(engine.target, Path(path), name, size_by_cost=False)
                res = engine.generate(engine.encode(prompt.chat()), max_new_tokens=a.max_new_tokens, drafter=drafter)
                accepted += sum(s.accepted for s in res.stats.steps)
                steps += len(res.stats.steps)
            rows.append({"suite": suite, "drafter": name, "tau": 1 + accepted / max(steps, 1), "steps": steps,
                         "prompts": len(prompts)})
            print(f"{suite:14s} {name:10s} τ {rows[-1]['tau']:.3f}  ({steps} steps)", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"max_new_tokens": a.max_new_tokens, "limit": a.limit, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
