"""The OpenAI-compatible routes: /v1/embeddings (and /embeddings), /v1/models, /v1/search."""

from __future__ import annotations

import base64
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from biencoder.serve import schemas as s
from biencoder.serve.errors import APIError
from biencoder.serve.http import RouteTable, Service, errors_doc, json_response, parse
from biencoder.serve.openapi import body

_TOKEN_IDS_MESSAGE = (
    "`input` holds token ids; this server takes texts only: token ids of another tokenizer (tiktoken) "
    "would be decoded with the wrong vocabulary. With LangChain's OpenAIEmbeddings set "
    "check_embedding_ctx_length=False so it sends the texts themselves."
)


def register(table: RouteTable, ctx: Service) -> None:
    async def embeddings(request: Request) -> Response:
        req = await parse(request, s.EmbeddingRequest)
        model = ctx.check_model(req.model)
        texts = _openai_texts(req.input)
        ctx.embedder.check_texts(texts, "input")
        ctx.embedder.check_dimensions(req.dimensions)
        normalize = ctx.served.encoder.normalizes or req.dimensions is not None
        out = await ctx.embedder.embed(texts, request.receive, normalize=normalize, dimensions=req.dimensions)
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
        table.add(
            path,
            embeddings,
            "POST",
            response_model=s.EmbeddingResponse,
            include_in_schema=path == "/v1/embeddings",
            summary="OpenAI-compatible embeddings",
            openapi_extra=body(s.EmbeddingRequest),
            responses=errors_doc(s.OpenAIError, 400, 401, 404, 413, 422, 429, 503),
        )

    async def models(_: Request) -> Response:
        created = int(time.time())
        data = [{"id": n, "object": "model", "created": created, "owned_by": "biencoder"} for n in ctx.names]
        return json_response({"object": "list", "data": data})

    table.add(
        "/v1/models",
        models,
        "GET",
        response_model=s.ModelList,
        responses=errors_doc(s.OpenAIError, 401, 429, 503),
    )

    async def search(request: Request) -> Response:
        req = await parse(request, s.SearchRequest)
        model = ctx.check_model(req.model)
        if ctx.index is None:
            raise APIError(
                404, "this server has no index: start it with --index DIR to search", code="no_index"
            )
        if (req.query is None) == (req.queries is None):
            raise APIError(
                422, "give exactly one of `query` (a text) or `queries` (a list of texts)", param="query"
            )
        if not 0 < req.k <= ctx.config.max_k:
            raise APIError(422, f"`k` must lie in 1..{ctx.config.max_k}, got {req.k}", param="k")
        texts = [req.query] if req.query is not None else list(req.queries or [])
        param = "query" if req.query is not None else "queries"
        ctx.embedder.check_texts(texts, param)
        out = await ctx.embedder.embed(
            texts, request.receive, normalize=ctx.served.encoder.normalizes, param=param
        )
        result = await anyio.to_thread.run_sync(lambda: ctx.index.search(out.vectors, req.k))
        data = []
        for i, text in enumerate(texts):
            hits = result.hits(i)
            if ctx.index.has_texts:
                for hit, body_text in zip(hits, ctx.index.texts_of([h["id"] for h in hits]), strict=True):
                    hit["text"] = body_text
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

    table.add(
        "/v1/search",
        search,
        "POST",
        response_model=s.SearchResponse,
        summary="Embed queries and search the index in one request",
        openapi_extra=body(s.SearchRequest),
        responses=errors_doc(s.OpenAIError, 400, 401, 404, 413, 422, 429, 503),
    )


def _openai_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if value and not all(isinstance(v, str) for v in value):
        raise APIError(422, _TOKEN_IDS_MESSAGE, param="input", code="token_ids_not_supported")
    return list(value)
