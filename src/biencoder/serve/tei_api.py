"""The TEI-compatible routes: /embed, /similarity, /tokenize, /info."""

from __future__ import annotations

from typing import Any

import anyio
import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from biencoder import __version__
from biencoder.index.fusion import SearchMode
from biencoder.serve import schemas as s
from biencoder.serve.errors import APIError
from biencoder.serve.http import RouteTable, Service, errors_doc, json_response, parse
from biencoder.serve.openapi import body
from biencoder.stores.contract import plan_search


def register(table: RouteTable, ctx: Service) -> None:
    def truncate_of(value: bool | None) -> bool:
        return ctx.config.auto_truncate if value is None else value

    async def embed(request: Request) -> Response:
        req = await parse(request, s.EmbedRequest)
        texts = [req.inputs] if isinstance(req.inputs, str) else list(req.inputs)
        ctx.embedder.check_texts(texts, "inputs")
        ctx.embedder.check_dimensions(req.dimensions)
        texts = ctx.embedder.with_prompt(texts, req.prompt_name)
        out = await ctx.embedder.embed(
            texts,
            request.receive,
            normalize=req.normalize,
            dimensions=req.dimensions,
            truncate=truncate_of(req.truncate),
            param="inputs",
        )
        return json_response(out.vectors, headers=out.headers())

    table.add(
        "/embed",
        embed,
        "POST",
        response_model=list[list[float]],
        summary="TEI-compatible embeddings",
        openapi_extra=body(s.EmbedRequest),
        responses=errors_doc(s.TEIError, 400, 401, 413, 422, 429, 503),
    )

    async def similarity(request: Request) -> Response:
        req = await parse(request, s.SimilarityRequest)
        texts = [req.inputs.source_sentence, *req.inputs.sentences]
        if not req.inputs.sentences:
            raise APIError(422, "`inputs.sentences` must not be empty", param="inputs")
        ctx.embedder.check_texts([req.inputs.source_sentence], "inputs.source_sentence")
        ctx.embedder.check_texts(req.inputs.sentences, "inputs.sentences")
        texts = ctx.embedder.with_prompt(texts, req.prompt_name)
        out = await ctx.embedder.embed(
            texts,
            request.receive,
            normalize=ctx.served.encoder.normalizes,
            truncate=truncate_of(req.truncate),
            param="inputs",
        )
        scores = ctx.served.encoder.similarity(out.vectors[:1], out.vectors[1:])[0]
        return json_response(np.asarray(scores, dtype=np.float32), headers=out.headers())

    table.add(
        "/similarity",
        similarity,
        "POST",
        response_model=list[float],
        summary="Similarity of a source sentence to each of the sentences",
        openapi_extra=body(s.SimilarityRequest),
        responses=errors_doc(s.TEIError, 400, 401, 413, 422, 429, 503),
    )

    async def tokenize(request: Request) -> Response:
        req = await parse(request, s.TokenizeRequest)
        texts = [req.inputs] if isinstance(req.inputs, str) else list(req.inputs)
        ctx.embedder.check_texts(texts, "inputs")
        texts = ctx.embedder.with_prompt(texts, req.prompt_name)
        details = await anyio.to_thread.run_sync(ctx.embedder.token_details, texts, req.add_special_tokens)
        return json_response(details)

    table.add(
        "/tokenize",
        tokenize,
        "POST",
        response_model=list[list[s.SimpleToken]],
        summary="The tokens of each input",
        openapi_extra=body(s.TokenizeRequest),
        responses=errors_doc(s.TEIError, 400, 401, 413, 422, 429, 503),
    )

    async def info(_: Request) -> Response:
        enc = ctx.served.encoder
        idx = (
            None
            if ctx.index is None
            else {
                "backend": str(ctx.index.backend),
                "rows": int(ctx.index.count),
                "dimension": int(ctx.index.dimension or 0),
                "kind": str(ctx.index.kind),
                "metric": str(ctx.index.metric),
            }
        )
        content = {
            "model_id": str(ctx.served.folder),
            "served_model_names": list(ctx.names),
            "model_type": {"embedding": {"pooling": "sentence-transformers"}},
            "dimension": enc.dimension,
            "max_input_length": enc.max_seq_length,
            "similarity_fn_name": enc.similarity_fn_name,
            "backend": ctx.served.backend,
            "precision": ctx.served.precision,
            "max_concurrent_requests": ctx.config.max_concurrent_requests,
            "max_batch_tokens": ctx.config.max_batch_tokens,
            "max_batch_requests": ctx.config.max_batch_requests,
            "max_client_batch_size": ctx.config.max_client_batch_size,
            "payload_limit": ctx.config.payload_limit,
            "max_input_chars": ctx.config.max_input_chars,
            "auto_truncate": ctx.config.auto_truncate,
            "index": idx,
            "search": _search_info(ctx.index),
            "version": __version__,
        }
        return json_response(content)

    table.add("/info", info, "GET", response_model=s.Info, responses=errors_doc(s.TEIError, 401, 429, 503))


def _search_info(index: Any) -> dict[str, Any] | None:
    """/v1/search's modes over ``index``: all three with a lexical part (any backend), else dense."""
    if index is None:
        return None
    lexical = bool(getattr(index, "has_lexical", False))
    modes = list(SearchMode) if lexical else [SearchMode.DENSE]
    return {
        "modes": [m.value for m in modes],
        "default_mode": plan_search(index, k=1).mode.value,
        "has_lexical": lexical,
        "fusion_alpha": index.fusion_alpha if index.backend == "memory" else None,
    }
