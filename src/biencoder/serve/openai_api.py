"""The OpenAI-compatible routes: /v1/embeddings (and /embeddings), /v1/models, /v1/search.

/v1/search runs in the store's modes (``mode``: dense, lexical or hybrid; ``fusion``, ``alpha``,
``candidates`` for hybrid), checked against the store before anything is embedded; lexical search
embeds nothing. Lexical and hybrid need a lexical part: the in-process index's BM25, or a database
store's full-text index.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from biencoder.index.config import SearchResult
from biencoder.index.fusion import DEFAULT_CANDIDATES
from biencoder.serve import schemas as s
from biencoder.serve.engine import Embedded
from biencoder.serve.errors import APIError
from biencoder.serve.http import RouteTable, Service, errors_doc, json_response, parse
from biencoder.serve.openapi import body
from biencoder.stores.contract import SearchNotOffered, SearchPlan, plan_search

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
        plan = _plan(ctx.index, req)
        if plan.reads_words:
            _check_words(texts, param)
        out: Embedded | None = None
        if plan.encodes:
            normalize = ctx.served.encoder.normalizes
            out = await ctx.embedder.embed(texts, request.receive, normalize=normalize, param=param)
        vectors = None if out is None else out.vectors
        result = await anyio.to_thread.run_sync(lambda: plan.search(ctx.index, texts, vectors, req.k))
        truncated = [False] * len(texts) if out is None else [bool(t) for t in out.truncated]
        data = _items(ctx.index, texts, result, truncated)
        tokens = out.tokens if out is not None else 0
        content = {
            "object": "list",
            "data": data,
            "model": model,
            "mode": plan.mode.value,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return json_response(content, headers=out.headers() if out is not None else None)

    table.add(
        "/v1/search",
        search,
        "POST",
        response_model=s.SearchResponse,
        summary="Embed queries and search the index in one request",
        openapi_extra=body(s.SearchRequest),
        responses=errors_doc(s.OpenAIError, 400, 401, 404, 413, 422, 429, 503),
    )


def _items(index: Any, texts: list[str], result: SearchResult, truncated: list[bool]) -> list[dict[str, Any]]:
    """Each query's ``search_result``: its hits (with their stored texts) and its note, if any."""
    data = []
    for i, text in enumerate(texts):
        hits = result.hits(i)
        if index.has_texts:
            for hit, body_text in zip(hits, index.texts_of([h["id"] for h in hits]), strict=True):
                hit["text"] = body_text
        item = {"object": "search_result", "index": i, "query": text, "hits": hits, "truncated": truncated[i]}
        if result.notes is not None and result.notes[i] is not None:
            item["note"] = result.notes[i]
        data.append(item)
    return data


def _plan(index: Any, req: s.SearchRequest) -> SearchPlan:
    """The request's mode, fusion and alpha checked against the store: 400 for a mode the store
    cannot run (a store without a lexical part, of any backend), 422 for a bad combination."""
    try:
        return plan_search(
            index,
            k=req.k,
            mode=req.mode,
            fusion=req.fusion,
            alpha=req.alpha,
            candidates=req.candidates or DEFAULT_CANDIDATES,
        )
    except SearchNotOffered as exc:
        raise APIError(400, str(exc), param="mode", code="mode_not_available") from None
    except ValueError as exc:
        raise APIError(422, str(exc)) from None


def _check_words(texts: list[str], param: str) -> None:
    for i, text in enumerate(texts):
        if not text.strip():
            raise APIError(
                422, f"`{param}[{i}]` holds no words; lexical and hybrid search need words", param=param
            )


def _openai_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if value and not all(isinstance(v, str) for v in value):
        raise APIError(422, _TOKEN_IDS_MESSAGE, param="input", code="token_ids_not_supported")
    return list(value)
