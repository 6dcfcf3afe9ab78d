"""The checks every request passes before an endpoint runs, as plain ASGI middleware (it leaves
`receive` to the endpoint, so a handler hears its client disconnect):

- the API key, when one is set, on `/v1/` and `/reset_stores`: 401 unless the request sends
  ``Authorization: Bearer KEY`` (compared in constant time);
- every POST must say ``Content-Type: application/json`` (415 otherwise): a web page can send a
  cross-site POST without asking first only as a form or text/plain, so a browser cannot make
  the loopback server decode or empty its stores on a page's behalf.
"""
from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable, Optional

from starlette.responses import JSONResponse

from hvd.serve.errors import APIError

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
KEYED = ("/v1/", "/reset_stores")  # path prefixes behind the API key


class Guard:
    def __init__(self, app: ASGIApp, api_key: Optional[str] = None) -> None:
        self.app = app
        self.expected = b"Bearer " + api_key.encode() if api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        error = self.check(scope) if scope["type"] == "http" else None
        if error is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse(error.body(), status_code=error.status, headers=error.headers)(scope, receive, send)

    def check(self, scope: dict) -> Optional[APIError]:
        """The error a request gets before any endpoint runs, or None."""
        headers = dict(scope["headers"])  # lower-case names, raw bytes
        if self.expected is not None and scope["path"].startswith(KEYED):
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                return APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                                "authentication_error", code="invalid_api_key")
        if scope["method"] == "POST" and _media_type(headers.get(b"content-type", b"")) != b"application/json":
            return APIError(415, "POST bodies must be JSON, sent with 'Content-Type: application/json'",
                            code="unsupported_media_type")
        return None


def _media_type(value: bytes) -> bytes:
    return value.split(b";", 1)[0].strip().lower()
