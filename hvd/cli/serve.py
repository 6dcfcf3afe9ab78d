"""`hvd serve`: the OpenAI-compatible server."""
from __future__ import annotations

import argparse

from hvd import methods
from hvd.cli.args import add_model_args, load_engine, port, positive_int


def add_parser(sub) -> None:
    sv = sub.add_parser("serve", help="an OpenAI-compatible server (chat and completions, streaming, metrics)")
    add_model_args(sv)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=port, default=8000)
    sv.add_argument("--method", default=None, help=f"default method of requests (default {methods.DEFAULT_METHOD})")
    sv.add_argument("--max-queue", type=positive_int, default=64, help="requests waiting at most; more get 429 (default 64)")
    sv.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/ endpoints")
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
    serve(engine, method, a.model_name or model_id(a.model), a.host, a.port, ServeConfig(a.api_key, a.max_queue))
