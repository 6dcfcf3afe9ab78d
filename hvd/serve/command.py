"""`hvd serve`: load the model, build and warm the default method's drafter, then serve the
OpenAI API with uvicorn until SIGINT/SIGTERM. Shutdown has one deadline, the config's
`shutdown_timeout` T: at the signal the server stops accepting connections and every queued
request gets a 503; the running requests may finish within T seconds and are then cancelled (a
503); the process exits with status 0 within T + 2 seconds."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Optional

import uvicorn

from hvd import methods
from hvd.serve.app import ServeConfig, create_app
from hvd.serve.metrics import Metrics
from hvd.serve.requests import ServeContext
from hvd.serve.worker import SHUTDOWN_GRACE, EngineWorker

DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"


def _exit_zero(signum, frame) -> None:
    raise SystemExit(0)


def model_id(model: Optional[str]) -> str:
    """The id clients send as `model`: the default model's name, a GGUF file's stem or a directory's name."""
    if model is None or model == "smollm2-135m":
        return DEFAULT_MODEL_ID
    p = Path(model)
    return p.stem if p.suffix == ".gguf" else p.name


def build(engine, method: str, name: str, config: ServeConfig):
    """The app for an engine. Every method's drafter is built first (nothing that runs the
    target to build a drafter happens inside a request; a request for a method that cannot
    run here is a 400 with the reason), and `method` and `ar` are warmed up with one short
    generation."""
    unavailable = engine.prepare(list(methods.METHODS))
    for m, why in unavailable.items():
        print(f"hvd: note: method {m} is unavailable: {why}", file=sys.stderr)
    for m in dict.fromkeys((method, "ar")):
        engine.generate("Hello.", method=m, max_new_tokens=4)
    tok = engine.tokenizer
    ctx = ServeContext(name, tuple(methods.METHODS), method, engine.target.max_context, engine.encode,
                       tok.encode,  # a completion's text as is, with the tokenizer's own start token (Gemma's <bos>)
                       unavailable, check_grammar=engine.grammars.check, template_tools=engine.template_tools)
    worker = EngineWorker(engine, Metrics(), config.max_queue, config.max_batch, config.kv_budget)
    return create_app(worker, ctx, config)


class Server(uvicorn.Server):
    """uvicorn's server, closing the app's worker the moment shutdown begins (queued requests
    get their 503 at once, the running one has until the shutdown timeout), and giving open
    connections the timeout plus a grace period for that last 503 to go out."""

    def __init__(self, app, host: str, port: int, config: ServeConfig) -> None:
        super().__init__(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                        timeout_graceful_shutdown=config.shutdown_timeout + SHUTDOWN_GRACE))
        self.worker, self.shutdown_timeout = app.state.worker, config.shutdown_timeout

    async def shutdown(self, sockets=None) -> None:
        self.worker.close(self.shutdown_timeout)
        await super().shutdown(sockets)


def serve(engine, method: str, name: str, host: str, port: int, config: ServeConfig) -> None:
    app = build(engine, method, name, config)
    # uvicorn shuts down on SIGINT or SIGTERM and then re-raises the signal to the handler that
    # was installed before it: make that an orderly exit with status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_zero)
    sched = app.state.worker.scheduler
    batching = (f"up to {config.max_batch} requests decoded together" if sched.batched else
                f"one request at a time (the {engine.target.precision} target holds one sequence; "
                "the int8 target batches)")
    tools = "the chat template's tool format" if engine.template_tools else "the fallback tools prompt"
    print(f"hvd: serving {name} ({engine.target.precision}, default method {method}; {batching}; {tools}) "
          f"on http://{host}:{port}/v1", file=sys.stderr, flush=True)
    Server(app, host, port, config).run()
