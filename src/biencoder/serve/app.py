"""The HTTP app: OpenAI- and TEI-compatible routes, search over an index, health and metrics.

``create_app`` wires one served model (either runtime, behind the ``TokenEncoder`` protocol),
an optional ``Index``, the dynamic batcher and the ASGI gate; the routes live in
:mod:`~biencoder.serve.openai_api` and :mod:`~biencoder.serve.tei_api`, health and metrics here.
Every bad request gets the route's own error shape, never a 5xx.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from biencoder import __version__
from biencoder.serve import openai_api, tei_api
from biencoder.serve import schemas as s
from biencoder.serve.batcher import Batcher
from biencoder.serve.config import ServeConfig
from biencoder.serve.engine import ClientDisconnected, Embedder
from biencoder.serve.errors import APIError, describe_validation, error_response
from biencoder.serve.gate import Gate, ServerState
from biencoder.serve.http import RouteTable, Service, errors_doc, json_response, respond_to_error
from biencoder.serve.metrics import Metrics
from biencoder.serve.model import ServedModel
from biencoder.serve.openapi import install_openapi

logger = logging.getLogger(__name__)

_HEALTH_PROBE_AFTER = 5.0  # seconds without a finished batch before /health runs a probe


def create_app(served: ServedModel, config: ServeConfig, index: Any = None) -> FastAPI:
    """The app for one model; ``index`` (any ``biencoder.stores.VectorStore``) enables /v1/search."""
    dim = None if index is None else index.dimension
    if dim is not None and dim != served.encoder.dimension:
        raise ValueError(f"the index holds {dim}-d vectors but the model gives {served.encoder.dimension}")
    metrics = Metrics()
    state = ServerState()
    batcher = Batcher(
        served.encoder,
        max_batch_tokens=config.max_batch_tokens,
        max_batch_requests=config.max_batch_requests,
        on_batch=metrics.observe_batch,
    )
    embedder = Embedder(served, batcher, config, metrics)
    names = config.model_names

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        logger.info("serving %s (%s %s) as %s", served.folder, served.backend, served.precision, list(names))
        try:
            yield
        finally:
            state.draining = True
            if not await anyio.to_thread.run_sync(batcher.close, config.graceful_timeout):
                logger.warning("the inference worker did not stop within %.0f s", config.graceful_timeout)

    app = FastAPI(
        title="biencoder",
        version=__version__,
        lifespan=lifespan,
        description="Sentence embeddings over HTTP: OpenAI- and TEI-compatible, with search over an index.",
    )
    app.state.biencoder = state
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.embedder = embedder

    table = RouteTable(app)
    ctx = Service(served, config, embedder, index)
    openai_api.register(table, ctx)
    tei_api.register(table, ctx)

    # -- operations --------------------------------------------------------------------------

    async def health(_: Request) -> Response:
        problem = await _health_problem(state, batcher, embedder, config.health_timeout)
        if problem is None:
            return json_response({"status": "ok"})
        status = "draining" if state.draining else "unhealthy"
        return json_response({"status": status, "detail": problem}, status=503)

    table.add(
        "/health",
        health,
        "GET",
        response_model=s.Health,
        responses={503: {"model": s.Health}},
    )

    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    table.direct[("HEAD", "/health")] = health

    async def tei_health(request: Request) -> Response:
        problem = await _health_problem(state, batcher, embedder, config.health_timeout)
        if problem is None:
            return Response(status_code=200)
        return error_response(request.url.path, 503, problem)

    for path in ("/", "/ping"):  # TEI's health answers: Inference Endpoints' and SageMaker's
        table.add(
            path,
            tei_health,
            "GET",
            include_in_schema=path == "/",
            response_class=Response,
            summary="TEI's health check: 200 with an empty body, else 503 saying why",
            responses={200: {"description": "healthy (empty body)", "content": {}}}
            | errors_doc(s.TEIError, 503),
        )

    async def prometheus(_: Request) -> Response:
        metrics.queue_depth.set(batcher.queued_texts)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    table.add(
        "/metrics",
        prometheus,
        "GET",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )

    _install_handlers(app)
    install_openapi(app)
    routes = frozenset(r.path for r in app.routes if hasattr(r, "path"))
    app.add_middleware(
        Gate,
        state=state,
        metrics=metrics,
        routes=routes,
        direct=table.direct,
        on_error=respond_to_error,
        api_key=config.api_key,
        max_concurrent_requests=config.max_concurrent_requests,
        payload_limit=config.payload_limit,
        body_timeout=config.body_timeout,
    )
    return app


async def _health_problem(
    state: ServerState, batcher: Batcher, embedder: Embedder, timeout: float
) -> str | None:
    """None when healthy, else why not: draining, no worker, a batch stuck, or a failed probe."""
    if state.draining:
        return "the server is shutting down"
    if not batcher.alive:
        return "the inference worker is not running"
    busy = batcher.busy_since
    now = time.perf_counter()
    if busy is not None and now - busy > timeout:
        return f"the inference worker has been on one batch for {now - busy:.0f} s"
    if busy is None and batcher.queued_texts == 0 and now - batcher.last_done > _HEALTH_PROBE_AFTER:
        try:
            with anyio.fail_after(timeout):
                await embedder.embed(["health"], None, normalize=False)
        except TimeoutError:
            return f"the inference worker did not answer a probe within {timeout:.0f} s"
        except Exception as exc:  # the probe's failure is the answer
            return f"the probe failed: {type(exc).__name__}: {exc}"
    return None


def _install_handlers(app: FastAPI) -> None:
    """FastAPI's own errors (no route, wrong method) in the routes' conventions."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        return respond_to_error(request, exc)

    @app.exception_handler(ClientDisconnected)
    async def gone(request: Request, exc: ClientDisconnected) -> Response:
        return respond_to_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        message, param = describe_validation(list(exc.errors()))
        return error_response(request.url.path, 422, message, param=param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(
            request.url.path, exc.status_code, message, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return respond_to_error(request, exc)
