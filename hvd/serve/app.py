"""The OpenAI-compatible HTTP app: `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
`/health`, `/metrics`. One `EngineWorker` decodes; this module only parses, queues, streams
and formats. Every response carries `usage` and a `speculative` object (the `hvd generate
--json` stats that make sense per request, plus draft/accepted counts and steps per arm).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from hvd.engine import Result
from hvd.serve.errors import APIError, bad_request
from hvd.serve.metrics import Metrics
from hvd.serve.requests import GenRequest, ServeContext, parse_chat, parse_completion
from hvd.serve.worker import EngineWorker, Job, QueueFull

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}
SPEC_KEYS = ("method", "steps", "mean_accepted_length", "tokens_per_second", "prefill_seconds", "decode_seconds",
             "draft_seconds", "verify_seconds", "draft_share", "target", "dtype")
POLL = 0.1  # seconds between disconnect checks while a non-streamed request waits


@dataclass(frozen=True)
class ServeConfig:
    api_key: Optional[str] = None
    max_queue: int = 64
    shutdown_deadline: float = 30.0  # seconds the running request may take to finish on SIGTERM


def speculative(result: Result) -> dict:
    stats = result.stats
    d = stats.to_dict()
    out = {k: d[k] for k in SPEC_KEYS}
    drafted = [s for s in stats.steps if s.draft_len]
    out.update(num_drafts=len(drafted), num_draft_tokens=sum(s.draft_len for s in drafted),
               num_accepted_tokens=sum(s.accepted for s in drafted),
               steps_per_arm=dict(Counter(s.drafter for s in stats.steps)))
    return out


def usage(result: Result) -> dict:
    s = result.stats
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.new_tokens,
            "total_tokens": s.prompt_tokens + s.new_tokens}


def create_app(worker: EngineWorker, ctx: ServeContext, config: ServeConfig = ServeConfig()) -> FastAPI:
    metrics: Metrics = worker.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, worker.stop, config.shutdown_deadline)

    app = FastAPI(title="hvd", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        err = APIError(500, f"internal error: {type(e).__name__}", "server_error")
        return JSONResponse(err.body(), status_code=500)

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if config.api_key and (request.url.path.startswith("/v1/") or request.url.path == "/reset_stores"):
            if request.headers.get("authorization", "") != f"Bearer {config.api_key}":
                err = APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                               "authentication_error", code="invalid_api_key")
                return JSONResponse(err.body(), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/reset_stores")
    async def reset_stores() -> dict:
        """Empty the shared cross-request stores (as vLLM's /reset_prefix_cache empties its
        cache): between the requests being decoded, never during one."""
        await asyncio.to_thread(worker.exclusive, worker.engine.stores.clear)
        return {"status": "ok", "stores": worker.engine.stores.sizes()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": ctx.model_id, "object": "model", "created": 0, "owned_by": "hvd"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await _generate(request, parse_chat(await _body(request), ctx))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _generate(request, parse_completion(await _body(request), ctx))

    async def _generate(request: Request, req: GenRequest):
        job = Job(req, asyncio.get_running_loop(), asyncio.Queue())
        try:
            worker.submit(job)
        except QueueFull as e:
            metrics.requests.labels("rejected").inc()
            raise APIError(429, f"server busy: {e}; retry shortly", "rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"})
        rid = ("chatcmpl-" if req.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        if req.stream:
            return StreamingResponse(_stream(request, job, rid), media_type="text/event-stream")
        return JSONResponse(await _collect(request, job, rid))

    async def _next(request: Request, job: Job):
        """The job's next item; cancels it (and raises CancelledError) if the client went away."""
        while True:
            try:
                return await asyncio.wait_for(job.out.get(), POLL)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancelled.set()
                    raise asyncio.CancelledError

    async def _collect(request: Request, job: Job, rid: str) -> dict:
        while True:
            kind, item = await _next(request, job)
            if kind == "error":
                raise item
            if kind == "done":
                return _final(job.request, rid, item)

    async def _stream(request: Request, job: Job, rid: str) -> AsyncIterator[str]:
        req, created = job.request, int(time.time())
        if req.kind == "chat":
            yield _sse(_chunk(req, rid, created, {"role": "assistant", "content": ""}, None))
        try:
            while True:
                kind, item = await _next(request, job)
                if kind == "error":
                    yield _sse(item.body())
                    break
                if kind == "chunk":
                    if item.text:
                        yield _sse(_chunk(req, rid, created, item.text, None))
                    continue
                yield _sse(_chunk(req, rid, created, "" if req.kind == "completion" else {}, FINISH[item.stats.finish_reason]))
                if req.include_usage:
                    yield _sse({**_chunk(req, rid, created, None, None, choices=False), "usage": usage(item),
                                "speculative": speculative(item)})
                break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # a no-op once done; stops the worker if the client disconnected

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
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text}, "logprobs": None,
                      "finish_reason": finish}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        return {"id": rid, "object": obj, "created": int(time.time()), "model": ctx.model_id, "choices": [choice],
                "usage": usage(result), "speculative": speculative(result)}

    return app


async def _body(request: Request):
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the request body is not valid JSON") from None


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
