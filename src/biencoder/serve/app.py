"""The HTTP app: OpenAI- and TEI-compatible routes, search over an index, health and metrics.

``create_app`` wires one served model (either runtime, behind the ``TokenEncoder`` protocol),
an optional ``Index``, the dynamic batcher and the ASGI gate. Bodies are parsed with orjson and
validated with the pydantic models of :mod:`biencoder.serve.schemas` (which also make the
OpenAPI document), so every bad request gets the route's own error shape, never a 5xx.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from biencoder import __version__
from biencoder.serve import schemas as s
from biencoder.serve.batcher import Batcher
from biencoder.serve.config import ServeConfig
from biencoder.serve.engine import ClientDisconnected, Embedder
from biencoder.serve.errors import APIError, describe_validation, error_response, from_api_error
from biencoder.serve.gate import Gate, ServerState
from biencoder.serve.metrics import Metrics
from biencoder.serve.model import ServedModel
from biencoder.serve.openapi import body, install_openapi

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]

_TOKEN_IDS_MESSAGE = (
    "`input` holds token ids; this server takes texts only: token ids of another tokenizer (tiktoken) "
    "would be decoded with the wrong vocabulary. With LangChain's OpenAIEmbeddings set "
    "check_embedding_ctx_length=False so it sends the texts themselves."
)
_HEALTH_PROBE_AFTER = 5.0  # seconds without a finished batch before /health runs a probe


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(data, status_code=status, media_type="application/json", headers=headers)


async def parse(request: Request, model: type[M]) -> M:
    """The body as ``model``: 400 for bytes that are not UTF-8 JSON, 422 for the wrong shape."""
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw:
            raise APIError(400, "the request body is empty; send a JSON object") from None
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise APIError(400, f"the request body is not valid UTF-8 (byte {err.start})") from None
        raise APIError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(422, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation(exc.errors(include_url=False))  # type: ignore[arg-type]
        raise APIError(422, message, param=param) from None


def create_app(served: ServedModel, config: ServeConfig, index: Any = None) -> FastAPI:
    """The app for one model; ``index`` (a loaded ``biencoder.Index``) enables /v1/search."""
    if index is not None and index.dim is not None and index.dim != served.encoder.dimension:
        raise ValueError(
            f"the index holds {index.dim}-d vectors but the model gives {served.encoder.dimension}"
        )
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

    direct: dict[tuple[str, str], Endpoint] = {}

    def route(path: str, endpoint: Endpoint, method: str, **kw: Any) -> None:
        """Register with FastAPI (the OpenAPI document) and for the gate's direct dispatch."""
        app.add_api_route(path, endpoint, methods=[method], **kw)
        direct[(method, path)] = endpoint

    def check_model(model: str | None) -> str:
        if model is None:
            return names[0]
        if model not in names:
            raise APIError(
                404,
                f"the model {model!r} does not exist here; served: {', '.join(names)}",
                param="model",
                code="model_not_found",
            )
        return model

    # -- OpenAI ------------------------------------------------------------------------------

    async def embeddings(request: Request) -> Response:
        req = await parse(request, s.EmbeddingRequest)
        model = check_model(req.model)
        texts = _openai_texts(req.input)
        embedder.check_texts(texts, "input")
        embedder.check_dimensions(req.dimensions)
        normalize = served.encoder.normalizes or req.dimensions is not None
        out = await embedder.embed(texts, request.receive, normalize=normalize, dimensions=req.dimensions)
        if req.encoding_format == "base64":
            vectors: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in out.vectors]
        else:
            vectors = list(out.vectors)
        data = [
            {"object": "embedding", "index": i, "embedding": v, "truncated": bool(t)}
            for i, (v, t) in enumerate(zip(vectors, out.truncated, strict=True))
        ]
        usage = {"prompt_tokens": out.tokens, "total_tokens": out.tokens}
        content = {"object": "list", "data": data, "model": model, "usage": usage}
        return json_response(content, headers=out.headers())

    for path in ("/v1/embeddings", "/embeddings"):
        route(
            path,
            embeddings,
            "POST",
            response_model=s.EmbeddingResponse,
            include_in_schema=path == "/v1/embeddings",
            summary="OpenAI-compatible embeddings",
            openapi_extra=body(s.EmbeddingRequest),
            responses=_errors(s.OpenAIError, 400, 401, 404, 413, 422, 429, 503),
        )

    async def models(_: Request) -> Response:
        created = int(time.time())
        data = [{"id": n, "object": "model", "created": created, "owned_by": "biencoder"} for n in names]
        return json_response({"object": "list", "data": data})

    route(
        "/v1/models",
        models,
        "GET",
        response_model=s.ModelList,
        responses=_errors(s.OpenAIError, 401, 429, 503),
    )

    async def search(request: Request) -> Response:
        req = await parse(request, s.SearchRequest)
        model = check_model(req.model)
        if index is None:
            raise APIError(
                404, "this server has no index: start it with --index DIR to search", code="no_index"
            )
        if (req.query is None) == (req.queries is None):
            raise APIError(
                422, "give exactly one of `query` (a text) or `queries` (a list of texts)", param="query"
            )
        if not 0 < req.k <= config.max_k:
            raise APIError(422, f"`k` must lie in 1..{config.max_k}, got {req.k}", param="k")
        texts = [req.query] if req.query is not None else list(req.queries or [])
        param = "query" if req.query is not None else "queries"
        embedder.check_texts(texts, param)
        out = await embedder.embed(texts, request.receive, normalize=served.encoder.normalizes, param=param)
        result = await anyio.to_thread.run_sync(lambda: index.search(out.vectors, req.k))
        data = []
        for i, text in enumerate(texts):
            hits = result.hits(i)
            data.append(
                {
                    "object": "search_result",
                    "index": i,
                    "query": text,
                    "hits": hits,
                    "truncated": bool(out.truncated[i]),
                }
            )
        usage = {"prompt_tokens": out.tokens, "total_tokens": out.tokens}
        return json_response(
            {"object": "list", "data": data, "model": model, "usage": usage}, headers=out.headers()
        )

    route(
        "/v1/search",
        search,
        "POST",
        response_model=s.SearchResponse,
        summary="Embed queries and search the index in one request",
        openapi_extra=body(s.SearchRequest),
        responses=_errors(s.OpenAIError, 400, 401, 404, 413, 422, 429, 503),
    )

    # -- TEI ---------------------------------------------------------------------------------

    def truncate_of(value: bool | None) -> bool:
        return config.auto_truncate if value is None else value

    async def embed(request: Request) -> Response:
        req = await parse(request, s.EmbedRequest)
        texts = [req.inputs] if isinstance(req.inputs, str) else list(req.inputs)
        embedder.check_texts(texts, "inputs")
        embedder.check_dimensions(req.dimensions)
        texts = embedder.with_prompt(texts, req.prompt_name)
        out = await embedder.embed(
            texts,
            request.receive,
            normalize=req.normalize,
            dimensions=req.dimensions,
            truncate=truncate_of(req.truncate),
            param="inputs",
        )
        return json_response(out.vectors, headers=out.headers())

    route(
        "/embed",
        embed,
        "POST",
        response_model=list[list[float]],
        summary="TEI-compatible embeddings",
        openapi_extra=body(s.EmbedRequest),
        responses=_errors(s.TEIError, 400, 401, 413, 422, 429, 503),
    )

    async def similarity(request: Request) -> Response:
        req = await parse(request, s.SimilarityRequest)
        texts = [req.inputs.source_sentence, *req.inputs.sentences]
        if not req.inputs.sentences:
            raise APIError(422, "`inputs.sentences` must not be empty", param="inputs")
        embedder.check_texts([req.inputs.source_sentence], "inputs.source_sentence")
        embedder.check_texts(req.inputs.sentences, "inputs.sentences")
        texts = embedder.with_prompt(texts, req.prompt_name)
        out = await embedder.embed(
            texts,
            request.receive,
            normalize=served.encoder.normalizes,
            truncate=truncate_of(req.truncate),
            param="inputs",
        )
        scores = served.encoder.similarity(out.vectors[:1], out.vectors[1:])[0]
        return json_response(np.asarray(scores, dtype=np.float32), headers=out.headers())

    route(
        "/similarity",
        similarity,
        "POST",
        response_model=list[float],
        summary="Similarity of a source sentence to each of the sentences",
        openapi_extra=body(s.SimilarityRequest),
        responses=_errors(s.TEIError, 400, 401, 413, 422, 429, 503),
    )

    async def tokenize(request: Request) -> Response:
        req = await parse(request, s.TokenizeRequest)
        texts = [req.inputs] if isinstance(req.inputs, str) else list(req.inputs)
        embedder.check_texts(texts, "inputs")
        texts = embedder.with_prompt(texts, req.prompt_name)
        details = await anyio.to_thread.run_sync(embedder.token_details, texts, req.add_special_tokens)
        return json_response(details)

    route(
        "/tokenize",
        tokenize,
        "POST",
        response_model=list[list[s.SimpleToken]],
        summary="The tokens of each input",
        openapi_extra=body(s.TokenizeRequest),
        responses=_errors(s.TEIError, 400, 401, 413, 422, 429, 503),
    )

    async def info(_: Request) -> Response:
        enc = served.encoder
        idx = (
            None
            if index is None
            else {
                "rows": len(index),
                "dimension": int(index.dim or 0),
                "kind": str(index.config.kind),
                "metric": str(index.config.metric),
            }
        )
        content = {
            "model_id": str(served.folder),
            "served_model_names": list(names),
            "model_type": {"embedding": {"pooling": "sentence-transformers"}},
            "dimension": enc.dimension,
            "max_input_length": enc.max_seq_length,
            "similarity_fn_name": enc.similarity_fn_name,
            "backend": served.backend,
            "precision": served.precision,
            "max_concurrent_requests": config.max_concurrent_requests,
            "max_batch_tokens": config.max_batch_tokens,
            "max_batch_requests": config.max_batch_requests,
            "max_client_batch_size": config.max_client_batch_size,
            "payload_limit": config.payload_limit,
            "max_input_chars": config.max_input_chars,
            "auto_truncate": config.auto_truncate,
            "index": idx,
            "version": __version__,
        }
        return json_response(content)

    route("/info", info, "GET", response_model=s.Info, responses=_errors(s.TEIError, 401, 429, 503))

    # -- operations --------------------------------------------------------------------------

    async def health(_: Request) -> Response:
        problem = await _health_problem(state, batcher, embedder, config.health_timeout)
        if problem is None:
            return json_response({"status": "ok"})
        status = "draining" if state.draining else "unhealthy"
        return json_response({"status": status, "detail": problem}, status=503)

    route(
        "/health",
        health,
        "GET",
        response_model=s.Health,
        responses={503: {"model": s.Health}},
    )

    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    direct[("HEAD", "/health")] = health

    async def prometheus(_: Request) -> Response:
        metrics.queue_depth.set(batcher.queued_texts)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    route(
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
        direct=direct,
        on_error=respond_to_error,
        api_key=config.api_key,
        max_concurrent_requests=config.max_concurrent_requests,
        payload_limit=config.payload_limit,
        body_timeout=config.body_timeout,
    )
    return app


def respond_to_error(request: Request, exc: Exception) -> Response:
    """The response for an exception out of an endpoint, in the route's convention."""
    path = request.url.path
    if isinstance(exc, APIError):
        return from_api_error(path, exc)
    if isinstance(exc, ClientDisconnected):
        return Response(status_code=499)
    logger.error("unexpected error on %s", path, exc_info=exc)
    return error_response(path, 500, f"internal error: {type(exc).__name__}")


def _openai_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if value and not all(isinstance(v, str) for v in value):
        raise APIError(422, _TOKEN_IDS_MESSAGE, param="input", code="token_ids_not_supported")
    return list(value)


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


def _errors(model: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": model} for code in codes}


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
