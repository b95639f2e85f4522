"""SentenceEncoder: a chain of modules (Transformer -> Pooling -> [Dense] -> [Normalize]) in PyTorch.

Loads and saves the sentence-transformers folder layout, and encodes exactly as
``SentenceTransformer.encode`` does (same tokens, same maths), within float rounding.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from biencoder import similarity as sim
from biencoder.atomic import atomic_dir
from biencoder.batching import encode_in_batches
from biencoder.modules import Dense, Normalize, Pooling, Transformer
from biencoder.modules.errors import ModelFolderError
from biencoder.modules.transformer import TokenizedTexts
from biencoder.protocol import TokenBatch, check_texts
from biencoder.resolve import resolve_model_path

logger = logging.getLogger(__name__)

_MODULE_TYPES: dict[str, Any] = {
    "Transformer": Transformer,
    "Pooling": Pooling,
    "Dense": Dense,
    "Normalize": Normalize,
}
_SAVE_TYPES = {cls: f"sentence_transformers.models.{name}" for name, cls in _MODULE_TYPES.items()}


@dataclass(frozen=True, slots=True)
class EncodeResult:
    """Embeddings and what happened on the way: which inputs were cut at max_seq_length."""

    embeddings: NDArray[np.float32]  # [n, dim]
    truncated: NDArray[np.bool_]  # [n]

    @property
    def num_truncated(self) -> int:
        return int(self.truncated.sum())


class SentenceEncoder(nn.Module):
    """Texts -> float32 vectors [n, dim], with the model's similarity function."""

    def __init__(self, modules: Sequence[nn.Module], similarity_fn_name: str = "cosine") -> None:
        super().__init__()
        if not modules or not isinstance(modules[0], Transformer):
            raise ValueError("the first module must be a Transformer")
        self.layers = nn.ModuleList(modules)
        self.similarity_function = sim.SimilarityFunction.parse(similarity_fn_name)
        self.prompts: dict[str, str] = {}
        self.eval()

    # -- properties ------------------------------------------------------------------------------

    @property
    def transformer(self) -> Transformer:
        first = self.layers[0]
        assert isinstance(first, Transformer)  # guaranteed by __init__
        return first

    @property
    def max_seq_length(self) -> int:
        return self.transformer.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.transformer.max_seq_length = value

    @property
    def dimension(self) -> int:
        dim = self.transformer.dimension
        for layer in self.layers[1:]:
            dim = getattr(layer, "output_dimension", dim)
        return dim

    @property
    def similarity_fn_name(self) -> str:
        return self.similarity_function.value

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def normalizes(self) -> bool:
        return isinstance(self.layers[-1], Normalize)

    @property
    def backend_tokenizer(self) -> Any:
        """The truncating Rust tokenizer (``tokenizers.Tokenizer``)."""
        return self.transformer.backend

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, features: dict[str, Tensor], skip_normalize: bool = False) -> dict[str, Tensor]:
        layers = list(self.layers)
        if skip_normalize and self.normalizes:
            layers = layers[:-1]
        for layer in layers:
            features = layer(features)
        return features

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return self.transformer.tokenize(texts)

    # -- encode ----------------------------------------------------------------------------------

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress: bool | None = None,
        prompt: str | None = None,
    ) -> NDArray[np.float32]:
        """Embed texts: [n, dim] float32 for a list, [dim] for a single string.

        ``normalize``: None keeps the model's own pipeline; True L2-normalises the output;
        False skips a trailing Normalize module. ``prompt`` is prepended to every text.
        """
        single = isinstance(texts, str)
        result = self.encode_with_stats(texts, batch_size, normalize, show_progress, prompt)
        if result.num_truncated:
            logger.info(
                "%d of %d inputs were truncated to %d tokens",
                result.num_truncated,
                len(result.truncated),
                self.max_seq_length,
            )
        return result.embeddings[0] if single else result.embeddings

    @torch.inference_mode()
    def encode_with_stats(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress: bool | None = None,
        prompt: str | None = None,
    ) -> EncodeResult:
        """As ``encode``, always [n, dim], plus which inputs were truncated at max_seq_length."""
        items, _ = check_texts(texts)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if prompt:
            items = [prompt + t for t in items]
        if not items:
            return EncodeResult(np.zeros((0, self.dimension), np.float32), np.zeros(0, bool))
        tokens = self.transformer.tokenize_unpadded(items)
        prompt_length = self._prompt_length(prompt) if prompt else None
        out = self._encode_tokens(tokens, batch_size, normalize, show_progress, prompt_length)
        return EncodeResult(out, tokens.truncated)

    def tokenize_texts(self, texts: Sequence[str]) -> TokenizedTexts:
        """Unpadded ids with special tokens, cut at ``max_seq_length`` (no model call)."""
        return self.transformer.tokenize_unpadded(texts)

    @torch.inference_mode()
    def encode_tokens(
        self,
        tokens: TokenBatch,
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress: bool | None = None,
    ) -> NDArray[np.float32]:
        """[n, dim] embeddings of already tokenised texts (``tokenize_texts``), length-sorted batches."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return self._encode_tokens(tokens, batch_size, normalize, show_progress, None)

    def _encode_tokens(
        self,
        tokens: TokenBatch,
        batch_size: int,
        normalize: bool | None,
        show_progress: bool | None,
        prompt_length: int | None,
    ) -> NDArray[np.float32]:
        if self.training:
            self.eval()
        device = self.device

        def run(rows: NDArray[np.int64]) -> NDArray[np.float32]:
            features = {k: v.to(device) for k, v in self.transformer.collate(tokens, rows).items()}
            if prompt_length is not None:
                features["prompt_length"] = torch.tensor(prompt_length)
            emb = self.forward(features, skip_normalize=normalize is False)["sentence_embedding"]
            if normalize:
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            return emb.float().cpu().numpy()

        return encode_in_batches(tokens, self.dimension, run, batch_size, show_progress=show_progress)

    def _prompt_length(self, prompt: str) -> int:
        # Tokens of the prompt without its closing special token, as sentence-transformers counts.
        return len(self.transformer.tokenize_unpadded([prompt]).ids[0]) - 1

    # -- similarity ------------------------------------------------------------------------------

    def similarity(self, a: Any, b: Any) -> NDArray[np.float32]:
        """[n, m] similarities with the model's function (cosine unless configured otherwise)."""
        return sim.similarity(a, b, self.similarity_function)

    def similarity_pairwise(self, a: Any, b: Any) -> NDArray[np.float32]:
        """[n] similarity of a[i] with b[i]."""
        return sim.similarity_pairwise(a, b, self.similarity_function)

    # -- persistence -----------------------------------------------------------------------------

    @classmethod
    def load(cls, name_or_path: str | Path, device: str | torch.device | None = None) -> SentenceEncoder:
        """Load a sentence-transformers folder (or a plain Hugging Face encoder, mean-pooled)."""
        path = resolve_model_path(name_or_path)
        modules_file = path / "modules.json"
        if modules_file.is_file():
            modules = cls._load_modules(path, modules_file)
        elif (path / "config.json").is_file():
            logger.warning("%s has no modules.json: loading it as a plain encoder with mean pooling", path)
            transformer = Transformer.load(path)
            modules = [transformer, Pooling(transformer.dimension, "mean")]
        else:
            raise ModelFolderError(
                f"{path} is not a model folder: it has neither modules.json nor config.json"
            )
        model = cls(modules, **cls._read_st_config(path))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return model.to(device)

    @staticmethod
    def _load_modules(path: Path, modules_file: Path) -> list[nn.Module]:
        try:
            entries = json.loads(modules_file.read_text())
        except json.JSONDecodeError as exc:
            raise ModelFolderError(f"{modules_file} is not valid JSON: {exc}") from None
        modules: list[nn.Module] = []
        for entry in sorted(entries, key=lambda e: e.get("idx", 0)):
            kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
            if kind not in _MODULE_TYPES:
                known = ", ".join(_MODULE_TYPES)
                raise ModelFolderError(
                    f"{modules_file}: unsupported module type {entry.get('type')!r}; supported: {known}"
                )
            modules.append(_MODULE_TYPES[kind].load(path / entry.get("path", "")))
        return modules

    @staticmethod
    def _read_st_config(path: Path) -> dict[str, Any]:
        file = path / "config_sentence_transformers.json"
        if not file.is_file():
            return {}
        try:
            cfg = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise ModelFolderError(f"{file} is not valid JSON: {exc}") from None
        name = cfg.get("similarity_fn_name")
        return {"similarity_fn_name": name} if name else {}

    def save(self, path: str | Path) -> None:
        """Write the sentence-transformers layout atomically (the old folder survives a crash)."""
        with atomic_dir(path) as tmp:
            self.save_to(tmp)

    def save_to(self, path: Path) -> None:
        """Write into an existing folder (non-atomic; ``save`` wraps this)."""
        entries = []
        for idx, layer in enumerate(self.layers):
            sub = "" if idx == 0 else f"{idx}_{type(layer).__name__}"
            cast(Any, layer).save(path / sub if sub else path)  # each module writes its own config
            entries.append({"idx": idx, "name": str(idx), "path": sub, "type": _SAVE_TYPES[type(layer)]})
        (path / "modules.json").write_text(json.dumps(entries, indent=2) + "\n")
        st_config = {
            "__version__": _versions(),
            "prompts": self.prompts,
            "default_prompt_name": None,
            "similarity_fn_name": self.similarity_fn_name,
        }
        (path / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n")

    def __repr__(self) -> str:
        lines = [f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)]
        return "SentenceEncoder(\n" + "\n".join(lines) + "\n)"


def _versions() -> dict[str, str]:
    import transformers

    from biencoder import __version__

    return {"biencoder": __version__, "transformers": transformers.__version__, "pytorch": torch.__version__}
