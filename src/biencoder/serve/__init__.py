"""The embedding server: OpenAI- and TEI-compatible HTTP, dynamic batching, search over an index.

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus-client, orjson). Depends on the
``TokenEncoder`` protocol and ``Index`` only.
"""

from __future__ import annotations

from biencoder.serve.config import ServeConfig

__all__ = ["ServeConfig"]
