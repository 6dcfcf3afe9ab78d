"""`hvd bench`: suites × methods, interleaved, with a table, JSON and a plot."""
from __future__ import annotations

import json
import platform
import shlex
import sys
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hvd.bench import report
from hvd.bench.runner import BenchConfig, check_methods, run_bench


def machine() -> dict:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def load_prompts(suites: list[str], prompts_file, limit):
    from hvd.bench import suites as s

    prompts = []
    if prompts_file:
        prompts += s.load_prompts_file(prompts_file)[:limit]
    for name in suites:
        prompts += s.load_suite(name, split="eval", limit=limit)
    return prompts


def run(engine_loader, a) -> None:
    from hvd.bench import suites as s

    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    check_methods(methods)
    names = list(s.SUITES) if a.suite == ["all"] else a.suite or ([] if a.prompts else ["agentic-edit"])
    prompts = load_prompts(names, a.prompts, a.limit)
    if not prompts:
        raise ValueError("no prompts selected")
    engine = engine_loader(a.model)
    cfg = BenchConfig(methods, a.repeats, a.max_new_tokens)
    total = len(prompts) * a.repeats * len({"ar", *methods})
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, console=None) as bar:
        task = bar.add_task("benchmarking", total=total)
        results = run_bench(engine, prompts, cfg, tick=lambda: bar.advance(task))
    rows = report.summarize(results)
    print(report.markdown(rows))
    command = "hvd " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    if a.json:
        Path(a.json).write_text(json.dumps({"results": [r.to_dict() for r in rows], "machine": machine(),
                                            "command": command}, indent=1))
    if a.plot:
        report.plot(rows, a.plot)
