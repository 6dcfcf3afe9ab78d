"""`hvd bench`: suites × methods, interleaved, with a table, JSON and a plot; `--replay` measures
acceptance only, against recorded `ar` outputs (hvd/bench/replay_runner.py)."""
from __future__ import annotations

import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Optional

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hvd.bench import report
from hvd.bench.peers import PEERS, unavailable
from hvd.bench.runner import BenchConfig, check_methods, keys, known_methods, run_bench


def machine(target=None) -> dict:
    import os

    from hvd.machine import ISA_FLAGS, cpu_flags, cpu_name

    isa = [f for f in ISA_FLAGS if f in cpu_flags()]
    info = {"cpu": cpu_name(), "isa": " ".join(isa), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    if target is not None:
        info.update(target=type(target).__name__, dtype=target.precision)
        if target.build_id:
            info["kernels"] = target.build_id  # the compiled kernels and the instruction path they run
    return info


def load_prompts(suites: list[str], prompts_file, limit) -> tuple[list, dict[str, str]]:
    """The prompts, and the suite of each suite prompt's dataset (dataset -> suite)."""
    from hvd.data.prompts import load_prompts_file
    from hvd.data.suites import load_suite

    prompts, groups = [], {}
    if prompts_file:
        prompts += load_prompts_file(prompts_file)[:limit]
    for name in suites:
        ps = load_suite(name, split="eval", limit=limit)
        groups.update({p.dataset: name for p in ps})
        prompts += ps
    return prompts, groups


def gguf_of(model: Optional[str]) -> Optional[Path]:
    """The GGUF file behind --model (the default model's when None); None for a directory."""
    from hvd.errors import ModelError
    from hvd.targets.loader import default_model_path

    if model is None:
        try:
            return default_model_path()
        except ModelError:
            return None
    return Path(model) if str(model).endswith(".gguf") else None


TARGET_DRAFTERS = ("layerskip", "dflash", "dflash-uniform")  # methods that draft with the target itself or its hidden states


def runnable_methods(methods: tuple[str, ...], replay: bool, gguf: Optional[Path]) -> tuple[str, ...]:
    """`methods` less those that cannot run here (peers not installed; in a replay, peers and
    drafters that run the target), each skipped with a one-line note on stderr."""
    keep = []
    for m in methods:
        if replay and m in PEERS:
            why = "peers are not drafters and cannot be replayed"
        elif replay and m in TARGET_DRAFTERS:
            why = "it drafts from the target's own cache or hidden states, which a replay does not run"
        else:
            why = unavailable(m, gguf)
        if why:
            print(f"hvd bench: skipping {m}: {why}", file=sys.stderr)
        else:
            keep.append(m)
    return tuple(keep)


def run(engine_loader, a) -> None:
    from hvd.targets import verify_cost as cost_curves

    from hvd.data.suites import SUITES

    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    replay = bool(getattr(a, "replay", False))
    if methods == ("all",):  # in a replay, "all" means every method that can be replayed
        methods = tuple(m for m in known_methods() if not (replay and m in PEERS))
    check_methods(methods)
    names = list(SUITES) if a.suite == ["all"] else a.suite or ([] if a.prompts else ["agentic-edit"])
    prompts, groups = load_prompts(names, a.prompts, a.limit)
    if not prompts:
        raise ValueError("no prompts selected")
    gguf = gguf_of(a.model)
    methods = runnable_methods(methods, replay, gguf)
    engine = engine_loader(a.model)
    grammar = bool(getattr(a, "grammar", False))
    if grammar and (replay or any(m in PEERS for m in methods)):
        raise ValueError("--grammar runs hvd's own methods only (no peers, no --replay)")
    cfg = BenchConfig(methods, a.repeats, a.max_new_tokens, gguf, grammar)
    total = sum(len(keys(cfg, p)) for p in prompts) * (1 if replay else a.repeats)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, console=None) as bar:
        task = bar.add_task("replaying" if replay else "benchmarking", total=total)
        tick = lambda: bar.advance(task)
        rows = _replay_rows(engine, prompts, cfg, tick) if replay else report.summarize(run_bench(engine, prompts, cfg, tick), groups)
    assets = engine.stores.assets
    model = assets.key if assets is not None else type(engine.target).__name__
    print(f"model {model}, {engine.target.precision}; messages rendered with the {engine.template}")
    print(report.markdown(rows))
    command = "hvd " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    if a.json:
        Path(a.json).write_text(json.dumps({"results": [r.to_dict() for r in rows], "machine": machine(engine.target),
                                            "model": model, "template": engine.template,
                                            "command": command, "mode": "replay" if replay else "timed",
                                            "cost_curves": {k: i.to_dict() for k, i in cost_curves.known().items()}},
                                           indent=1))
    if a.plot:
        report.plot(rows, a.plot)


def _replay_rows(engine, prompts, cfg: BenchConfig, tick) -> list:
    from hvd.offline.references import ReferenceStore
    from hvd.bench.replay_runner import run_replay

    store = ReferenceStore.for_target(engine.target)
    return report.summarize_replay(run_replay(engine, prompts, cfg, store, tick))
