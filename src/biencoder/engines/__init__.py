"""Existing engines that take biencoder past one process: Ray Data for encoding a sharded corpus.

(The vector databases, LanceDB and pgvector, are backends of :mod:`biencoder.stores`.)
"""
