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
from typing import Any, TypeVar, get_args

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
    return validate(await read_object(request), model)


async def read_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object: 400 for bytes that are not UTF-8 JSON, 422 for another value."""
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
    return data


def validate(data: dict[str, Any], model: type[M]) -> M:
    """``data`` as ``model``; 422 naming the bad field, or the unknown ones and the known ones."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        unknown = [e["loc"] for e in errors if e["type"] == "extra_forbidden"]
        if unknown:
            raise _unknown_options(model, unknown) from None
        message, param = describe_validation(errors)  # type: ignore[arg-type]
        raise APIError(422, message, param=param) from None


def _unknown_options(model: type[BaseModel], locs: list[tuple[int | str, ...]]) -> APIError:
    """422 for options ``model`` does not take, naming each and the ones it does take."""
    names = ", ".join(f"`{'.'.join(map(str, loc))}`" for loc in locs)
    where, owner = _owner(model, locs[0][:-1])
    known = ", ".join(owner.model_fields)
    plural = "s" if len(locs) > 1 else ""
    return APIError(
        422,
        f"unknown option{plural} {names}; {where} takes: {known}",
        param=str(locs[0][0]),
        code="unknown_option",
    )


def _owner(model: type[BaseModel], path: tuple[int | str, ...]) -> tuple[str, type[BaseModel]]:
    """The nested model at ``path`` of ``model`` (``inputs`` of a similarity request) and its name."""
    owner = model
    for part in path:
        field = owner.model_fields.get(str(part))
        nested = [a for a in (field.annotation, *get_args(field.annotation)) if _is_model(a)] if field else []
        if not nested:
            break
        owner = nested[0]
    return ("`" + ".".join(map(str, path)) + "`" if path else "the body"), owner


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


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
