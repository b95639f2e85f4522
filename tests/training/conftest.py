"""Training tests need a tiny model whose tokenizer tells words apart (see helpers.build_tiny_with_vocab)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.helpers import build_tiny_with_vocab


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_with_vocab(tmp_path_factory.mktemp("tiny-vocab") / "model")
