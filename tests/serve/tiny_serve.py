"""`hvd serve` as a process (the command line: its options, $HVD_API_KEY, signals, exit status)
over the tiny test engine, each decoding step slowed by DELAY seconds, for tests that need a
server process. Usage: python tiny_serve.py DELAY [hvd serve options]"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from conftest import char_tokenizer, tiny_llama  # noqa: E402
from live_server import SlowEngine  # noqa: E402

import hvd.cli.serve as serve_command  # noqa: E402
from hvd.cli import main  # noqa: E402
from hvd.engine import Engine  # noqa: E402
from hvd.targets.exact import ExactLlamaTarget  # noqa: E402


def tiny_engine(*args, **kwargs) -> SlowEngine:
    engine = Engine(ExactLlamaTarget(tiny_llama()), char_tokenizer())
    engine.eos_ids = frozenset()
    return SlowEngine(engine, float(sys.argv[1]))


if __name__ == "__main__":
    serve_command.load_engine = tiny_engine
    sys.exit(main(["serve", *sys.argv[2:]]))
