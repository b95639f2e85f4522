"""The backbone: a Hugging Face encoder (BERT family) and its fast tokenizer.

Tokenisation goes straight to the Rust tokenizer (one call for the whole input, no padding),
so the encoder can sort by exact token length and report truncation; ``collate`` then pads a
batch. The ids equal those of the Hugging Face tokenizer called as sentence-transformers calls it
(``padding=True, truncation="longest_first", max_length=max_seq_length``): tests check this.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from biencoder.modules.errors import ModelFolderError
from biencoder.protocol import TokenBatch, Tokens

logger = logging.getLogger(__name__)

CONFIG_FILE = "sentence_bert_config.json"
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


# The unpadded ids of some texts and which were truncated (one type for both runtimes).
TokenizedTexts = Tokens


class Transformer(nn.Module):
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerFast | Any,
        max_seq_length: int | None = None,
        do_lower_case: bool = False,
    ) -> None:
        super().__init__()
        if not getattr(tokenizer, "is_fast", False):
            raise ModelFolderError(f"a fast (Rust) tokenizer is required, got {type(tokenizer).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.do_lower_case = do_lower_case
        limit = getattr(model.config, "max_position_embeddings", None)
        if max_seq_length is None:
            max_seq_length = min(tokenizer.model_max_length, limit or tokenizer.model_max_length)
        if max_seq_length <= 0:
            raise ValueError(f"max_seq_length must be positive, got {max_seq_length}")
        if limit is not None and max_seq_length > limit:
            logger.warning(
                "max_seq_length %d exceeds the model's %d positions; capped", max_seq_length, limit
            )
            max_seq_length = limit
        self._max_seq_length = max_seq_length
        self._input_names = set(tokenizer.model_input_names)
        self._backend = self._make_backend()

    # -- configuration -------------------------------------------------------------------------

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if value <= 0:
            raise ValueError(f"max_seq_length must be positive, got {value}")
        self._max_seq_length = value
        self._backend = self._make_backend()

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def backend(self) -> Tokenizer:
        """The Rust tokenizer, set to truncate at ``max_seq_length`` without padding."""
        return self._backend

    def _make_backend(self) -> Tokenizer:
        backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.enable_truncation(
            max_length=self._max_seq_length, strategy="longest_first", direction="right"
        )
        return backend

    # -- tokenisation ----------------------------------------------------------------------------

    def tokenize_unpadded(self, texts: Sequence[str]) -> TokenizedTexts:
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=True)
        return TokenizedTexts(
            ids=[e.ids for e in encodings],
            type_ids=[e.type_ids for e in encodings],
            truncated=np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool, count=len(encodings)),
        )

    def collate(
        self, tokens: TokenBatch, rows: Sequence[int] | np.ndarray | None = None
    ) -> dict[str, Tensor]:
        """Pad the chosen rows into int64 tensors [b, longest]."""
        rows = range(len(tokens.ids)) if rows is None else [int(i) for i in rows]
        ids = [tokens.ids[i] for i in rows]
        width = max((len(x) for x in ids), default=0)
        input_ids = np.full((len(ids), width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        type_ids = np.zeros((len(ids), width), dtype=np.int64)
        left = self.tokenizer.padding_side == "left"
        for r, i in enumerate(rows):
            n = len(tokens.ids[i])
            sl = slice(width - n, width) if left else slice(0, n)
            input_ids[r, sl] = tokens.ids[i]
            mask[r, sl] = 1
            type_ids[r, sl] = tokens.type_ids[i]
        features = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in self._input_names:
            features["token_type_ids"] = torch.from_numpy(type_ids)
        return features

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Padded model inputs for a batch of texts, as sentence-transformers' ``tokenize``."""
        return self.collate(self.tokenize_unpadded(texts))

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        output = self.model(**inputs, return_dict=True)
        features["token_embeddings"] = output.last_hidden_state  # [b, s, hidden]
        return features

    # -- persistence -----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"max_seq_length": self.max_seq_length, "do_lower_case": self.do_lower_case}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(str(path))
        (path / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path, **model_kwargs: Any) -> Transformer:
        if not (path / "config.json").is_file():
            raise ModelFolderError(f"no config.json in {path}: not a Hugging Face model folder")
        if not any((path / f).is_file() for f in _WEIGHT_FILES):
            bins = [p.name for p in path.glob("*.bin")]
            hint = f" (found {', '.join(bins)}: pickled weights are never loaded)" if bins else ""
            raise ModelFolderError(f"no model.safetensors in {path}{hint}")
        st_config: dict[str, Any] = {}
        if (path / CONFIG_FILE).is_file():
            try:
                st_config = json.loads((path / CONFIG_FILE).read_text())
            except json.JSONDecodeError as exc:
                raise ModelFolderError(f"{path / CONFIG_FILE} is not valid JSON: {exc}") from None
        config = AutoConfig.from_pretrained(str(path))
        model = AutoModel.from_pretrained(str(path), config=config, use_safetensors=True, **model_kwargs)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True)
        return cls(
            model,
            tokenizer,
            max_seq_length=st_config.get("max_seq_length"),
            do_lower_case=bool(st_config.get("do_lower_case", False)),
        )

    def __repr__(self) -> str:
        return f"Transformer({self.config()}) with Transformer model: {type(self.model).__name__}"
