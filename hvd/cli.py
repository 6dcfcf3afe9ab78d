"""The `hvd` command line: generate, chat, demo, serve, bench, trace, train, datastore."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from hvd.drafters import registry
from hvd.engine import DTYPES


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        raise CliError(message)


def _methods_help() -> str:
    return "methods:\n" + "\n".join(f"  {m.name:<10} {m.help}" for m in registry.METHODS.values())


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="a packaged model (smollm2-135m, gemma3-270m), a local HF model directory or a .gguf file (default: smollm2-135m, SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="int8: the exact target (int8 weights and activations, batch-invariant by construction; "
                        "Llama-family models, AVX2 CPUs); bfloat16: the lean Llama target, exact where this CPU's "
                        "bf16 kernels are (checked at load); float32: the model through transformers; auto (default): "
                        "the first of int8, bfloat16 (CPUs with bf16 units), float32 that passes here")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: $OMP_NUM_THREADS when set, else every core)")


def _add_decoding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default=None,
                   help=f"decoding method (default {registry.DEFAULT_METHOD}; {registry.FALLBACK_METHOD} for a model it "
                        "cannot run on): " + ", ".join(registry.METHODS))
    add_model_args(p)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    _add_aded_args(p)


def _add_aded_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("aded options (with --method aded, aded-noadapt or aded-greedy)")
    g.add_argument("--aded-iterations", type=int, help="MCTS iterations per step (default 150)")
    g.add_argument("--aded-paths", type=int, help="most-visited root paths kept (default 24)")
    g.add_argument("--aded-max-nodes", type=int, help="draft tree size limit (default 64)")
    g.add_argument("--aded-time-budget-ms", type=float, help="stop each search after this long (default: no limit)")
    g.add_argument("--aded-no-adapt", action="store_true", help="no online tri-gram adaptation")
    g.add_argument("--aded-greedy", action="store_true", help="one greedy tri-gram chain instead of MCTS")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hvd", description="Lossless speculative decoding.", epilog=_methods_help(),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    g = sub.add_parser("generate", help="generate a completion for one prompt")
    g.add_argument("prompt", nargs="?", help="sent as one user message")
    g.add_argument("--messages", type=Path, help='JSON file: a list of {"role", "content"} objects')
    g.add_argument("--json", action="store_true", help="print one JSON object with text, token_ids and stats")
    _add_decoding_args(g)
    c = sub.add_parser("chat", help="interactive chat, streaming tokens as they are accepted")
    _add_decoding_args(c)
    d = sub.add_parser("demo", help="one coding request decoded with ar and the default method")
    add_model_args(d)
    d.add_argument("--max-new-tokens", type=int, default=200)
    sv = sub.add_parser("serve", help="an OpenAI-compatible server (chat and completions, streaming, metrics)")
    add_model_args(sv)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--method", default=None, help=f"default method of requests (default {registry.DEFAULT_METHOD})")
    sv.add_argument("--max-queue", type=int, default=64, help="requests waiting at most; more get 429 (default 64)")
    sv.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/ endpoints")
    sv.add_argument("--model-name", default=None, help="the model id clients send (default: the model's name)")
    sv.add_argument("--no-prefix-cache", action="store_true",
                    help="prefill every prompt whole (default: a request sharing a prefix with the previous one, "
                         "an agent's next turn, prefills only its new tokens)")
    b = sub.add_parser("bench", help="benchmark methods and peers on real workloads")
    b.add_argument("--suite", action="append", help="suite name (repeatable) or 'all' (default agentic-edit)")
    b.add_argument("--prompts", type=Path, help="custom JSONL prompts file")
    b.add_argument("--methods", default="all",
                   help="comma-separated methods and peers, or 'all' (default): every registered method, oracle, "
                        "hf, hf-pld, llamacpp, llamacpp-pld (peers that cannot run here are skipped with a note)")
    b.add_argument("--limit", type=int, default=None, help="prompts per suite")
    b.add_argument("--max-new-tokens", type=int, default=None, help="override each prompt's own")
    b.add_argument("--repeats", type=int, default=1)
    b.add_argument("--json", help="write results JSON here")
    b.add_argument("--plot", help="write a PNG bar chart here")
    add_model_args(b)
    b.add_argument("--replay", action="store_true",
                   help="acceptance only: replay drafters against recorded ar outputs (cached), without timing the target")
    _add_agent_bench_command(sub)
    _add_prepare_command(sub)
    _add_hybrid_commands(sub)
    _add_datastore_command(sub)
    return parser


def _add_agent_bench_command(sub) -> None:
    ab = sub.add_parser("agent-bench", help="multi-turn agent episodes through hvd servers (and llama-server), "
                                           "with the openai client")
    ab.add_argument("--methods", default="ar,hvd", help="comma-separated methods, each on its own server "
                                                         "(cold and warm shared store) (default ar,hvd)")
    ab.add_argument("--kinds", default="tools,edit", help="episode kinds: tools (BFCL multi-turn on its "
                                                           "backends), edit (two successive file edits)")
    ab.add_argument("--episodes", type=int, default=3, help="eval episodes per kind (default 3)")
    ab.add_argument("--warm-episodes", type=int, default=2, help="train episodes per kind played first on "
                                                                 "the warm servers (default 2)")
    ab.add_argument("--max-tokens", type=int, default=200, help="max_tokens of every request (default 200)")
    ab.add_argument("--llama-server", default=None, help="a llama-server binary (scripts/build_llama_server.sh): "
                                                        "run it plain and with --spec-type ngram-mod / ngram-cache")
    ab.add_argument("--gguf", default=None, help="the GGUF file llama-server loads (default: the model's)")
    ab.add_argument("--json", default=None, help="write every request's timings here")
    add_model_args(ab)


def _add_prepare_command(sub) -> None:
    from hvd.prepare import PrepareConfig

    d = PrepareConfig()
    p = sub.add_parser("prepare", help="build what every method needs for a model (datastore, cost curves, "
                                       "traces, predictor), cached by the model's identity; resumable")
    add_model_args(p)
    p.add_argument("--check", action="store_true", help="only say what is ready and what is missing")
    p.add_argument("--force", action="store_true", help="redo every step")
    p.add_argument("--trace-limit", type=int, default=d.trace_limit, help=f"train prompts per suite traced "
                                                                          f"(default {d.trace_limit})")
    p.add_argument("--trace-tokens", type=int, default=d.trace_tokens, help=f"new tokens per traced prompt "
                                                                            f"(default {d.trace_tokens})")
    p.add_argument("--corpus-chars", type=int, default=None, help="characters per datastore corpus source "
                                                                 "(default 8,000,000)")
    p.add_argument("--drafter", action="store_true", help="also train a DFlash drafter for `dflash` (slow on a CPU: "
                                                           "hours for 3000 steps; resumable)")
    p.add_argument("--drafter-steps", type=int, default=d.drafter_steps, help=f"its optimizer steps (default "
                                                                              f"{d.drafter_steps})")
    p.add_argument("--drafter-texts", type=int, default=d.drafter_texts, help=f"train prompts per suite and library "
                                                                              f"files it learns from (default {d.drafter_texts})")


def _add_datastore_command(sub) -> None:
    ds = sub.add_parser("datastore", help="the tri-gram datastore of aded").add_subparsers(dest="what", required=True, parser_class=_Parser)
    b = ds.add_parser("build", help="count tri-grams over the training corpus (train split only) with the default tokenizer")
    b.add_argument("--out", type=Path, default=None, help="output .npz (default: the cache file aded loads)")
    b.add_argument("--limit", type=int, default=None, help="characters per corpus source (default 8,000,000)")


def _add_hybrid_commands(sub) -> None:
    from hvd.hybrid.command import DEFAULT_TRACES
    from hvd.hybrid.trace import TraceConfig

    d = TraceConfig()
    tr = sub.add_parser("trace", help="record HVD predictor traces from replayed ar outputs (train split only)")
    tr.add_argument("--suite", action="append", help=f"suite (repeatable; default {','.join(d.suites)})")
    tr.add_argument("--limit", type=int, default=d.limit, help="train prompts per suite")
    tr.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    tr.add_argument("--model-arm", default=d.model_arm, help="model drafter of the hybrid while tracing")
    tr.add_argument("--out", type=Path, default=DEFAULT_TRACES)
    add_model_args(tr)
    train = sub.add_parser("train", help="train a component").add_subparsers(dest="what", required=True, parser_class=_Parser)
    pr = train.add_parser("predictor", help="fit the HVD accepted-length predictor on traces")
    pr.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    pr.add_argument("--out", type=Path, default=None, help="artifact directory (default: the packaged predictor)")
    pr.add_argument("--epochs", type=int, default=50)
    pr.add_argument("--threshold", type=float, default=6.0, help="report precision/recall of accepted >= this")
    from hvd.train.command import add_parser as add_drafter_parser

    add_drafter_parser(train)


def _read_messages(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}")
    except json.JSONDecodeError as e:
        raise CliError(f"{path} is not valid JSON: {e}")
    ok = isinstance(data, list) and data and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in data
    )
    if not ok:
        raise CliError(f'{path} must hold a non-empty JSON list of {{"role": str, "content": str}} objects')
    return data


def _decoding_kwargs(a: argparse.Namespace, engine=None) -> dict:
    """Keyword arguments of Engine.generate/stream; with `engine`, the default method resolved
    for its model (no --method given) and a drafter built with the --aded-* options when any is
    given (without it, the options are only checked)."""
    method = a.method or (default_method(engine) if engine is not None else registry.DEFAULT_METHOD)
    registry.get(method)  # unknown methods fail before the model loads
    kw = dict(method=method, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
              top_p=a.top_p, top_k=a.top_k, seed=a.seed, stop=a.stop)
    changes = _aded_changes(a)
    if changes and engine is not None:
        kw["drafter"] = registry.get(method).make(engine.target, engine.stores).with_config(**changes)
    return kw


def default_method(engine) -> str:
    """The default method, or the fallback (with a note) where it cannot run for this model:
    the HVD predictor ships for the default model's vocabulary."""
    from hvd.hybrid.predictor import PredictorError

    try:
        engine.drafter(registry.DEFAULT_METHOD)  # built once and kept by the engine
        return registry.DEFAULT_METHOD
    except (PredictorError, registry.MethodUnavailable) as e:
        print(f"hvd: note: using {registry.FALLBACK_METHOD}, not {registry.DEFAULT_METHOD}: {e}", file=sys.stderr)
        return registry.FALLBACK_METHOD


def _aded_changes(a: argparse.Namespace) -> dict:
    from hvd.drafters.aded import AdedConfig

    ms = a.aded_time_budget_ms
    given = {"iterations": a.aded_iterations, "paths": a.aded_paths, "max_nodes": a.aded_max_nodes,
             "time_budget_s": None if ms is None else ms / 1000, "adapt": False if a.aded_no_adapt else None,
             "greedy": True if a.aded_greedy else None}
    changes = {k: v for k, v in given.items() if v is not None}
    if changes and not (a.method or "").startswith("aded"):
        raise CliError("--aded-* options need --method aded (or aded-noadapt, aded-greedy)")
    try:
        AdedConfig(**changes)
    except ValueError as e:
        raise CliError(f"aded options: {e}")
    return changes


def _check_decoding_args(a: argparse.Namespace) -> None:
    from hvd.engine import make_generation_config

    _decoding_kwargs(a)
    make_generation_config(a.max_new_tokens, a.temperature, a.top_p, a.top_k, a.seed, a.stop)


def cmd_generate(a: argparse.Namespace) -> None:
    if (a.prompt is None) == (a.messages is None):
        raise CliError("give a PROMPT or --messages FILE (one of them)")
    prompt = _read_messages(a.messages) if a.messages else a.prompt
    if isinstance(prompt, str) and not prompt.strip():
        raise CliError("prompt is empty")
    _check_decoding_args(a)
    engine = _load(a.model, threads=a.threads, dtype=a.dtype)
    if a.json:
        print(json.dumps(engine.generate(prompt, **_decoding_kwargs(a, engine)).to_dict()))
        return
    result = None
    for chunk in engine.stream(prompt, **_decoding_kwargs(a, engine)):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        result = chunk.result or result
    s = result.stats
    print(f"\n[{s.method}] {s.new_tokens} tokens, {s.tokens_per_second:.1f} tok/s, "
          f"τ {s.mean_accepted_length:.2f}, prefill {s.prefill_seconds:.2f}s", file=sys.stderr)


def cmd_chat(a: argparse.Namespace) -> None:
    _check_decoding_args(a)
    engine = _load(a.model, threads=a.threads, reuse_prefix=True, dtype=a.dtype)  # each turn prefills only what is new
    history: list[dict] = []
    kwargs = _decoding_kwargs(a, engine)  # one drafter for the whole chat
    print(f"hvd chat ({kwargs['method']}); empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        history.append({"role": "user", "content": line})
        reply = ""
        for chunk in engine.stream(history, **kwargs):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            reply += chunk.text
        print()
        history.append({"role": "assistant", "content": reply})


def cmd_serve(a: argparse.Namespace) -> None:
    from hvd.serve.app import ServeConfig
    from hvd.serve.command import model_id, serve

    if not 0 < a.port < 65536:
        raise CliError(f"--port must be in 1..65535, got {a.port}")
    if a.max_queue <= 0:
        raise CliError(f"--max-queue must be a positive integer, got {a.max_queue}")
    if a.method is not None:
        registry.get(a.method)
    engine = _load(a.model, reuse_prefix=not a.no_prefix_cache, threads=a.threads, dtype=a.dtype)
    method = a.method or default_method(engine)
    serve(engine, method, a.model_name or model_id(a.model), a.host, a.port, ServeConfig(a.api_key, a.max_queue))


def cmd_demo(a: argparse.Namespace) -> None:
    from hvd.demo import run_demo

    if a.max_new_tokens <= 0:
        raise CliError(f"max_new_tokens must be a positive integer, got {a.max_new_tokens}")
    engine = _load(a.model, threads=a.threads, dtype=a.dtype)
    run_demo(engine, default_method(engine), a.max_new_tokens)


def cmd_bench(a: argparse.Namespace) -> None:
    from hvd.bench import command

    for name, value in (("limit", a.limit), ("max-new-tokens", a.max_new_tokens), ("repeats", a.repeats)):
        if value is not None and value <= 0:
            raise CliError(f"--{name} must be a positive integer, got {value}")
    try:
        command.run(lambda model: _load(model, dtype=a.dtype, threads=a.threads), a)
    except ValueError as e:
        raise CliError(str(e))


def cmd_agent_bench(a: argparse.Namespace) -> None:
    import tempfile

    from hvd.bench import agent

    for name, value in (("episodes", a.episodes), ("max-tokens", a.max_tokens)):
        if value <= 0:
            raise CliError(f"--{name} must be a positive integer, got {value}")
    if a.warm_episodes < 0:
        raise CliError(f"--warm-episodes must be >= 0, got {a.warm_episodes}")
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    for m in methods:
        registry.get(m)
    kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    if not kinds or any(k not in ("tools", "edit") for k in kinds):
        raise CliError(f"--kinds takes tools and/or edit, got {a.kinds!r}")
    if a.llama_server and not os.access(a.llama_server, os.X_OK):
        raise CliError(f"--llama-server: not an executable file: {a.llama_server}")
    from hvd.engine import resolve_threads

    cfg = agent.AgentBenchConfig(methods if "ar" in methods else ("ar", *methods), kinds, a.episodes,
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


def cmd_prepare(a: argparse.Namespace) -> None:
    from hvd import prepare

    if min(a.trace_limit, a.trace_tokens, a.drafter_steps, a.drafter_texts) <= 0 or (
            a.corpus_chars is not None and a.corpus_chars <= 0):
        raise CliError("--trace-limit, --trace-tokens, --corpus-chars, --drafter-steps and --drafter-texts must be "
                       "positive integers")
    t0 = time.perf_counter()
    engine = _load(a.model, threads=a.threads, dtype=a.dtype)
    assets = engine.stores.assets
    print(f"{assets.key} ({engine.target.precision}, loaded in {time.perf_counter() - t0:.0f} s); parts in {assets.directory}")
    if a.check:
        states = prepare.status(engine)
        print(prepare.describe(states))
        missing = prepare.missing(states, a.drafter)
        flags = (" --model " + a.model if a.model else "") + (" --drafter" if a.drafter else "")
        print(f"missing: {', '.join(missing)} (run: hvd prepare{flags})" if missing
              else "ready: hvd uses this model's own predictor and datastore")
        return
    prepare.run(engine, prepare.PrepareConfig(a.trace_limit, a.trace_tokens, a.force, a.corpus_chars, a.drafter,
                                              a.drafter_steps, a.drafter_texts))
    print(f"prepared in {time.perf_counter() - t0:.0f} s: `hvd generate --model {a.model or 'smollm2-135m'}` now "
          "runs hvd with this model's own predictor")


def cmd_trace(a: argparse.Namespace) -> None:
    from hvd.bench.suites import SUITES
    from hvd.hybrid.command import trace
    from hvd.hybrid.trace import TraceConfig

    suites = tuple(a.suite or TraceConfig().suites)
    unknown = [x for x in suites if x not in SUITES]
    if unknown:
        raise CliError(f"unknown suite {unknown[0]!r}; choose from: {', '.join(SUITES)}")
    if a.limit <= 0 or a.max_new_tokens <= 0:
        raise CliError("--limit and --max-new-tokens must be positive integers")
    registry.get(a.model_arm)
    trace(_load(a.model, threads=a.threads, dtype=a.dtype), TraceConfig(suites, a.limit, a.max_new_tokens, a.model_arm), a.out)


def cmd_train(a: argparse.Namespace) -> None:
    TRAINERS[a.what](a)


def _train_predictor(a: argparse.Namespace) -> None:
    from hvd.hybrid import predictor as P
    from hvd.hybrid.command import train

    if not a.traces.is_file():
        raise CliError(f"no traces at {a.traces}; record them with `hvd trace`")
    if a.epochs <= 0:
        raise CliError(f"--epochs must be a positive integer, got {a.epochs}")
    train(a.traces, a.out or P.DEFAULT_DIR, P.TrainConfig(epochs=a.epochs), a.threshold)


def _train_drafter(a: argparse.Namespace) -> None:
    from hvd.train.command import run

    try:
        run(a, _load(a.model, threads=a.threads, dtype=a.dtype))
    except ValueError as e:
        raise CliError(str(e)) from e


TRAINERS = {"predictor": _train_predictor, "drafter": _train_drafter}


def cmd_datastore(a: argparse.Namespace) -> None:
    from hvd.drafters.trigram_corpus import CorpusConfig
    from hvd.drafters.trigram_store import build

    if a.limit is not None and a.limit <= 0:
        raise CliError(f"--limit must be a positive integer, got {a.limit}")
    r = build(a.out, CorpusConfig() if a.limit is None else CorpusConfig(max_chars=a.limit))
    print(f"{r.path}: {r.tokens:,} tokens, {r.bigrams:,} bigrams, {r.entries:,} tri-grams kept, "
          f"{r.file_bytes / 1e6:.1f} MB, built in {r.seconds:.1f} s")


def _load(model: Optional[str], reuse_prefix: bool = False, dtype: str = "auto", threads: Optional[int] = None):
    from hvd.engine import Engine

    from rich.console import Console

    with Console(stderr=True).status("loading model (the first run converts the GGUF, ~20 s; Gemma 3 270M ~90 s)"):
        engine = Engine.load(model, reuse_prefix=reuse_prefix, dtype=dtype, threads=threads)
    for note in engine.load_notes:
        print(f"hvd: note: {note}; running {engine.target.precision}", file=sys.stderr)
    return engine


COMMANDS = {"generate": cmd_generate, "chat": cmd_chat, "demo": cmd_demo, "serve": cmd_serve, "bench": cmd_bench,
            "agent-bench": cmd_agent_bench, "prepare": cmd_prepare,
            "trace": cmd_trace, "train": cmd_train, "datastore": cmd_datastore}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from hvd.engine import InputError
    from hvd.hybrid.predictor import PredictorError
    from hvd.models import ModelError

    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except (CliError, InputError, ModelError, registry.UnknownMethodError, registry.MethodUnavailable,
            PredictorError) as e:
        print(f"hvd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
