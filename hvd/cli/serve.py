"""`hvd serve`: the OpenAI-compatible server."""
from __future__ import annotations

import argparse
import os
import sys

from hvd import methods
from hvd.cli.args import add_model_args, load_engine, port, positive_int


def seconds(text: str) -> float:
    """An argparse type: a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def add_parser(sub) -> None:
    sv = sub.add_parser("serve", help="an OpenAI-compatible server (chat and completions, streaming, metrics)")
    add_model_args(sv)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=port, default=8000)
    sv.add_argument("--method", default=None, help=f"default method of requests (default {methods.DEFAULT_METHOD})")
    sv.add_argument("--max-queue", type=positive_int, default=64, help="requests waiting at most; more get 429 (default 64)")
    sv.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' on /v1/ and /reset_stores (default: $HVD_API_KEY, "
                         "which keeps the key out of `ps`)")
    sv.add_argument("--max-body-bytes", type=positive_int, default=8 * 2 ** 20,
                    help="larger request bodies get 413 (default 8 MiB)")
    sv.add_argument("--shutdown-timeout", type=seconds, default=25.0,
                    help="on SIGINT/SIGTERM, seconds the running request may take to finish; queued requests get "
                         "503 at once (default 25)")
    sv.add_argument("--model-name", default=None, help="the model id clients send (default: the model's name)")
    sv.add_argument("--no-prefix-cache", action="store_true",
                    help="prefill every prompt whole (default: a request sharing a prefix with the previous one, "
                         "an agent's next turn, prefills only its new tokens)")


def run(a: argparse.Namespace) -> None:
    from hvd.serve.app import ServeConfig
    from hvd.serve.command import model_id, serve

    if a.method is not None:
        methods.get(a.method)
    engine = load_engine(a.model, reuse_prefix=not a.no_prefix_cache, threads=a.threads, dtype=a.dtype)
    method = a.method or methods.default_method(engine)
    if a.api_key:
        print("hvd: note: `ps` shows --api-key to every user of this machine; $HVD_API_KEY it does not show",
              file=sys.stderr)
    config = ServeConfig(a.api_key or os.environ.get("HVD_API_KEY") or None, a.max_queue,
                         shutdown_timeout=a.shutdown_timeout, max_body_bytes=a.max_body_bytes)
    serve(engine, method, a.model_name or model_id(a.model), a.host, a.port, config)
