"""A live `hvd serve` app on loopback, in a background thread (a helper module, not a conftest:
tests/conftest.py is the one `conftest`)."""
from __future__ import annotations

import contextlib
import threading
import time

from hvd.bench.agent import free_port
from hvd.serve.app import ServeConfig
from hvd.serve.command import build

MODEL = "tiny"


@contextlib.contextmanager
def live_server(engine, config: ServeConfig = ServeConfig(), method: str = "suffix"):
    import uvicorn

    port = free_port()
    app = build(engine, method, MODEL, config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
