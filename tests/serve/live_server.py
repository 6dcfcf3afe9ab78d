"""A live `hvd serve` app on loopback, in a background thread (a helper module, not a conftest:
tests/conftest.py is the one `conftest`), and engine wrappers for tests that need a request to
take long or the worker to die."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Optional

from hvd.bench.servers import free_port
from hvd.serve.app import ServeConfig
from hvd.serve.command import Server, build

MODEL = "tiny"


class SlowEngine:
    """An engine whose every decoding step takes at least `delay` seconds longer, so a request
    is still running when a test acts on it; `die_on`: a prompt token id whose request kills
    the worker thread at its first step (a BaseException past the worker's error handling)."""

    def __init__(self, engine, delay: float, die_on: Optional[int] = None) -> None:
        self.inner, self.delay, self.die_on = engine, delay, die_on

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def scheduler(self, *args, **kwargs):
        return _SlowScheduler(self.inner.scheduler(*args, **kwargs), self.delay, self.die_on)


class _SlowScheduler:
    def __init__(self, inner, delay: float, die_on: Optional[int]) -> None:
        self.inner, self.delay, self.die_on, self.doomed = inner, delay, die_on, False

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def submit(self, key, prepared) -> None:
        self.doomed = self.doomed or (self.die_on is not None and self.die_on in prepared[0])
        self.inner.submit(key, prepared)

    def step(self):
        if self.doomed:
            raise SystemExit("the worker dies")
        time.sleep(self.delay)
        return self.inner.step()


@contextlib.contextmanager
def live_server(engine, config: ServeConfig = ServeConfig(), method: str = "suffix"):
    """The server's URL while it runs; on exit it shuts down as `hvd serve` does on SIGTERM."""
    port = free_port()
    app = build(engine, method, MODEL, config)
    server = Server(app, "127.0.0.1", port, config)
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


@contextlib.contextmanager
def logged_errors():
    """The records of ERROR and worse that uvicorn logs meanwhile (an unhandled exception's
    traceback, "Exception in ASGI application"); enter it after the server has started, as
    uvicorn resets its loggers when it starts."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
