"""The contract every runtime answers: the evaluators, the index and the server depend on it alone.

``Encoder`` is texts -> vectors; ``TokenEncoder`` adds the split into tokenising and running the
model that the server's dynamic batcher needs. Both runtimes answer both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@runtime_checkable
class Encoder(Protocol):
    """Maps texts to float32 vectors [n, dim] and compares them."""

    @property
    def dimension(self) -> int: ...

    @property
    def similarity_fn_name(self) -> str: ...

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress: bool | None = None,
    ) -> NDArray[np.float32]: ...

    def similarity(self, a: Any, b: Any) -> NDArray[np.float32]: ...


class TokenBatch(Protocol):
    """Unpadded token ids of some texts and which of them were cut at max_seq_length."""

    @property
    def ids(self) -> list[list[int]]: ...

    @property
    def type_ids(self) -> list[list[int]]: ...

    @property
    def truncated(self) -> NDArray[np.bool_]: ...


@dataclass(frozen=True, slots=True)
class Tokens:
    """A plain TokenBatch: what a caller builds to join the tokens of several requests."""

    ids: list[list[int]]
    type_ids: list[list[int]]
    truncated: NDArray[np.bool_]

    @property
    def lengths(self) -> NDArray[np.int64]:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    @classmethod
    def join(cls, parts: Sequence[TokenBatch]) -> Tokens:
        """One batch of the rows of ``parts``, in order."""
        if len(parts) == 1 and isinstance(parts[0], Tokens):
            return parts[0]
        ids = [row for part in parts for row in part.ids]
        type_ids = [row for part in parts for row in part.type_ids]
        flags = [part.truncated for part in parts]
        return cls(ids, type_ids, np.concatenate(flags) if flags else np.zeros(0, dtype=bool))


@runtime_checkable
class TokenEncoder(Encoder, Protocol):
    """An Encoder whose tokenising and model steps can run apart (the server's dynamic batcher).

    ``tokenize_texts`` is cheap and may run on any thread; ``encode_tokens`` runs the model on
    the rows of one or many tokenised inputs, however they were joined.
    """

    @property
    def max_seq_length(self) -> int: ...

    @property
    def normalizes(self) -> bool: ...

    @property
    def backend_tokenizer(self) -> Any: ...  # the truncating ``tokenizers.Tokenizer``

    def tokenize_texts(self, texts: Sequence[str]) -> TokenBatch: ...

    def encode_tokens(
        self, tokens: TokenBatch, batch_size: int = 32, normalize: bool | None = None
    ) -> NDArray[np.float32]: ...


def check_texts(texts: object) -> tuple[list[str], bool]:
    """Validate encoder input: a string or a sequence of strings. Returns (list, was_single)."""
    if isinstance(texts, str):
        return [texts], True
    if texts is None or isinstance(texts, bytes | dict) or not isinstance(texts, Sequence | np.ndarray):
        raise TypeError(f"texts must be a string or a sequence of strings, got {type(texts).__name__}")
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return items, False
