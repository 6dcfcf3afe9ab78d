"""The engine worker: one thread that owns the engine and serves requests in arrival order.

The target holds one sequence, so requests are decoded one at a time; the interface (a job in,
chunks out, a cancel flag checked at every step) is what a batching scheduler would keep. A
full queue refuses new jobs (the app answers 429 with Retry-After). A cancelled job (its client
disconnected, or the server is shutting down) stops at its next step.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from hvd.errors import MethodUnavailable
from hvd.engine import Engine
from hvd.errors import InputError
from hvd.serve.errors import APIError, bad_request
from hvd.serve.metrics import Metrics
from hvd.serve.requests import GenRequest


@dataclass
class Job:
    request: GenRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue  # ("chunk", Chunk) ..., then ("done", Result) or ("error", APIError)
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def post(self, kind: str, item) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, (kind, item))


class QueueFull(Exception):
    pass


class EngineWorker:
    def __init__(self, engine: Engine, metrics: Metrics, max_queue: int) -> None:
        self.engine, self.metrics = engine, metrics
        self._queue: queue.Queue[Optional[Job]] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="hvd-engine", daemon=True)
        self._current: Optional[Job] = None
        self._closed = False
        self._busy = threading.Lock()  # held while a job decodes

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        if self._closed:
            raise QueueFull("the server is shutting down")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"the queue is full ({self._queue.maxsize} requests waiting)") from None
        self.metrics.waiting.set(self._queue.qsize())

    def exclusive(self, fn):
        """Run `fn` on the calling thread between two jobs (never while one decodes)."""
        with self._busy:
            return fn()

    def stop(self, deadline: float) -> None:
        """Accept nothing more; let the running job finish until `deadline` seconds, then
        cancel it and everything still queued."""
        self._closed = True
        while True:  # queued jobs are cancelled at once: they would not finish in time
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancelled.set()
                job.post("error", APIError(503, "the server is shutting down", "server_error"))
        self._queue.put(None)
        self._thread.join(deadline)
        if self._current is not None:
            self._current.cancelled.set()
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            self.metrics.waiting.set(self._queue.qsize())
            if job is None:
                return
            if job.cancelled.is_set():
                self.metrics.requests.labels("cancelled").inc()
                continue
            self._current = job
            self.metrics.running.set(1)
            try:
                with self._busy:
                    self._serve(job)
            finally:
                self._current = None
                self.metrics.running.set(0)

    def _serve(self, job: Job) -> None:
        r = job.request
        first: Optional[float] = None
        try:
            gen = self.engine.stream(list(r.ids), method=r.method, max_new_tokens=r.max_tokens,
                                     temperature=r.temperature, top_p=r.top_p, seed=r.seed, stop=r.stop,
                                     max_draft_tokens=r.max_draft_tokens)
            for chunk in gen:
                if job.cancelled.is_set():
                    gen.close()
                    self.metrics.requests.labels("cancelled").inc()
                    return
                if first is None and chunk.token_ids:
                    first = time.perf_counter()
                if chunk.result is not None:
                    self.metrics.finished(chunk.result.stats, (first or time.perf_counter()) - job.arrived)
                    for store, size in self.engine.stores.sizes().items():
                        self.metrics.store_tokens.labels(store).set(size)
                    job.post("done", chunk.result)
                    return
                job.post("chunk", chunk)
        except (InputError, MethodUnavailable) as e:  # bad input is a 400, never a 500
            self.metrics.requests.labels("bad_request").inc()
            job.post("error", bad_request(str(e)))
        except Exception as e:  # a bug: the job fails, the worker keeps serving
            self.metrics.requests.labels("error").inc()
            job.post("error", APIError(500, f"internal error: {type(e).__name__}: {e}", "server_error"))
