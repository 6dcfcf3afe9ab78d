"""The engine worker: one thread that owns the engine and decodes requests with its
continuous-batching scheduler (hvd/scheduler.py), in arrival order.

Up to `max_batch` requests decode together, one forward a step over all their rows, within the
KV budget (on the int8 target; a target of one sequence decodes one request at a time); the
queue behind them holds `max_queue` jobs, and a full queue refuses new ones (the app answers
429 with Retry-After). Jobs join the batch between steps as others finish. A cancelled job (its
client disconnected, or the server is shutting down) leaves at the next step.

Shutdown (`close`): new jobs are refused, every queued job is answered 503 at once, and the
running ones may finish within the timeout, after which they are cancelled with a 503.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hvd.errors import MethodUnavailable
from hvd.engine import Engine, Request
from hvd.errors import InputError
from hvd.serve.errors import APIError, bad_request
from hvd.serve.metrics import Metrics
from hvd.serve.requests import GenRequest

SHUTDOWN_GRACE = 2.0  # seconds past the shutdown timeout for a cancelled request's 503 to go out


def shutting_down(detail: str = "") -> APIError:
    return APIError(503, "the server is shutting down" + detail, "server_error", code="shutting_down")


def internal_error(e: Exception) -> APIError:
    return APIError(500, f"internal error: {type(e).__name__}: {e}", "server_error")


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
    first: Optional[float] = None  # when its first token was committed

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
    def __init__(self, engine: Engine, metrics: Metrics, max_queue: int, max_batch: int = 1,
                 kv_budget: Optional[int] = None) -> None:
        self.engine, self.metrics = engine, metrics
        self.scheduler = engine.scheduler(max_batch, kv_budget)
        self._queue: queue.Queue[Optional[Job]] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="hvd-engine", daemon=True)
        self._jobs: dict[int, Job] = {}  # the scheduler's jobs by key (waiting in it or running)
        self._keys = iter(range(1 << 62))
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
        """Run `fn` on the calling thread between two steps (never while a forward runs)."""
        with self._busy:
            return fn()

    def close(self, timeout: float) -> None:
        """Begin shutdown: refuse new jobs, answer every queued job 503 now, and cancel the
        running jobs with a 503 if they are still running `timeout` seconds from now. Later
        calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_by = time.monotonic() + timeout + SHUTDOWN_GRACE
            dropped = self._drain()
            self._queue.put_nowait(None)  # the worker ends after the running jobs
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
        for job in list(self._jobs.values()):
            job.cancel(shutting_down(f"; the request did not finish within the shutdown timeout ({timeout:g} s)"))

    def _run(self) -> None:
        ending = False
        try:
            while True:
                ending = self._take(block=not self._jobs) or ending
                if ending and not self._jobs:
                    break
                for key, job in list(self._jobs.items()):
                    if job.cancelled.is_set():
                        self.scheduler.cancel(key)
                        del self._jobs[key]
                        self._dropped(job)
                try:
                    with self._busy:
                        made = self.scheduler.step()
                except Exception as e:  # a bug in the step shared by every running job: they fail, the worker goes on
                    self._fail_all(internal_error(e))
                    continue
                except BaseException:  # the worker dies: its clients hear why
                    self._fail_all(worker_stopped())
                    raise
                for key, item in made:
                    self._deliver(key, item)
                self.metrics.running.set(self.scheduler.active)
        finally:
            self._retire()

    def _take(self, block: bool) -> bool:
        """Move queued jobs into the scheduler while it has room (waiting for one if `block`);
        True once the end-of-queue mark is taken."""
        while self.scheduler.room > 0:
            try:
                job = self._queue.get() if block else self._queue.get_nowait()
            except queue.Empty:
                return False
            block = False
            self.metrics.waiting.set(self._queue.qsize())
            if job is None:
                return True
            if job.cancelled.is_set():
                self._dropped(job)
                continue
            self._start(job)
        return False

    def _start(self, job: Job) -> None:
        r = job.request
        try:
            prepared = self.engine.ready(Request(list(r.ids), r.method, r.max_tokens, r.temperature, r.top_p,
                                                 seed=r.seed, stop=r.stop, max_draft_tokens=r.max_draft_tokens,
                                                 grammar=r.grammar))
            key = next(self._keys)
            self.scheduler.submit(key, prepared)
        except (InputError, MethodUnavailable) as e:
            self._fail(job, e)
            return
        self._jobs[key] = job

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

    def _fail(self, job: Job, e: Exception) -> None:
        """Job fails with `e`: a 400 for what the request asked (the app checks these first, so
        never a 500), else a 500; counted either way."""
        if isinstance(e, (InputError, MethodUnavailable)):
            self.metrics.requests.labels("bad_request").inc()
            job.post("error", bad_request(str(e)))
        else:
            self.metrics.requests.labels("error").inc()
            job.post("error", internal_error(e))

    def _fail_all(self, error: APIError) -> None:
        """Every job in the scheduler gets `error`; the scheduler starts afresh."""
        self.metrics.requests.labels("error").inc(len(self._jobs))
        for job in self._jobs.values():
            job.post("error", error)
        self._jobs.clear()
        self.scheduler = self.engine.scheduler(self.scheduler.max_batch, self.scheduler.kv_budget)

    def _deliver(self, key: int, chunk) -> None:
        """A chunk of job `key`: streamed, or, the last one, its result; or the error its own
        decode loop raised (the job fails, the others go on)."""
        job = self._jobs[key]
        if isinstance(chunk, Exception):
            del self._jobs[key]
            self._fail(job, chunk)
            return
        if job.first is None and chunk.token_ids:
            job.first = time.perf_counter()
        if chunk.result is not None:
            del self._jobs[key]
            self.metrics.finished(chunk.result.stats, (job.first or time.perf_counter()) - job.arrived)
            for store, size in self.engine.stores.sizes().items():
                self.metrics.store_tokens.labels(store).set(size)
            job.post("done", chunk.result)
        elif job.request.stream:
            job.post("chunk", chunk)
