"""The TEI-compatible routes: /embed, /similarity, POST / and /invocations, /tokenize, /decode,
/embed_all, /info.

``POST /`` (and SageMaker's ``/invocations``) is where TEI's own clients post: huggingface_hub's
InferenceClient given the server's URL, and through it LangChain's HuggingFaceEndpointEmbeddings.
TEI serves one task there, chosen at start (``/embed``, or ``/similarity`` with
``TASK=sentence-similarity``); here the body chooses: ``inputs`` as an object
(``source_sentence``, ``sentences``) is a similarity request, anything else an embedding request.
TEI's bodies are strict here: an option the route does not know is a 422 that names it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio
import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from biencoder import __version__
from biencoder.index.fusion import SearchMode
from biencoder.serve import schemas as s
from biencoder.serve.errors import APIError
from biencoder.serve.http import RouteTable, Service, errors_doc, json_response, parse, read_object, validate
from biencoder.serve.openapi import body
from biencoder.stores.contract import plan_search

_ERRORS = (400, 401, 413, 422, 429, 503)

EmbedHandler = Callable[[s.EmbedRequest, Request], Awaitable[Response]]
SimilarityHandler = Callable[[s.SimilarityRequest, Request], Awaitable[Response]]


def register(table: RouteTable, ctx: Service) -> None:
    embed, similarity = _embedding_routes(ctx)

    async def embed_route(request: Request) -> Response:
        return await embed(await parse(request, s.EmbedRequest), request)

    async def similarity_route(request: Request) -> Response:
        return await similarity(await parse(request, s.SimilarityRequest), request)

    async def root(request: Request) -> Response:
        data = await read_object(request)
        if isinstance(data.get("inputs"), dict):
            return await similarity(validate(data, s.SimilarityRequest), request)
        return await embed(validate(data, s.EmbedRequest), request)

    doc = {"responses": errors_doc(s.TEIError, *_ERRORS)}
    table.add(
        "/embed",
        embed_route,
        "POST",
        response_model=list[list[float]],
        summary="TEI-compatible embeddings",
        openapi_extra=body(s.EmbedRequest),
        **doc,
    )
    table.add(
        "/similarity",
        similarity_route,
        "POST",
        response_model=list[float],
        summary="Similarity of a source sentence to each of the sentences",
        openapi_extra=body(s.SimilarityRequest),
        **doc,
    )
    for path in ("/", "/invocations"):
        table.add(
            path,
            root,
            "POST",
            response_model=list[list[float]] | list[float],
            include_in_schema=path == "/",
            summary="TEI's root route (SageMaker: /invocations): embeddings, or similarities when "
            "`inputs` holds `source_sentence` and `sentences`",
            openapi_extra=body(s.EmbedRequest, s.SimilarityRequest),
            **doc,
        )
    _register_tokens(table, ctx)
    _register_embed_all(table)
    _register_info(table, ctx)


def _embedding_routes(ctx: Service) -> tuple[EmbedHandler, SimilarityHandler]:
    """The handlers of an embedding and of a similarity request, whichever route they came by."""

    def truncate_of(value: bool | None) -> bool:
        return ctx.config.auto_truncate if value is None else value

    async def embed(req: s.EmbedRequest, request: Request) -> Response:
        if req.encoding_format == "base64":
            raise APIError(
                422,
                "`encoding_format: base64` is not offered on the TEI routes, which answer JSON numbers; "
                "POST /v1/embeddings gives base64",
                param="encoding_format",
            )
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
            direction=req.truncation_direction,
            param="inputs",
        )
        return json_response(out.vectors, headers=out.headers())

    async def similarity(req: s.SimilarityRequest, request: Request) -> Response:
        options = _similarity_options(req)
        if not req.inputs.sentences:
            raise APIError(422, "`inputs.sentences` must not be empty", param="inputs")
        ctx.embedder.check_texts([req.inputs.source_sentence], "inputs.source_sentence")
        ctx.embedder.check_texts(req.inputs.sentences, "inputs.sentences")
        texts = [req.inputs.source_sentence, *req.inputs.sentences]
        texts = ctx.embedder.with_prompt(texts, options.prompt_name)
        out = await ctx.embedder.embed(
            texts,
            request.receive,
            normalize=ctx.served.encoder.normalizes,
            truncate=truncate_of(options.truncate),
            direction=options.truncation_direction,
            param="inputs",
        )
        scores = ctx.served.encoder.similarity(out.vectors[:1], out.vectors[1:])[0]
        return json_response(np.asarray(scores, dtype=np.float32), headers=out.headers())

    return embed, similarity


def _similarity_options(req: s.SimilarityRequest) -> s.SimilarityParameters:
    """TEI's ``parameters``, with the top-level ``truncate`` and ``prompt_name`` this server also
    takes; an option given in both places is refused."""
    options = req.parameters or s.SimilarityParameters()
    for name in ("truncate", "prompt_name"):
        value = getattr(req, name)
        if value is None:
            continue
        if getattr(options, name) is not None:
            raise APIError(
                422, f"`{name}` is given twice, at the top and in `parameters`; give it once", param=name
            )
        options = options.model_copy(update={name: value})
    return options


def _register_tokens(table: RouteTable, ctx: Service) -> None:
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
        responses=errors_doc(s.TEIError, *_ERRORS),
    )

    async def decode(request: Request) -> Response:
        req = await parse(request, s.DecodeRequest)
        batch = bool(req.ids) and isinstance(req.ids[0], list)
        rows = cast(list[list[int]], req.ids if batch else [req.ids])
        if not rows or not all(rows):
            raise APIError(422, "`ids` must not be empty: give the ids of at least one token", param="ids")
        limit = ctx.config.max_client_batch_size
        if len(rows) > limit:
            raise APIError(
                422, f"`ids` holds {len(rows)} rows; at most {limit} are allowed per request", param="ids"
            )
        texts = await anyio.to_thread.run_sync(ctx.embedder.decode, rows, req.skip_special_tokens, batch)
        return json_response(texts)

    table.add(
        "/decode",
        decode,
        "POST",
        response_model=list[str],
        summary="Token ids back to text",
        openapi_extra=body(s.DecodeRequest),
        responses=errors_doc(s.TEIError, *_ERRORS),
    )


def _register_embed_all(table: RouteTable) -> None:
    async def embed_all(request: Request) -> Response:
        await parse(request, s.EmbedAllRequest)
        raise APIError(
            424,
            "/embed_all (token embeddings before pooling) is not offered: the served runtime gives "
            "pooled sentence embeddings only; use /embed",
        )

    table.add(
        "/embed_all",
        embed_all,
        "POST",
        response_model=list[list[list[float]]],
        summary="TEI's token embeddings: not offered by this server (424 saying so)",
        openapi_extra=body(s.EmbedAllRequest),
        responses=errors_doc(s.TEIError, *_ERRORS, 424),
    )


def _register_info(table: RouteTable, ctx: Service) -> None:
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
    record = getattr(index, "fusion_record", None) if lexical else None
    return {
        "modes": [m.value for m in modes],
        "default_mode": plan_search(index, k=1).mode.value,
        "has_lexical": lexical,
        "fusion_alpha": record.alpha if record is not None else None,
        "fusion": fusion_info(record),
    }


def fusion_info(record: Any) -> dict[str, Any] | None:
    """The recorded fusion (a :class:`~biencoder.index.FusionRecord`) as /info shows it."""
    if record is None:
        return None
    evidence = dict(record.evidence or {})
    if record.source == "tuned":
        evidence.update(grid=list(record.grid), split=record.split, folds=record.folds, data=record.data)
        evidence["cv_score"] = record.cv_score
    return {
        "source": record.source,
        "fusion": record.fusion,
        "alpha": record.alpha,
        "normalization": record.normalization,
        "adaptive": record.adaptive,
        "reason": evidence.pop("reason", None),
        "evidence": evidence,
    }
