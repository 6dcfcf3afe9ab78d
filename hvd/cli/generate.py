"""`hvd generate`: one completion for a prompt or a messages file, streamed or as JSON."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hvd.cli.args import CliError, add_decoding_args, check_decoding_args, decoding_kwargs, load_engine, read_messages


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="generate a completion for one prompt")
    g.add_argument("prompt", nargs="?", help="sent as one user message")
    g.add_argument("--messages", type=Path, help='JSON file: a list of {"role", "content"} objects')
    g.add_argument("--json", action="store_true", help="print one JSON object with text, token_ids and stats")
    add_decoding_args(g)


def run(a: argparse.Namespace) -> None:
    if (a.prompt is None) == (a.messages is None):
        raise CliError("give a PROMPT or --messages FILE (one of them)")
    prompt = read_messages(a.messages) if a.messages else a.prompt
    if isinstance(prompt, str) and not prompt.strip():
        raise CliError("prompt is empty")
    check_decoding_args(a)
    engine = load_engine(a.model, threads=a.threads, dtype=a.dtype)
    if a.json:
        print(json.dumps(engine.generate(prompt, **decoding_kwargs(a, engine)).to_dict()))
        return
    result = None
    for chunk in engine.stream(prompt, **decoding_kwargs(a, engine)):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        result = chunk.result or result
    s = result.stats
    print(f"\n[{s.method}] {s.new_tokens} tokens, {s.tokens_per_second:.1f} tok/s, "
          f"τ {s.mean_accepted_length:.2f}, prefill {s.prefill_seconds:.2f}s", file=sys.stderr)
