"""Small shared helpers for the training tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.tiny import WORDS


def write_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` distinct (anchor, positive) rows made of the tiny model's vocabulary."""
    rows = []
    for i in range(n):
        a = " ".join(WORDS[(i * 7 + k * (seed + 3)) % len(WORDS)] for k in range(2 + i % 5))
        p = " ".join(WORDS[(i * 5 + k * (seed + 2)) % len(WORDS)] for k in range(3 + i % 7))
        rows.append({"anchor": f"{a} {i}", "positive": f"{p} {i}"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def without_dropout(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def build_tiny_with_vocab(folder: Path, seed: int = 0) -> Path:
    """tests/tiny.py's 2-layer model, but with its word vocabulary really loaded.

    Under transformers 5 ``BertTokenizerFast(vocab_file=...)`` ignores the file, so tests/tiny.py's
    tokenizer knows only the 5 special tokens and maps every word to [UNK]: all texts of one token
    length then embed identically, MNRL sits at log(batch) and its gradients are rounding noise.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from biencoder.encoder import SentenceEncoder
    from biencoder.modules import Normalize, Pooling, Transformer

    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,?!'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *(f"##{c}" for c in letters)]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True, model_max_length=64)
    if len(tokenizer) < len(WORDS):
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
    transformer = Transformer(BertModel(config).eval(), tokenizer, max_seq_length=24)
    SentenceEncoder([transformer, Pooling(32, "mean"), Normalize()]).save(folder)
    return folder
