"""The engine worker: one thread that owns the engine and serves requests in arrival order.

The target holds one sequence, so requests are decoded one at a time; the interface (a job in,
chunks out, a cancel flag checked at every step) is what a batching scheduler would keep. A
full queue refuses new jobs (the app answers 429 with Retry-After). A cancelled job (its client
disconnected, or the server is shutting down) stops at its next step.

Shutdown (`close`): new jobs are refused, every queued job is answered 503 at once, and the
running one may finish within the timeout, after which it is cancelled with a 503.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hvd.errors import MethodUnavailable
from hvd.engine import Engine
from hvd.errors import InputError
from hvd.serve.errors import APIError, bad_request
from hvd.serve.metrics import Metrics
from hvd.serve.requests import GenRequest

SHUTDOWN_GRACE = 2.0  # seconds past the shutdown timeout for a cancelled request's 503 to go out


def shutting_down(detail: str = "") -> APIError:
    return APIError(503, "the server is shutting down" + detail, "server_error", code="shutting_down")


def worker_stopped() -> APIError:
    return APIError(503, "the engine worker has stopped; restart the server", "server_error", code="worker_stopped")


@dataclass
class Job:
    """One request between the app and the worker: the app reads `out`, the worker posts to it."""

    request: GenRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue  # ("chunk", Chunk) ... (streamed requests only), then ("done", Result) or ("error", APIError)
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: Optional[APIError] = None  # posted as the job's error when the worker drops it

    def post(self, kind: str, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, (kind, item))

    def cancel(self, reason: Optional[APIError] = None) -> None:
        """Stop the job at its next step, or skip it if it has not started; the worker posts
        `reason` as its error when given (no one reads a disconnected client's). The first
        cancel wins; a cancel after the job is done changes nothing."""
        if not self.cancelled.is_set():
            self.reason = reason
            self.cancelled.set()


class QueueFull(Exception):
    """The queue holds `max_queue` jobs already."""


class Unavailable(Exception):
    """The worker takes no new jobs: the server is shutting down or the worker has stopped."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.message)
        self.error = error


class EngineWorker:
    def __init__(self, engine: Engine, metrics: Metrics, max_queue: int) -> None:
        self.engine, self.metrics = engine, metrics
        self._queue: queue.Queue[Optional[Job]] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="hvd-engine", daemon=True)
        self._current: Optional[Job] = None
        self._lock = threading.Lock()  # orders submit against close
        self._closed = False
        self._stop_by: Optional[float] = None  # time.monotonic() by which the worker is to have stopped
        self._busy = threading.Lock()  # held while a job decodes
        self._timer: Optional[threading.Timer] = None  # cancels the running job at the shutdown timeout

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        """Whether the worker thread runs (started, and not ended by a crash or by `stop`)."""
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        """Queue `job`; raises QueueFull when the queue is full, Unavailable when shutting
        down or when the worker thread has stopped."""
        with self._lock:
            if self._closed:
                raise Unavailable(worker_stopped() if self._stop_by is None else shutting_down())
            if not self.alive():
                raise Unavailable(worker_stopped())
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(f"the queue is full ({self._queue.maxsize} requests waiting)") from None
        self.metrics.waiting.set(self._queue.qsize())

    def exclusive(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the calling thread between two jobs (never while one decodes)."""
        with self._busy:
            return fn()

    def close(self, timeout: float) -> None:
        """Begin shutdown: refuse new jobs, answer every queued job 503 now, and cancel the
        running job with a 503 if it is still running `timeout` seconds from now. Later
        calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_by = time.monotonic() + timeout + SHUTDOWN_GRACE
            dropped = self._drain()
            self._queue.put_nowait(None)  # the worker ends after the running job
        self._answer(dropped, shutting_down())
        self._timer = threading.Timer(timeout, self._cancel_running, (timeout,))
        self._timer.daemon = True
        self._timer.start()

    def stop(self, timeout: float) -> None:
        """`close(timeout)`, then wait for the worker thread to end, at most until the
        shutdown grace period after the timeout has passed."""
        self.close(timeout)
        if self._thread.ident is not None and self._stop_by is not None:
            self._thread.join(max(0.0, self._stop_by - time.monotonic()))
        if self._timer is not None and not self.alive():
            self._timer.cancel()

    def _drain(self) -> list[Job]:
        out = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                out.append(job)
        self.metrics.waiting.set(0)
        return out

    def _cancel_running(self, timeout: float) -> None:
        job = self._current
        if job is not None:
            job.cancel(shutting_down(f"; the request did not finish within the shutdown timeout ({timeout:g} s)"))

    def _run(self) -> None:
        try:
            while (job := self._queue.get()) is not None:
                self.metrics.waiting.set(self._queue.qsize())
                if job.cancelled.is_set():
                    self._dropped(job)
                    continue
                self._current = job
                self.metrics.running.set(1)
                try:
                    with self._busy:
                        self._serve(job)
                except BaseException:  # the worker dies (not a job's error): its client hears why
                    job.post("error", worker_stopped())
                    raise
                finally:
                    self._current = None
                    self.metrics.running.set(0)
        finally:
            self._retire()

    def _retire(self) -> None:
        """The thread ends: refuse new jobs and answer those still queued."""
        with self._lock:
            self._closed = True
            dropped = self._drain()
        self._answer(dropped, shutting_down() if self._stop_by is not None else worker_stopped())

    def _answer(self, dropped: list[Job], error: APIError) -> None:
        """Jobs taken off the queue unserved: each is counted as cancelled and gets `error`."""
        for job in dropped:
            self.metrics.requests.labels("cancelled").inc()
            job.post("error", error)

    def _dropped(self, job: Job) -> None:
        self.metrics.requests.labels("cancelled").inc()
        if job.reason is not None:
            job.post("error", job.reason)

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
                    self._dropped(job)
                    return
                if first is None and chunk.token_ids:
                    first = time.perf_counter()
                if chunk.result is not None:
                    self.metrics.finished(chunk.result.stats, (first or time.perf_counter()) - job.arrived)
                    for store, size in self.engine.stores.sizes().items():
                        self.metrics.store_tokens.labels(store).set(size)
                    job.post("done", chunk.result)
                    return
                if r.stream:
                    job.post("chunk", chunk)
        except (InputError, MethodUnavailable) as e:  # the app checks these first; kept as a 400, never a 500
            self.metrics.requests.labels("bad_request").inc()
            job.post("error", bad_request(str(e)))
        except Exception as e:  # a bug: the job fails, the worker keeps serving
            self.metrics.requests.labels("error").inc()
            job.post("error", APIError(500, f"internal error: {type(e).__name__}: {e}", "server_error"))
