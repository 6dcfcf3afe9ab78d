"""The `hvd` command line. Each command is a module here that owns its parser (`add_parser`)
and its run (`run`); what they share (options, argument types, one-line errors, loading the
engine) is `args.py`. Every user error is one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from hvd import methods
from hvd.cli import (agent_bench, bench, chat, datastore, demo, generate, prepare, serve, trace, train)
from hvd.cli.args import CliError, Parser

COMMANDS = {"generate": generate, "chat": chat, "demo": demo, "serve": serve, "bench": bench,
            "agent-bench": agent_bench, "prepare": prepare, "trace": trace, "train": train, "datastore": datastore}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hvd", description="Lossless speculative decoding.", epilog=_methods_help(),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def _methods_help() -> str:
    return "methods:\n" + "\n".join(f"  {m.name:<10} {m.help}" for m in methods.METHODS.values())


def main(argv: Optional[Sequence[str]] = None) -> int:
    from hvd.errors import InputError, MethodUnavailable, ModelError, UnknownMethodError
    from hvd.hybrid.predictor import PredictorError

    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command].run(args)
    except (CliError, InputError, ModelError, UnknownMethodError, MethodUnavailable, PredictorError) as e:
        print(f"hvd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
