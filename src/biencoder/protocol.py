"""The contract every runtime answers: the evaluators, the index and the server depend on it alone."""

from __future__ import annotations

from collections.abc import Sequence
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
