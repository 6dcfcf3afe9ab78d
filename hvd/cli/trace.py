"""`hvd trace`: record HVD predictor traces from replayed `ar` outputs (train split only)."""
from __future__ import annotations

import argparse
from pathlib import Path

from hvd import methods
from hvd.cli.args import CliError, add_model_args, load_engine, positive_int


def add_parser(sub) -> None:
    from hvd.hybrid.trace import TraceConfig
    from hvd.train.predictor import DEFAULT_TRACES

    d = TraceConfig()
    tr = sub.add_parser("trace", help="record HVD predictor traces from replayed ar outputs (train split only)")
    tr.add_argument("--suite", action="append", help=f"suite (repeatable; default {','.join(d.suites)})")
    tr.add_argument("--limit", type=positive_int, default=d.limit, help="train prompts per suite")
    tr.add_argument("--max-new-tokens", type=positive_int, default=d.max_new_tokens)
    tr.add_argument("--model-arm", default=d.model_arm, help="model drafter of the hybrid while tracing")
    tr.add_argument("--out", type=Path, default=DEFAULT_TRACES)
    add_model_args(tr)


def run(a: argparse.Namespace) -> None:
    from hvd.data.suites import SUITES
    from hvd.train.predictor import trace
    from hvd.hybrid.trace import TraceConfig

    suites = tuple(a.suite or TraceConfig().suites)
    unknown = [x for x in suites if x not in SUITES]
    if unknown:
        raise CliError(f"unknown suite {unknown[0]!r}; choose from: {', '.join(SUITES)}")
    methods.get(a.model_arm)
    trace(load_engine(a.model, threads=a.threads, dtype=a.dtype), TraceConfig(suites, a.limit, a.max_new_tokens, a.model_arm), a.out)
