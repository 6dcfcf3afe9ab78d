"""`hvd demo` (what `make run` shows)."""
from __future__ import annotations

import argparse

from hvd import methods
from hvd.cli.args import add_model_args, load_engine, positive_int


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="a whole-file edit decoded with ar and the default method, side by side")
    add_model_args(d)
    d.add_argument("--max-new-tokens", type=positive_int, default=400)


def run(a: argparse.Namespace) -> None:
    from hvd.demo import run_demo

    engine = load_engine(a.model, threads=a.threads, dtype=a.dtype)
    run_demo(engine, methods.default_method(engine), a.max_new_tokens)
