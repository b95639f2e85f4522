"""A tiny BERT sentence encoder built in code: fast, offline unit tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from biencoder.encoder import SentenceEncoder
from biencoder.modules import Normalize, Pooling, Transformer

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "it",
    "are",
    "be",
    "this",
    "from",
    "at",
    "or",
    "an",
    "which",
    "not",
    "have",
    "has",
    "query",
    "passage",
    "what",
    "how",
    "why",
    "who",
    "when",
    "where",
    "does",
    "do",
    "can",
    "model",
    "vector",
    "search",
    "text",
    "sentence",
    "cat",
    "dog",
    "fish",
    "bird",
    "tree",
    "house",
    "car",
    "water",
    "fire",
    "earth",
    "air",
    "blue",
    "red",
    "green",
    "big",
    "small",
    "fast",
    "slow",
    "good",
    "bad",
]


def build_tiny_encoder(folder: Path, seed: int = 0, pooling: str = "mean", normalize: bool = True) -> Path:
    """Write a tiny sentence-transformers model (2 layers, hidden 32) to ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,?!'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *(f"##{c}" for c in letters)]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True, model_max_length=64)
    if len(tokenizer) < len(WORDS):  # transformers 5 ignores vocab_file=: guard against an all-[UNK] model
        raise RuntimeError(f"the tiny tokenizer holds {len(tokenizer)} tokens; its vocabulary was not loaded")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    model = BertModel(config).eval()
    transformer = Transformer(model, tokenizer, max_seq_length=24)
    modules: list[torch.nn.Module] = [transformer, Pooling(32, pooling)]
    if normalize:
        modules.append(Normalize())
    SentenceEncoder(modules).save(folder)
    return folder
