"""The OpenAPI document: request bodies from the pydantic models the routes validate with.

Routes parse their bodies themselves (orjson, then ``model_validate``) to control every error,
so FastAPI does not see the request models; ``body`` declares each one for the document and
``install_openapi`` adds their nested definitions to ``components.schemas``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

_REF = "#/components/schemas/{model}"
_REQUEST_MODELS: list[type[BaseModel]] = []


def body(*models: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is one of ``models``."""
    refs = []
    for model in models:
        if model not in _REQUEST_MODELS:
            _REQUEST_MODELS.append(model)
        refs.append({"$ref": _REF.format(model=model.__name__)})
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the request models (and what they nest)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in _REQUEST_MODELS:
            schema = model.model_json_schema(ref_template=_REF)
            for name, sub in schema.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas[model.__name__] = schema
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
