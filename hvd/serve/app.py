"""The OpenAI-compatible HTTP app: `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
`/health`, `/metrics`. One `EngineWorker` decodes (many requests together); this module only parses, queues, streams
and formats. Every response carries `usage` and a `speculative` object (the `hvd generate
--json` stats that make sense per request, plus draft/accepted counts and steps per arm).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from hvd.engine import Result
from hvd.serve.errors import APIError, bad_request
from hvd.serve.guard import Guard
from hvd.serve.metrics import Metrics
from hvd.serve.requests import GenRequest, ServeContext, parse_chat, parse_completion
from hvd.serve.tools import TAG, read_calls
from hvd.serve.worker import EngineWorker, Job, QueueFull, Unavailable, worker_stopped

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}
SPEC_KEYS = ("method", "steps", "mean_accepted_length", "tokens_per_second", "prefill_seconds", "decode_seconds",
             "draft_seconds", "verify_seconds", "draft_share", "target", "dtype")
PARSE_THREADS = 2  # threads that decode JSON and tokenize prompts, off the event loop


@dataclass(frozen=True)
class ServeConfig:
    api_key: Optional[str] = None
    max_queue: int = 64
    shutdown_timeout: float = 25.0  # seconds the running request may take to finish once shutdown begins
    max_body_bytes: int = 8 * 2 ** 20  # larger request bodies get 413
    max_batch: int = 16  # requests decoded together (on a target that holds many sequences)
    kv_budget: Optional[int] = 4 << 30  # KV bytes the running requests may hold together (None: no bound)


def speculative(result: Result) -> dict:
    stats = result.stats
    d = stats.to_dict()
    out = {k: d[k] for k in SPEC_KEYS}
    drafted = [s for s in stats.steps if s.draft_len]
    out.update(num_drafts=len(drafted), num_draft_tokens=sum(s.draft_len for s in drafted),
               num_accepted_tokens=sum(s.accepted for s in drafted), forced_tokens=stats.forced_tokens,
               steps_per_arm=dict(Counter(s.drafter for s in stats.steps)))
    return out


def usage(result: Result) -> dict:
    s = result.stats
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.new_tokens,
            "total_tokens": s.prompt_tokens + s.new_tokens,
            "prompt_tokens_details": {"cached_tokens": s.prompt_tokens_reused}}


def create_app(worker: EngineWorker, ctx: ServeContext, config: ServeConfig = ServeConfig()) -> FastAPI:
    """The app around `worker` (started and stopped by the app's lifespan). `app.state.worker`
    is there for the server, which closes it the moment shutdown begins (command.py)."""
    metrics: Metrics = worker.metrics
    parsers = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="hvd-parse")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, worker.stop, config.shutdown_timeout)
        parsers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="hvd", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    app.add_middleware(Guard, api_key=config.api_key)

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:  # unknown path, wrong method
        err = APIError(e.status_code, str(e.detail), "invalid_request_error")
        return JSONResponse(err.body(), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        err = APIError(500, f"internal error: {type(e).__name__}", "server_error")
        return JSONResponse(err.body(), status_code=500)

    @app.get("/health")
    async def health() -> dict:
        """200 while the engine worker runs; 503 once it has stopped (crashed, or shut down)."""
        if not worker.alive():
            raise worker_stopped()
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/reset_stores")
    async def reset_stores() -> dict:
        """Empty the shared cross-request stores and the kept prompt caches of finished requests
        (as vLLM's /reset_prefix_cache empties its cache), between two steps (running requests
        go on: a store only proposes drafts, and their own caches are not kept ones)."""
        def clear() -> None:
            worker.engine.stores.clear()
            worker.engine.prefixes.clear()

        await asyncio.to_thread(worker.exclusive, clear)
        return {"status": "ok", "stores": worker.engine.stores.sizes()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": ctx.model_id, "object": "model", "created": 0, "owned_by": "hvd"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await _generate(request, await _parse(request, parse_chat))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _generate(request, await _parse(request, parse_completion))

    async def _parse(request: Request, parse: Callable[[Any, ServeContext], GenRequest]) -> GenRequest:
        """The request checked and tokenized, on a parser thread: the event loop stays free."""
        raw = await _body(request, config.max_body_bytes)
        return await asyncio.get_running_loop().run_in_executor(parsers, _checked, raw, parse, ctx)

    async def _generate(request: Request, req: GenRequest) -> Response:
        """Queue the request and answer it. The response starts only when decoding does, so
        whatever fails before (a full queue, shutdown) is a plain status, never a 200 with an
        error inside; a client that disconnects first cancels its job."""
        job = Job(req, asyncio.get_running_loop(), asyncio.Queue())
        _submit(job)
        rid = ("chatcmpl-" if req.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            first = await _take(job, gone)
            if req.stream:
                return StreamingResponse(_stream(job, rid, first), media_type="text/event-stream")
            while first[0] != "done":
                first = await _take(job, gone)
            return JSONResponse(_final(req, rid, first[1]))
        finally:
            gone.cancel()

    def _submit(job: Job) -> None:
        try:
            worker.submit(job)
        except QueueFull as e:
            metrics.requests.labels("rejected").inc()
            raise APIError(429, f"server busy: {e}; retry shortly", "rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"})
        except Unavailable as e:
            metrics.requests.labels("rejected").inc()
            raise e.error from None

    async def _stream(job: Job, rid: str, first: tuple[str, Any]) -> AsyncIterator[str]:
        req, created = job.request, int(time.time())
        try:
            if req.kind == "chat":
                yield _sse(_chunk(req, rid, created, {"role": "assistant", "content": ""}, None))
            kind, item = first
            held = "" if req.tools is not None else None  # text that may be the start of tool calls
            while kind == "chunk":
                text = item.text
                if held is not None:
                    held += text
                    text, held = (held, None) if not _may_be_calls(held) else ("", held)
                if text:
                    yield _sse(_chunk(req, rid, created, text, None))
                kind, item = await job.out.get()
            if kind == "error":
                yield _sse(item.body())
            else:
                calls = read_calls(item.text, req.tools) if held is not None else None
                if calls is not None:
                    for i, call in enumerate(calls):
                        yield _sse(_chunk(req, rid, created, {"tool_calls": [{"index": i, **call}]}, None))
                elif held:
                    yield _sse(_chunk(req, rid, created, held, None))
                for event in _last_events(req, rid, created, item, calls is not None):
                    yield _sse(event)
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()  # a no-op once done; stops the worker if the client disconnected

    def _last_events(req: GenRequest, rid: str, created: int, result: Result, called: bool = False) -> list[dict]:
        finish = "tool_calls" if called else FINISH[result.stats.finish_reason]
        out = [_chunk(req, rid, created, "" if req.kind == "completion" else {}, finish)]
        if req.include_usage:
            out.append({**_chunk(req, rid, created, None, None, choices=False), "usage": usage(result),
                        "speculative": speculative(result)})
        return out

    def _chunk(req: GenRequest, rid: str, created: int, delta, finish, choices: bool = True) -> dict:
        obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
        out = {"id": rid, "object": obj, "created": created, "model": ctx.model_id}
        if not choices:
            out["choices"] = []
            return out
        if req.kind == "chat":
            d = delta if isinstance(delta, dict) else {"content": delta}
            out["choices"] = [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]
        else:
            out["choices"] = [{"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}]
        return out

    def _final(req: GenRequest, rid: str, result: Result) -> dict:
        finish = FINISH[result.stats.finish_reason]
        if req.kind == "chat":
            calls = read_calls(result.text, req.tools) if req.tools is not None else None
            message = {"role": "assistant", "content": result.text} if calls is None else \
                {"role": "assistant", "content": None, "tool_calls": calls}
            choice = {"index": 0, "message": message, "logprobs": None,
                      "finish_reason": finish if calls is None else "tool_calls"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        return {"id": rid, "object": obj, "created": int(time.time()), "model": ctx.model_id, "choices": [choice],
                "usage": usage(result), "speculative": speculative(result)}

    return app


def _may_be_calls(text: str) -> bool:
    """Whether streamed text so far may still turn out to be tool calls (held back until the end)."""
    head = text.lstrip()
    return not head or head[0] in "[{`" or head.startswith(TAG) or TAG.startswith(head)


def client_gone() -> APIError:
    """What a handler raises once its client has disconnected (no one reads it; nginx's 499)."""
    return APIError(499, "the client closed the connection", code="client_closed_request")


async def _body(request: Request, limit: int) -> bytes:
    """The request body; 413 if it is, or its Content-Length says it will be, over `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise client_gone() from None
    return b"".join(chunks)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is over the server's limit of {limit} bytes (--max-body-bytes)",
                    code="request_too_large")


def _checked(raw: bytes, parse: Callable[[Any, ServeContext], GenRequest], ctx: ServeContext) -> GenRequest:
    """`parse` of the JSON body `raw`; 400 for a body that is not JSON or nests too deeply."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the request body is not valid JSON") from None
    try:
        return parse(body, ctx)
    except RecursionError:  # rendering a deep value back to text (a tool's schema, a call's arguments)
        raise _too_deep() from None


def _too_deep() -> APIError:
    return bad_request("the request body nests too deeply (arrays and objects within arrays and objects)")


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (call it after the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _take(job: Job, gone: asyncio.Future) -> tuple[str, Any]:
    """The job's next item (an error item raised); if the client disconnects first, the job is
    cancelled and `client_gone()` raised."""
    got = asyncio.ensure_future(job.out.get())
    try:
        await asyncio.wait((got, gone), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # uvicorn gave up on this request (shutdown)
        got.cancel()
        job.cancel()
        raise
    if not got.done():
        got.cancel()
        job.cancel()
        raise client_gone()
    kind, item = got.result()
    if kind == "error":
        raise item
    return kind, item


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
