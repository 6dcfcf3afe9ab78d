"""`hvd chat`: an interactive chat, streaming tokens as they are accepted."""
from __future__ import annotations

import argparse
import sys

from hvd.cli.args import add_decoding_args, check_decoding_args, decoding_kwargs, load_engine


def add_parser(sub) -> None:
    add_decoding_args(sub.add_parser("chat", help="interactive chat, streaming tokens as they are accepted"))


def run(a: argparse.Namespace) -> None:
    check_decoding_args(a)
    engine = load_engine(a.model, threads=a.threads, reuse_prefix=True, dtype=a.dtype)  # each turn prefills only what is new
    history: list[dict] = []
    kwargs = decoding_kwargs(a, engine)  # one drafter for the whole chat
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
