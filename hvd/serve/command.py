"""`hvd serve`: load the model, build and warm the default method's drafter, then serve the
OpenAI API with uvicorn until SIGINT/SIGTERM (graceful: the running request may finish within
the deadline, queued ones get a 503, exit status 0)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from hvd import methods
from hvd.serve.app import ServeConfig, create_app
from hvd.serve.metrics import Metrics
from hvd.serve.requests import ServeContext
from hvd.serve.worker import EngineWorker

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
    target to build a drafter happens inside a request; a method that cannot run here answers
    400 with the reason), and `method` and `ar` are warmed up with one short generation."""
    for m, why in engine.prepare(list(methods.METHODS)).items():
        print(f"hvd: note: method {m} is unavailable: {why}", file=sys.stderr)
    for m in dict.fromkeys((method, "ar")):
        engine.generate("Hello.", method=m, max_new_tokens=4)
    tok = engine.tokenizer
    ctx = ServeContext(name, tuple(methods.METHODS), method, engine.target.max_context, engine.encode,
                       tok.encode)  # a completion's text as is, with the tokenizer's own start token (Gemma's <bos>)
    worker = EngineWorker(engine, Metrics(), config.max_queue)
    return create_app(worker, ctx, config)


def serve(engine, method: str, name: str, host: str, port: int, config: ServeConfig) -> None:
    import signal

    import uvicorn

    app = build(engine, method, name, config)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal to the handler
    # that was installed before it: make that an orderly exit with status 0.
    signal.signal(signal.SIGTERM, _exit_zero)
    print(f"hvd: serving {name} ({engine.target.precision}, default method {method}) on http://{host}:{port}/v1",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=int(config.shutdown_deadline))
