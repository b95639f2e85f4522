"""Errors as each route's clients expect them: OpenAI's shape on /v1/*, TEI's on the TEI routes.

OpenAI: ``{"error": {"message", "type", "param", "code"}}``; TEI: ``{"error", "error_type"}``.
Every refusal is a 4xx (or a 503 while draining) with a message that says what was wrong.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

OPENAI_PREFIXES = ("/v1/", "/embeddings")

# status -> (OpenAI type, TEI error_type)
_KINDS = {
    400: ("invalid_request_error", "Validation"),
    401: ("authentication_error", "Unauthorized"),
    404: ("invalid_request_error", "NotFound"),
    405: ("invalid_request_error", "Validation"),
    413: ("invalid_request_error", "Validation"),
    415: ("invalid_request_error", "Validation"),
    422: ("invalid_request_error", "Validation"),
    424: ("invalid_request_error", "Backend"),  # TEI: a route the served model cannot answer
    429: ("rate_limit_error", "Overloaded"),
    500: ("server_error", "Backend"),
    503: ("server_error", "Unhealthy"),
}


class APIError(Exception):
    """A refusal with an HTTP status, a message and (OpenAI) the offending parameter and a code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIXES)


def error_body(path: str, status: int, message: str, param: str | None, code: str | None) -> dict[str, Any]:
    openai_type, tei_type = _KINDS.get(status, ("invalid_request_error", "Validation"))
    if is_openai_path(path):
        return {"error": {"message": message, "type": openai_type, "param": param, "code": code}}
    return {"error": message, "error_type": tei_type}


def error_response(
    path: str,
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = orjson.dumps(error_body(path, status, message, param, code))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def from_api_error(path: str, exc: APIError) -> Response:
    return error_response(path, exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers)


def describe_validation(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """pydantic / FastAPI validation errors -> (one readable message, the first bad parameter)."""
    parts: list[str] = []
    param: str | None = None
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        if param is None and loc:
            param = loc[0]
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    if len(errors) > 5:
        parts.append(f"... and {len(errors) - 5} more")
    return "; ".join(parts) or "invalid request body", param
