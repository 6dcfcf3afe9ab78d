"""`hvd demo` (what `make run` shows): one coding request, decoded with `ar` and a speculative
method: the request, the answer, the speedup and the accepted lengths.

The request is one the default model (SmolLM2-135M-Instruct, a very small model) answers
correctly; whole-file edit requests, the workload hvd is built for, are beyond it (it rewrites
or drops code), so they are measured in `hvd bench` rather than shown here."""
from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from hvd.engine import Engine


DEMO_REQUEST = ("Write the Python code for a function `add(a, b)` that returns a + b, then a function `sub(a, b)`, "
                "`mul(a, b)` and `div(a, b)` in the same style. Only the code.")
DEMO_STOP = ("\n```\n",)  # the end of the code block: the request asked for the code only


def demo_prompt() -> str:
    return DEMO_REQUEST


def run_demo(engine: Engine, method: str, max_new_tokens: int) -> None:
    console = Console()
    prompt = demo_prompt()
    with console.status("warming up (a first run also builds the tri-gram datastore and times verification)"):
        for m in ("ar", method):  # another prompt: loads, caches and JIT compiles, not measured
            engine.generate("Say hello.", method=m, max_new_tokens=8)
    console.rule(f"request (greedy, at most {max_new_tokens} new tokens, {engine.target.precision} target)")
    console.print(prompt, markup=False, highlight=False)
    results = {}
    for m in ("ar", method):
        with console.status(f"decoding with {m}"):
            results[m] = engine.generate(prompt, method=m, max_new_tokens=max_new_tokens, stop=DEMO_STOP)
    spec, base = results[method], results["ar"]
    console.rule(f"answer ({method})")
    console.print(spec.text + "\n```", markup=False, highlight=False)
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
