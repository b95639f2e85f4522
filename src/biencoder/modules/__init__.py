"""The modules a sentence-transformers folder chains: each reads and writes its own config."""

from biencoder.modules.dense import Dense
from biencoder.modules.normalize import Normalize
from biencoder.modules.pooling import Pooling, PoolingMode
from biencoder.modules.transformer import Transformer

__all__ = ["Dense", "Normalize", "Pooling", "PoolingMode", "Transformer"]
