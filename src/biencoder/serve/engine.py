"""Embedding requests end to end, apart from HTTP: check the texts, tokenise, batch, post-process.

Routes call :meth:`Embedder.embed`; it validates the inputs (count, empty, length), tokenises
off the inference worker (large requests in a thread), queues the tokens on the batcher, waits
for the rows while watching for the client going away, then cuts dimensions and normalises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from numpy.typing import NDArray

from biencoder.protocol import TokenBatch, Tokens
from biencoder.serve.batcher import Batcher, BatcherClosed
from biencoder.serve.config import ServeConfig
from biencoder.serve.errors import APIError
from biencoder.serve.metrics import Metrics
from biencoder.serve.model import ServedModel
from biencoder.serve.schemas import TruncationDirection
from biencoder.similarity import normalize as l2_normalize

logger = logging.getLogger(__name__)

# Requests with more characters than this are tokenised in a worker thread, not on the loop.
_THREAD_TOKENIZE_CHARS = 8_000

Receive = Callable[[], Awaitable[Any]]


class ClientDisconnected(Exception):
    """The client closed the connection before its embeddings were ready."""


@dataclass(frozen=True, slots=True)
class Embedded:
    """Embeddings of one request and what they cost."""

    vectors: NDArray[np.float32]  # [n, d]
    truncated: NDArray[np.bool_]  # [n]
    tokens: int  # real tokens, special tokens included, after truncation
    characters: int
    tokenize_seconds: float
    queue_seconds: float
    inference_seconds: float
    started: float  # perf_counter at the request's start

    @property
    def num_truncated(self) -> int:
        return int(self.truncated.sum())

    def headers(self) -> dict[str, str]:
        """TEI's timing headers (milliseconds) and the truncation count."""
        total = time.perf_counter() - self.started
        return {
            "x-truncated-inputs": str(self.num_truncated),
            "x-compute-tokens": str(self.tokens),
            "x-compute-characters": str(self.characters),
            "x-tokenization-time": _ms(self.tokenize_seconds),
            "x-queue-time": _ms(self.queue_seconds),
            "x-inference-time": _ms(self.inference_seconds),
            "x-total-time": _ms(total),
        }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


class Embedder:
    """The served model behind the batcher, with the server's input limits."""

    def __init__(self, served: ServedModel, batcher: Batcher, config: ServeConfig, metrics: Metrics) -> None:
        self.served = served
        self.encoder = served.encoder
        self.batcher = batcher
        self.config = config
        self.metrics = metrics
        self._untruncated: Any = None
        self._left_truncating: Any = None

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    # -- inputs ----------------------------------------------------------------------------------

    def check_texts(self, texts: Sequence[str], param: str) -> None:
        if not texts:
            raise APIError(422, f"`{param}` must not be empty: give at least one text", param=param)
        limit = self.config.max_client_batch_size
        if len(texts) > limit:
            raise APIError(
                422,
                f"`{param}` holds {len(texts)} texts; at most {limit} are allowed per request",
                param=param,
                code="too_many_inputs",
            )
        cap = self.config.max_input_chars
        for i, text in enumerate(texts):
            if not text:
                raise APIError(
                    422, f"`{param}[{i}]` is an empty string; every text must be non-empty", param=param
                )
            if len(text) > cap:
                raise APIError(
                    422,
                    f"`{param}[{i}]` has {len(text)} characters; at most {cap} are allowed",
                    param=param,
                    code="input_too_long",
                )

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and not 0 < dimensions <= self.dimension:
            raise APIError(
                422,
                f"`dimensions` must lie in 1..{self.dimension} for this model, got {dimensions}",
                param="dimensions",
            )

    def with_prompt(self, texts: list[str], prompt_name: str | None) -> list[str]:
        if prompt_name is None:
            return texts
        prompts = self.served.prompts
        if prompt_name not in prompts:
            known = ", ".join(sorted(prompts)) or "none"
            raise APIError(
                422, f"unknown prompt_name {prompt_name!r}; the model's prompts: {known}", param="prompt_name"
            )
        prefix = prompts[prompt_name]
        return [prefix + t for t in texts]

    # -- embedding -------------------------------------------------------------------------------

    async def embed(
        self,
        texts: list[str],
        receive: Receive | None,
        *,
        normalize: bool,
        dimensions: int | None = None,
        truncate: bool = True,
        direction: TruncationDirection = TruncationDirection.RIGHT,
        param: str = "input",
    ) -> Embedded:
        """Embed ``texts`` (already checked) through the batcher; rows cut and normalised as asked."""
        started = time.perf_counter()
        characters = sum(len(t) for t in texts)
        if characters > _THREAD_TOKENIZE_CHARS:
            tokens = await anyio.to_thread.run_sync(self._tokenize, texts, direction)
        else:
            tokens = self._tokenize(texts, direction)
        tokenized = time.perf_counter()
        truncated = np.asarray(tokens.truncated, dtype=bool)
        if not truncate and truncated.any():
            raise self._too_long(texts, truncated, param)
        try:
            job = self.batcher.submit(tokens)
        except BatcherClosed:
            raise APIError(503, "the server is shutting down; retry on another replica") from None
        self.metrics.queue_depth.set(self.batcher.queued_texts)
        rows = await self._wait(job, receive)
        self.metrics.queue_seconds.observe(job.queue_seconds)
        self.metrics.queue_depth.set(self.batcher.queued_texts)
        if dimensions is not None and dimensions < rows.shape[1]:
            rows = rows[:, :dimensions]
        if normalize:
            rows = l2_normalize(rows)
        n_tokens = _count_tokens(tokens)
        self.metrics.inputs.inc(len(texts))
        self.metrics.input_tokens.inc(n_tokens)
        if truncated.any():
            self.metrics.truncated.inc(int(truncated.sum()))
        return Embedded(
            vectors=np.ascontiguousarray(rows, dtype=np.float32),
            truncated=truncated,
            tokens=n_tokens,
            characters=characters,
            tokenize_seconds=tokenized - started,
            queue_seconds=job.queue_seconds,
            inference_seconds=job.inference_seconds,
            started=started,
        )

    def _tokenize(self, texts: list[str], direction: TruncationDirection) -> TokenBatch:
        """The encoder's own tokens; with ``direction`` left, long rows keep their end instead."""
        tokens = self.encoder.tokenize_texts(texts)
        cut = np.flatnonzero(np.asarray(tokens.truncated, dtype=bool))
        if direction is TruncationDirection.RIGHT or not len(cut):
            return tokens
        if self._left_truncating is None:
            from tokenizers import Tokenizer

            left = Tokenizer.from_str(self.encoder.backend_tokenizer.to_str())
            left.enable_truncation(max_length=self.encoder.max_seq_length, direction="left")
            self._left_truncating = left
        long_texts = [texts[i] for i in cut]
        if _lowercases(self.encoder):  # as the runtime does before its tokenizer
            long_texts = [t.lower() for t in long_texts]
        ids, type_ids = list(tokens.ids), list(tokens.type_ids)
        for i, enc in zip(cut, self._left_truncating.encode_batch(long_texts), strict=True):
            ids[i], type_ids[i] = enc.ids, enc.type_ids
        return Tokens(ids, type_ids, np.asarray(tokens.truncated, dtype=bool))

    async def _wait(self, job: Any, receive: Receive | None) -> NDArray[np.float32]:
        """The job's rows; if the client disconnects first, the job is dropped from the queue."""
        if receive is None:
            return await job.future
        watcher = asyncio.ensure_future(_disconnected(receive))

        def client_gone(w: asyncio.Future[None]) -> None:
            if not w.cancelled():
                self.batcher.cancel(job)

        watcher.add_done_callback(client_gone)
        try:
            return await job.future
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled():  # the client went away, not the server
                self.metrics.dropped.inc()
                raise ClientDisconnected from None
            raise
        finally:
            watcher.cancel()

    def _too_long(self, texts: list[str], truncated: NDArray[np.bool_], param: str) -> APIError:
        i = int(np.flatnonzero(truncated)[0])
        if self._untruncated is None:
            from tokenizers import Tokenizer

            self._untruncated = Tokenizer.from_str(self.encoder.backend_tokenizer.to_str())
            self._untruncated.no_truncation()
        count = len(self._untruncated.encode(texts[i]).ids)
        limit = self.encoder.max_seq_length
        return APIError(
            413,
            f"`{param}[{i}]` has {count} tokens, over the model's limit of {limit}; "
            "shorten it or send `truncate: true`",
            param=param,
            code="input_too_long",
        )

    # -- tokens ----------------------------------------------------------------------------------

    def decode(self, ids: list[list[int]], skip_special_tokens: bool, batch: bool) -> list[str]:
        """TEI /decode: each row of token ids back to text; 422 for an id outside the vocabulary."""
        tokenizer = self.encoder.backend_tokenizer
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        for i, row in enumerate(ids):
            bad = next((t for t in row if not 0 <= t < size), None)
            if bad is not None:
                where = f"ids[{i}]" if batch else "ids"
                raise APIError(
                    422, f"`{where}` holds the id {bad}, outside the vocabulary (0..{size - 1})", param="ids"
                )
        return list(tokenizer.decode_batch(ids, skip_special_tokens=skip_special_tokens))

    def token_details(self, texts: list[str], add_special_tokens: bool) -> list[list[dict[str, Any]]]:
        """TEI /tokenize: each text's tokens with id, text, special flag and character offsets."""
        tokenizer = self.encoder.backend_tokenizer
        out = []
        for text, enc in zip(
            texts, tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens), strict=True
        ):
            items = []
            for tid, tok, special, (start, stop) in zip(
                enc.ids, enc.tokens, enc.special_tokens_mask, enc.offsets, strict=True
            ):
                is_special = bool(special)
                items.append(
                    {
                        "id": int(tid),
                        "text": tok if is_special else text[start:stop],
                        "special": is_special,
                        "start": None if is_special else int(start),
                        "stop": None if is_special else int(stop),
                    }
                )
            out.append(items)
        return out


def _lowercases(encoder: Any) -> bool:
    """Whether the runtime lower-cases texts before its tokenizer (``do_lower_case`` of the model's
    ``sentence_bert_config.json``): the ONNX runtime keeps it on its tokenizer, torch on its
    Transformer module."""
    return any(
        getattr(getattr(encoder, holder, None), "do_lower_case", False) is True
        for holder in ("tokenizer", "transformer")
    )


def _count_tokens(tokens: TokenBatch) -> int:
    return sum(len(r) for r in tokens.ids)


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has disconnected (the body was already read)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return
