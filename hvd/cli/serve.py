"""`hvd serve`: the OpenAI-compatible server."""
from __future__ import annotations

import argparse
import os
import sys

from hvd import chat_template, methods
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
    sv.add_argument("--max-batch", type=positive_int, default=16,
                    help="requests decoded together, one forward a step over all their rows (the int8 target; "
                         "a float32 or bf16 target decodes one at a time) (default 16)")
    sv.add_argument("--kv-budget-mib", type=positive_int, default=4096,
                    help="KV cache the running requests may hold together, each counted at the most it may reach "
                         "(prompt + max_tokens); a request waits until its share fits (default 4096); finished "
                         "requests' caches kept for their next turns are bounded apart (2 GiB)")
    sv.add_argument("--max-queue", type=positive_int, default=64,
                    help="requests waiting behind the batch at most; more get 429 (default 64)")
    sv.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' on /v1/ and /reset_stores (default: $HVD_API_KEY, "
                         "which keeps the key out of `ps`)")
    sv.add_argument("--max-body-bytes", type=positive_int, default=8 * 2 ** 20,
                    help="larger request bodies get 413 (default 8 MiB)")
    sv.add_argument("--shutdown-timeout", type=seconds, default=25.0,
                    help="on SIGINT/SIGTERM, seconds the running requests may take to finish; queued requests get "
                         "503 at once (default 25)")
    sv.add_argument("--model-name", default=None, help="the model id clients send (default: the model's name)")
    sv.add_argument("--chat-template", default=None, metavar="FILE",
                    help="a Jinja chat template to use instead of the model's; one that reads `tools` gets each "
                         "request's functions and renders calls itself (else the fallback tools prompt)")
    sv.add_argument("--no-prefix-cache", action="store_true",
                    help="prefill every prompt whole (default: a request that starts the way an earlier one did, "
                         "an agent's next turn, prefills only its new tokens)")


def run(a: argparse.Namespace) -> None:
    from hvd.serve.app import ServeConfig
    from hvd.serve.command import model_id, serve

    if a.method is not None:
        methods.get(a.method)
    template = chat_template.read_template(a.chat_template) if a.chat_template else None
    engine = load_engine(a.model, reuse_prefix=not a.no_prefix_cache, threads=a.threads, dtype=a.dtype)
    if template is not None:
        chat_template.install(engine.tokenizer, template)
    method = a.method or methods.default_method(engine)
    if a.api_key:
        print("hvd: note: `ps` shows --api-key to every user of this machine; $HVD_API_KEY it does not show",
              file=sys.stderr)
    if a.no_prefix_cache:
        engine.prefixes.max_bytes = 0
    config = ServeConfig(a.api_key or os.environ.get("HVD_API_KEY") or None, a.max_queue,
                         shutdown_timeout=a.shutdown_timeout, max_body_bytes=a.max_body_bytes,
                         max_batch=a.max_batch, kv_budget=a.kv_budget_mib * 2 ** 20)
    serve(engine, method, a.model_name or model_id(a.model), a.host, a.port, config)
