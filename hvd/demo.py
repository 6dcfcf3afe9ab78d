"""`hvd demo` (what `make run` shows): a whole-file edit, the workload hvd is built for, decoded
with `ar` and with the default method side by side: the edit, the speedup, τ, the steps per
arm, and whether the two outputs are identical (they always are) and the edit is right.

The file is a service's JSON configuration and the request changes one value; the reply is
the whole file again, which is what an agent's edit tool asks of a model. The default model
(SmolLM2-135M-Instruct, a very small model) makes this edit correctly; the demo checks it."""
from __future__ import annotations

import json
from collections import Counter

from rich.console import Console
from rich.table import Table

from hvd.engine import Engine, Result

CONFIG = {
    "name": "inventory-service",
    "version": "1.4.2",
    "server": {"host": "0.0.0.0", "port": 8000, "workers": 4},
    "database": {"url": "postgresql://inventory@db:5432/inventory", "pool_size": 10},
    "log_level": "info",
}
CHANGE = 'Set "port" to 9000. Output the complete JSON.'
STOP = ("\n```",)  # the end of the code block that holds the file


def request() -> str:
    """The demo's request: the file in a code block, then the change asked for."""
    return f"```json\n{json.dumps(CONFIG, indent=2)}\n```\n\n{CHANGE}"


def expected() -> dict:
    """The file as the request asks for it."""
    want = json.loads(json.dumps(CONFIG))
    want["server"]["port"] = 9000
    return want


def edited(result: Result) -> dict | None:
    """The file in a reply (None: not a JSON document)."""
    text = result.text.strip().removeprefix("```json").removeprefix("```").strip()
    try:
        return json.loads(text)
    except ValueError:
        return None


def run_demo(engine: Engine, method: str, max_new_tokens: int) -> None:
    console = Console()
    prompt = [{"role": "user", "content": request()}]
    with console.status("warming up (a first run also builds the tri-gram datastore and times verification)"):
        for m in ("ar", method):  # another prompt: loads, caches and JIT compiles, not measured
            engine.generate("Say hello.", method=m, max_new_tokens=8)
    console.rule(f"a whole-file edit (greedy, at most {max_new_tokens} new tokens, {engine.target.precision} target)")
    console.print(f"a {len(json.dumps(CONFIG, indent=2).splitlines())}-line JSON configuration, then: {CHANGE}",
                  markup=False, highlight=False)
    results = {}
    for m in ("ar", method):
        with console.status(f"decoding with {m}"):
            results[m] = engine.generate(prompt, method=m, max_new_tokens=max_new_tokens, stop=STOP)
    spec, base = results[method], results["ar"]
    console.rule(f"the reply ({method})")
    console.print(spec.text + "\n```", markup=False, highlight=False)
    table = Table(title=f"ar vs {method}")
    for col in ("method", "tokens", "steps", "τ", "tok/s", "speedup", "identical to ar"):
        table.add_column(col, justify="right")
    for m, r in results.items():
        s = r.stats
        table.add_row(m, str(s.new_tokens), str(s.n_steps), f"{s.mean_accepted_length:.2f}", f"{s.tokens_per_second:.1f}",
                      f"{s.tokens_per_second / base.stats.tokens_per_second:.2f}x", str(r.token_ids == base.token_ids))
    console.print(table)
    console.print(f"the edit is right (the file parses, port 9000, nothing else changed): {edited(spec) == expected()}")
    arms = Counter(s.drafter for s in spec.stats.steps)
    if len(arms) > 1:  # a hybrid: what each step verified
        console.print(f"steps per arm ({method}): " + ", ".join(f"{k} {v}" for k, v in arms.most_common()))
    if spec.token_ids != base.token_ids:
        raise SystemExit("error: speculative output differs from ar")
