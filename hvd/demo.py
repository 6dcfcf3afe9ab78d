"""`hvd demo` (what `make run` shows): one agentic whole-file edit, decoded with `ar` and a
speculative method, with the text, the speedup and the accepted lengths."""
from __future__ import annotations

import inspect
from collections import Counter

from rich.console import Console
from rich.table import Table

from hvd.engine import Engine


def demo_prompt() -> str:
    import bisect  # a short, real standard-library module

    source = inspect.getsource(bisect)
    return ("Add a short comment above each function in this file. Return the complete updated file.\n\n"
            f"```python\n{source}```")


def run_demo(engine: Engine, method: str, max_new_tokens: int) -> None:
    console = Console()
    prompt = demo_prompt()
    with console.status("warming up (a first run also builds the tri-gram datastore and times verification)"):
        for m in ("ar", method):  # another prompt: loads, caches and JIT compiles, not measured
            engine.generate("Say hello.", method=m, max_new_tokens=8)
    console.rule(f"agentic edit of bisect.py, {max_new_tokens} new tokens, greedy")
    results = {}
    for m in ("ar", method):
        with console.status(f"decoding with {m}"):
            results[m] = engine.generate(prompt, method=m, max_new_tokens=max_new_tokens)
    spec, base = results[method], results["ar"]
    console.print(spec.text, markup=False, highlight=False)
    table = Table(title="ar vs " + method)
    for col in ("method", "tokens", "steps", "τ", "tok/s", "speedup", "identical to ar"):
        table.add_column(col, justify="right")
    for m, r in results.items():
        s = r.stats
        table.add_row(m, str(s.new_tokens), str(s.n_steps), f"{s.mean_accepted_length:.2f}", f"{s.tokens_per_second:.1f}",
                      f"{s.tokens_per_second / base.stats.tokens_per_second:.2f}x", str(r.token_ids == base.token_ids))
    console.print(table)
    hist = Counter(s.accepted for s in spec.stats.steps)
    console.print(f"accepted draft tokens per step ({method}): "
                  + ", ".join(f"{k}: {hist[k]}" for k in sorted(hist)))
    arms = Counter(s.drafter for s in spec.stats.steps)
    if len(arms) > 1:  # a hybrid: what each step verified
        console.print(f"steps per arm ({method}): " + ", ".join(f"{k} {v}" for k, v in arms.most_common()))
    if spec.token_ids != base.token_ids:
        raise SystemExit("error: speculative output differs from ar")
