"""What every route shares: parsing a body, JSON responses, errors as responses, the route table.

Bodies are parsed with orjson and validated with the pydantic models of
:mod:`biencoder.serve.schemas`, so every bad request gets the route's own error shape. The
route table registers each endpoint with FastAPI (for the OpenAPI document) and for the gate's
direct dispatch (:mod:`biencoder.serve.gate`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from biencoder.serve.config import ServeConfig
from biencoder.serve.engine import ClientDisconnected, Embedder
from biencoder.serve.errors import APIError, describe_validation, error_response, from_api_error
from biencoder.serve.model import ServedModel

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]


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


def respond_to_error(request: Request, exc: Exception) -> Response:
    """The response for an exception out of an endpoint, in the route's convention."""
    path = request.url.path
    if isinstance(exc, APIError):
        return from_api_error(path, exc)
    if isinstance(exc, ClientDisconnected):
        return Response(status_code=499)
    logger.error("unexpected error on %s", path, exc_info=exc)
    return error_response(path, 500, f"internal error: {type(exc).__name__}")


def errors_doc(model: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the OpenAPI document: these statuses answer with ``model``."""
    return {code: {"model": model} for code in codes}


class RouteTable:
    """Endpoints by (method, path): registered with FastAPI and kept for direct dispatch."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.direct: dict[tuple[str, str], Endpoint] = {}

    def add(self, path: str, endpoint: Endpoint, method: str, **kw: Any) -> None:
        self.app.add_api_route(path, endpoint, methods=[method], **kw)
        self.direct[(method, path)] = endpoint


@dataclass(frozen=True, slots=True)
class Service:
    """What the routes work with: the model, its batcher's front (the embedder), the index."""

    served: ServedModel
    config: ServeConfig
    embedder: Embedder
    index: Any  # a biencoder.stores.VectorStore (memory, lancedb, pgvector), or None

    @property
    def names(self) -> tuple[str, ...]:
        return self.config.model_names

    def check_model(self, model: str | None) -> str:
        """The served name a request asked for (the first when it names none); 404 if unknown."""
        if model is None:
            return self.names[0]
        if model not in self.names:
            raise APIError(
                404,
                f"the model {model!r} does not exist here; served: {', '.join(self.names)}",
                param="model",
                code="model_not_found",
            )
        return model
