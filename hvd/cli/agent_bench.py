"""`hvd agent-bench`: multi-turn agent episodes through hvd servers (and llama-server)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from hvd import methods
from hvd.cli.args import CliError, add_model_args, non_negative_int, positive_int


def add_parser(sub) -> None:
    ab = sub.add_parser("agent-bench", help="multi-turn agent episodes through hvd servers (and llama-server), "
                                           "with the openai client")
    ab.add_argument("--methods", default="ar,hvd", help="comma-separated methods, each on its own server "
                                                         "(cold and warm shared store) (default ar,hvd)")
    ab.add_argument("--kinds", default="tools,edit", help="episode kinds: tools (BFCL multi-turn on its "
                                                           "backends), edit (two successive file edits)")
    ab.add_argument("--episodes", type=positive_int, default=3, help="eval episodes per kind (default 3)")
    ab.add_argument("--warm-episodes", type=non_negative_int, default=2, help="train episodes per kind played first on "
                                                                 "the warm servers (default 2)")
    ab.add_argument("--max-tokens", type=positive_int, default=200, help="max_tokens of every request (default 200)")
    ab.add_argument("--llama-server", default=None, help="a llama-server binary (scripts/build_llama_server.sh): "
                                                        "run it plain and with --spec-type ngram-mod / ngram-cache")
    ab.add_argument("--gguf", default=None, help="the GGUF file llama-server loads (default: the model's)")
    ab.add_argument("--json", default=None, help="write every request's timings here")
    add_model_args(ab)


def run(a: argparse.Namespace) -> None:
    from hvd.bench import agent
    from hvd.machine import resolve_threads

    chosen = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    for m in chosen:
        methods.get(m)
    kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    if not kinds or any(k not in ("tools", "edit") for k in kinds):
        raise CliError(f"--kinds takes tools and/or edit, got {a.kinds!r}")
    if a.llama_server and not os.access(a.llama_server, os.X_OK):
        raise CliError(f"--llama-server: not an executable file: {a.llama_server}")
    cfg = agent.AgentBenchConfig(chosen if "ar" in chosen else ("ar", *chosen), kinds, a.episodes,
                                 a.warm_episodes, a.max_tokens, threads=resolve_threads(a.threads), model=a.model,
                                 dtype=a.dtype, llama_server=a.llama_server, gguf=a.gguf)
    try:
        report = agent.run(cfg, Path(tempfile.mkdtemp(prefix="hvd-agent-bench-")),
                           say=lambda m: print(m, file=sys.stderr, flush=True))
    except RuntimeError as e:
        raise CliError(str(e))
    report["machine"] = agent.machine()
    report["summary"] = agent.summarize(report)
    print(agent.table(report["summary"]))
    if a.json:
        agent.save(report, Path(a.json))
