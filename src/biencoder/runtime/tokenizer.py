"""Tokenisation without torch or transformers: the Rust tokenizer read from ``tokenizer.json``.

Gives the same ids as ``biencoder.modules.Transformer`` (and so as sentence-transformers): the
same truncation length (``sentence_bert_config.json``'s ``max_seq_length``, else the tokenizer's
``model_max_length``, capped at the model's ``max_position_embeddings``), the same lower-casing
flag, the same padding id and side. Tests compare the two on real text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from biencoder.data.texts import read_json_object
from biencoder.protocol import TokenBatch, Tokens

logger = logging.getLogger(__name__)

ST_CONFIG = "sentence_bert_config.json"
# Up to this many texts are encoded one by one: encode_batch's thread pool only pays off beyond.
_SERIAL_TEXTS = 4
# transformers writes this sentinel for "no limit" (int(1e30)).
_VERY_LARGE = 10**20


class ModelFolderError(ValueError):
    """A model folder whose files the ONNX runtime cannot read (missing, malformed, unsupported)."""


def read_json(file: Path, required: bool = False) -> dict[str, Any]:
    """A JSON object from ``file``; {} when it is absent and not required."""
    if not file.is_file():
        if required:
            raise ModelFolderError(f"{file} is missing")
        return {}
    return read_json_object(file, ModelFolderError)


@dataclass(frozen=True, slots=True)
class Batch:
    """Padded int64 model inputs for one batch, [b, width] each."""

    input_ids: NDArray[np.int64]
    attention_mask: NDArray[np.int64]
    token_type_ids: NDArray[np.int64]


class TextTokenizer:
    """Texts -> token ids, as the model folder's Hugging Face fast tokenizer produces them."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_seq_length: int,
        do_lower_case: bool = False,
        pad_id: int = 0,
        padding_side: str = "right",
    ) -> None:
        if max_seq_length <= 0:
            raise ValueError(f"max_seq_length must be positive, got {max_seq_length}")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case
        self.pad_id = pad_id
        self.padding_side = padding_side
        self._tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_seq_length, strategy="longest_first", direction="right")

    @classmethod
    def load(cls, folder: str | Path) -> TextTokenizer:
        """Read ``tokenizer.json``, ``tokenizer_config.json``, ``sentence_bert_config.json`` and
        ``config.json`` from a sentence-transformers model folder."""
        folder = Path(folder)
        file = folder / "tokenizer.json"
        if not file.is_file():
            raise ModelFolderError(
                f"{file} is missing: the torch-free runtime needs a fast tokenizer saved as tokenizer.json "
                "(load the model with SentenceEncoder once and save it to write one)"
            )
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as exc:  # the Rust side raises a bare Exception with the serde message
            raise ModelFolderError(f"{file}: not a tokenizers file ({exc})") from None
        tok_config = read_json(folder / "tokenizer_config.json")
        st_config = read_json(folder / ST_CONFIG)
        model_config = read_json(folder / "config.json")
        return cls(
            tokenizer,
            max_seq_length=_max_seq_length(st_config, tok_config, model_config, folder),
            do_lower_case=bool(st_config.get("do_lower_case", False)),
            pad_id=_pad_id(tokenizer, tok_config),
            padding_side=str(tok_config.get("padding_side", "right")),
        )

    @property
    def backend(self) -> Tokenizer:
        """The Rust tokenizer, set to truncate at ``max_seq_length`` without padding."""
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        """Unpadded ids with special tokens, cut at ``max_seq_length``."""
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        if len(texts) <= _SERIAL_TEXTS:  # no thread-pool hand-off (and GIL release) for a few texts
            encodings = [self._tokenizer.encode(t, add_special_tokens=True) for t in texts]
        else:
            encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return Tokens(
            ids=[e.ids for e in encodings],
            type_ids=[e.type_ids for e in encodings],
            truncated=np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool, count=len(encodings)),
        )

    def collate(self, tokens: TokenBatch, rows: Sequence[int] | NDArray[np.int64]) -> Batch:
        """Pad the chosen rows to the longest of them."""
        width = max((len(tokens.ids[i]) for i in rows), default=0)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        left = self.padding_side == "left"
        for r, i in enumerate(rows):
            n = len(tokens.ids[i])
            sl = slice(width - n, width) if left else slice(0, n)
            ids[r, sl] = tokens.ids[i]
            mask[r, sl] = 1
            types[r, sl] = tokens.type_ids[i]
        return Batch(ids, mask, types)


def _max_seq_length(st: dict[str, Any], tok: dict[str, Any], model: dict[str, Any], folder: Path) -> int:
    limit = model.get("max_position_embeddings")
    value = st.get("max_seq_length")
    if value is None:
        model_max = tok.get("model_max_length")
        if not isinstance(model_max, int) or model_max >= _VERY_LARGE:
            model_max = None
        candidates = [v for v in (model_max, limit) if isinstance(v, int)]
        if not candidates:
            raise ModelFolderError(
                f"{folder}: no max_seq_length in {ST_CONFIG}, no model_max_length in tokenizer_config.json "
                "and no max_position_embeddings in config.json"
            )
        value = min(candidates)
    if not isinstance(value, int) or value <= 0:
        raise ModelFolderError(
            f"{folder / ST_CONFIG}: max_seq_length must be a positive integer, got {value!r}"
        )
    if isinstance(limit, int) and value > limit:
        logger.warning("max_seq_length %d exceeds the model's %d positions; capped", value, limit)
        value = limit
    return value


def _pad_id(tokenizer: Tokenizer, tok_config: dict[str, Any]) -> int:
    pad = tok_config.get("pad_token")
    if isinstance(pad, dict):  # AddedToken serialised as a dict
        pad = pad.get("content")
    if isinstance(pad, str):
        pad_id = tokenizer.token_to_id(pad)
        if pad_id is not None:
            return int(pad_id)
    padding = tokenizer.padding
    if padding is not None:
        return int(padding["pad_id"])
    return 0
