"""What the commands share: the one-line error (`CliError`) and the parser that raises it,
argument types, the model, decoding and aded options, loading the engine, and turning decoding
options into `Engine.generate` arguments."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from hvd import methods
from hvd.targets.select import DTYPES


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        raise CliError(message)


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0 (else one clear line)."""
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    value = _int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="a packaged model (smollm2-135m, gemma3-270m), a local HF model directory or a .gguf file (default: smollm2-135m, SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="int8: the exact target (int8 weights and activations, batch-invariant by construction; "
                        "Llama-family models, AVX2 CPUs); bfloat16: the lean Llama target, exact where this CPU's "
                        "bf16 kernels are (checked at load); float32: the model through transformers; auto (default): "
                        "the first of int8, bfloat16 (CPUs with bf16 units), float32 that passes here")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: $OMP_NUM_THREADS when set, else every core)")


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default=None,
                   help=f"decoding method (default {methods.DEFAULT_METHOD}; {methods.FALLBACK_METHOD} for a model it "
                        "cannot run on): " + ", ".join(methods.METHODS))
    add_model_args(p)
    p.add_argument("--max-new-tokens", type=positive_int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    add_aded_args(p)


def add_aded_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("aded options (with --method aded, aded-noadapt or aded-greedy)")
    g.add_argument("--aded-iterations", type=int, help="MCTS iterations per step (default 150)")
    g.add_argument("--aded-paths", type=int, help="most-visited root paths kept (default 24)")
    g.add_argument("--aded-max-nodes", type=int, help="draft tree size limit (default 64)")
    g.add_argument("--aded-time-budget-ms", type=float, help="stop each search after this long (default: no limit)")
    g.add_argument("--aded-no-adapt", action="store_true", help="no online tri-gram adaptation")
    g.add_argument("--aded-greedy", action="store_true", help="one greedy tri-gram chain instead of MCTS")


def read_messages(path: Path) -> list[dict]:
    """The messages in a JSON file, checked as the engine checks them (one line on error)."""
    from hvd.engine import check_messages
    from hvd.errors import InputError

    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}")
    except json.JSONDecodeError as e:
        raise CliError(f"{path} is not valid JSON: {e}")
    try:
        check_messages(data)
    except InputError as e:
        raise CliError(f"{path}: {e}") from e
    return data


def decoding_kwargs(a: argparse.Namespace, engine=None) -> dict:
    """Keyword arguments of Engine.generate/stream; with `engine`, the default method resolved
    for its model (no --method given) and a drafter built with the --aded-* options when any is
    given (without it, the options are only checked)."""
    method = a.method or (methods.default_method(engine) if engine is not None else methods.DEFAULT_METHOD)
    methods.get(method)  # unknown methods fail before the model loads
    kw = dict(method=method, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
              top_p=a.top_p, top_k=a.top_k, seed=a.seed, stop=a.stop)
    changes = aded_changes(a)
    if changes and engine is not None:
        kw["drafter"] = methods.get(method).make(engine.target, engine.stores).with_config(**changes)
    return kw


def aded_changes(a: argparse.Namespace) -> dict:
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


def check_decoding_args(a: argparse.Namespace) -> None:
    from hvd.engine import make_generation_config

    decoding_kwargs(a)
    make_generation_config(a.max_new_tokens, a.temperature, a.top_p, a.top_k, a.seed, a.stop)


def load_engine(model: Optional[str], reuse_prefix: bool = False, dtype: str = "auto", threads: Optional[int] = None):
    from hvd.engine import Engine

    from rich.console import Console

    with Console(stderr=True).status("loading model (the first run converts the GGUF, ~20 s; Gemma 3 270M ~90 s)"):
        engine = Engine.load(model, reuse_prefix=reuse_prefix, dtype=dtype, threads=threads)
    for note in engine.load_notes:
        print(f"hvd: note: {note}; running {engine.target.precision}", file=sys.stderr)
    return engine
