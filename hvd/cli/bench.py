"""`hvd bench`: methods and peers on prompt suites, timed or replayed."""
from __future__ import annotations

import argparse
from pathlib import Path

from hvd.cli.args import CliError, add_model_args, load_engine, positive_int


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="benchmark methods and peers on real workloads")
    b.add_argument("--suite", action="append", help="suite name (repeatable) or 'all' (default agentic-edit)")
    b.add_argument("--prompts", type=Path, help="custom JSONL prompts file")
    b.add_argument("--methods", default="all",
                   help="comma-separated methods and peers, or 'all' (default): every registered method, oracle, "
                        "hf, hf-pld, llamacpp, llamacpp-pld (peers that cannot run here are skipped with a note)")
    b.add_argument("--limit", type=positive_int, default=None, help="prompts per suite")
    b.add_argument("--max-new-tokens", type=positive_int, default=None, help="override each prompt's own")
    b.add_argument("--repeats", type=positive_int, default=1)
    b.add_argument("--json", help="write results JSON here")
    b.add_argument("--plot", help="write a PNG bar chart here")
    add_model_args(b)
    b.add_argument("--replay", action="store_true",
                   help="acceptance only: replay drafters against recorded ar outputs (cached), without timing the target")
    b.add_argument("--grammar", action="store_true",
                   help="decode the prompts that carry a JSON schema (the structured suite) under it: each method "
                        "as m (drafts verified as proposed) and m+gd (grammar-aware drafting), against constrained ar")


def run(a: argparse.Namespace) -> None:
    from hvd.bench import command

    try:
        command.run(lambda model: load_engine(model, dtype=a.dtype, threads=a.threads), a)
    except ValueError as e:
        raise CliError(str(e))
