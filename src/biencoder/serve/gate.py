"""The ASGI gate in front of every route: draining, API key, concurrency, body size, metrics.

Refusals happen here, before a route runs: while draining (503), without the key (401), beyond
``max_concurrent_requests`` (429 with Retry-After, at once), and a body over ``payload_limit``
(413 from the Content-Length header alone, or as soon as a chunked body passes the limit).
The body is read here, within ``body_timeout`` (408), and replayed to the app, so the app never
sees a partial one: a client that disconnects mid-body is counted as 499 and nothing runs.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from biencoder.serve.errors import error_response
from biencoder.serve.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Endpoint = Callable[[Request], Awaitable[Response]]

OPEN_PATHS = frozenset({"/health", "/metrics"})
OPEN_ROUTES = frozenset({("GET", "/"), ("GET", "/ping")})  # TEI's health answers (POST / is guarded)
DOC_PATHS = frozenset({"/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"})


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class ServerState:
    """What the gate and the routes share: draining, requests reading their body, in flight."""

    def __init__(self) -> None:
        self.draining = False
        self.reading = 0
        self.in_flight = 0

    @property
    def idle(self) -> bool:
        return self.reading == 0 and self.in_flight == 0


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        *,
        state: ServerState,
        metrics: Metrics,
        routes: frozenset[str],
        direct: Mapping[tuple[str, str], Endpoint] | None = None,
        on_error: Callable[[Request, Exception], Response] | None = None,
        api_key: str | None,
        max_concurrent_requests: int,
        payload_limit: int,
        body_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics
        self.routes = routes
        self.direct = dict(direct or {})
        self.on_error = on_error
        self.api_key = api_key.encode() if api_key else None
        self.max_concurrent = max_concurrent_requests
        self.payload_limit = payload_limit
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path if path in self.routes else "other"
        start = time.perf_counter()
        status_box = [500]

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = int(message["status"])
            await send(message)

        try:
            if path in OPEN_PATHS or (scope["method"], path) in OPEN_ROUTES:
                await self._dispatch(scope, receive, send_tracked)
            else:
                await self._guarded(scope, receive, send_tracked, path)
        except _ClientGone:
            status_box[0] = 499  # nginx's "client closed request": nothing was sent
            self.metrics.dropped.inc()
        finally:
            self.metrics.requests.labels(route, str(status_box[0])).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - start)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        refusal = self._refusal(scope, path)
        if refusal is not None:
            self.metrics.rejected.labels(refusal[2]).inc()
            await _drain_then(error_response(path, refusal[0], refusal[1], headers=refusal[3]), scope, send)
            return
        self.state.reading += 1
        body: bytes | None = b""
        try:
            with anyio.fail_after(self.body_timeout):
                body = await self._read_body(receive)
        except TimeoutError:
            refusal = 408, f"the request body did not arrive within {self.body_timeout:g} s", "timeout", None
        finally:
            self.state.reading -= 1
        if body is None:
            message = f"request body exceeds the payload limit of {self.payload_limit} bytes"
            refusal = 413, message, "payload", None
        if refusal is not None or body is None:
            status, message, reason, headers = refusal or (413, "", "payload", None)
            self.metrics.rejected.labels(reason).inc()
            await _drain_then(error_response(path, status, message, headers=headers), scope, send)
            return
        self.state.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self._dispatch(scope, _replay(body, receive), send)
        finally:
            self.state.in_flight -= 1
            self.metrics.in_flight.dec()

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Our own routes straight to their endpoint; the rest (docs, 404, 405) through FastAPI.

        The endpoints take a Request and return a Response, so they need none of FastAPI's
        per-request machinery (its middleware stack and dependency solving); FastAPI still
        documents them.
        """
        endpoint = self.direct.get((scope["method"], scope["path"]))
        if endpoint is None or self.on_error is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:  # every endpoint error becomes a response in the route's convention
            response = self.on_error(request, exc)
        await response(scope, receive, send)

    def _refusal(self, scope: Scope, path: str) -> tuple[int, str, str, dict[str, str] | None] | None:
        if self.state.draining:
            headers = {"Connection": "close", "Retry-After": "1"}
            return 503, "the server is shutting down; retry on another replica", "draining", headers
        if self.api_key is not None and path not in DOC_PATHS and not self._authorized(scope):
            message = "missing or wrong API key: send `Authorization: Bearer <key>`"
            return 401, message, "auth", {"WWW-Authenticate": 'Bearer realm="biencoder"'}
        if self.state.in_flight >= self.max_concurrent:
            message = f"too many concurrent requests (limit {self.max_concurrent}); retry shortly"
            return 429, message, "overloaded", {"Retry-After": "1"}
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return 400, f"invalid Content-Length header {length.decode(errors='replace')!r}", "bad", None
            if size > self.payload_limit:
                message = f"request body of {size} bytes exceeds the payload limit of {self.payload_limit}"
                return 413, message, "payload", None
        return None

    def _authorized(self, scope: Scope) -> bool:
        value = _header(scope, b"authorization") or b""
        scheme, _, token = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key or b"")

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the payload limit; _ClientGone if cut off."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.payload_limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the buffered body once, then the client's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _drain_then(response: Any, scope: Scope, send: Send) -> None:
    """Answer a refusal without reading the body."""

    async def no_body() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await response(scope, no_body, send)
