"""OnnxEncoder: the Encoder contract on onnxruntime, with numpy pooling. Never imports torch.

Loads the ``onnx/`` folder that ``biencoder export`` writes (the layout sentence-transformers'
ONNX backend reads), tokenises with the Rust tokenizer, runs the graph in length-sorted batches
and pools / normalises in numpy as the folder's modules say.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder import similarity as sim
from biencoder.batching import encode_in_batches
from biencoder.protocol import TokenBatch, check_texts
from biencoder.resolve import resolve_model_path
from biencoder.runtime.pooling import Head, load_head
from biencoder.runtime.tokenizer import ModelFolderError, TextTokenizer, Tokens, read_json

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
FILE_NAMES = {"fp32": "model.onnx", "int8": "model_qint8.onnx"}


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class RuntimeSettings:
    """How onnxruntime runs: threads, spinning, and how many texts go into one call.

    ``encode``'s ``batch_size`` bounds a call; within it a call takes at most ``run_rows`` texts
    and ``run_tokens`` padded tokens. On a 2-core AVX2/VNNI machine small calls measured fastest
    (int8 MiniLM, texts/s): mixed passages 101 at 32 rows, 109 at 8, 114 at 4; short queries 929
    at 32, 1,091 at 8, 1,005 at 4. The defaults give passages 4 rows (256 tokens each) and
    queries 8.
    """

    threads: int | None = None  # None: every available core
    spin: bool = True  # busy-wait between ops: lower latency, more CPU while idle-waiting
    run_rows: int = 8
    run_tokens: int = 1024

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive or None, got {self.threads}")
        if self.run_rows <= 0 or self.run_tokens <= 0:
            raise ValueError(
                f"run_rows and run_tokens must be positive, got {self.run_rows}, {self.run_tokens}"
            )

    @property
    def intra_op_threads(self) -> int:
        return self.threads or available_cores()


class OnnxEncoder:
    """Texts -> float32 vectors [n, dim] with onnxruntime; same contract as SentenceEncoder."""

    def __init__(
        self,
        session: Any,
        tokenizer: TextTokenizer,
        head: Head,
        similarity_fn_name: str = "cosine",
        path: Path | None = None,
        settings: RuntimeSettings | None = None,
    ) -> None:
        self.session = session
        self.settings = settings or RuntimeSettings()
        self.tokenizer = tokenizer
        self.head = head
        self.similarity_function = sim.SimilarityFunction.parse(similarity_fn_name)
        self.path = path
        self._inputs = {i.name for i in session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ModelFolderError(
                f"ONNX graph {path} lacks inputs {sorted(missing)}; it has {sorted(self._inputs)}"
            )

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        precision: str = "fp32",
        threads: int | None = None,
        file_name: str | None = None,
        spin: bool = True,
        settings: RuntimeSettings | None = None,
    ) -> OnnxEncoder:
        """Load ``<folder>/onnx/model.onnx`` (fp32) or ``onnx/model_qint8.onnx`` (int8).

        ``file_name`` picks another graph under ``onnx/`` (e.g. sentence-transformers'
        ``model_qint8_avx2.onnx``); ``threads`` is onnxruntime's intra-op thread count;
        ``settings`` gives every runtime setting at once (then ``threads`` and ``spin`` are ignored).
        """
        if precision not in FILE_NAMES:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(FILE_NAMES)}")
        settings = settings or RuntimeSettings(threads=threads, spin=spin)
        path = resolve_model_path(name_or_path)
        graph = path / ONNX_DIR / (file_name or FILE_NAMES[precision])
        if not graph.is_file():
            raise FileNotFoundError(
                f"{graph} not found: run `biencoder export --model {path}"
                f"{' --quantize int8' if precision == 'int8' else ''}` first"
            )
        session = make_session(graph, settings)
        st_config = read_json(path / "config_sentence_transformers.json")
        return cls(
            session,
            TextTokenizer.load(path),
            load_head(path),
            similarity_fn_name=str(st_config.get("similarity_fn_name") or "cosine"),
            path=graph,
            settings=settings,
        )

    # -- properties ------------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self.head.output_dimension

    @property
    def similarity_fn_name(self) -> str:
        return self.similarity_function.value

    @property
    def max_seq_length(self) -> int:
        return self.tokenizer.max_seq_length

    @property
    def normalizes(self) -> bool:
        """Whether the model's own pipeline L2-normalises its output."""
        return self.head.normalize

    @property
    def backend_tokenizer(self) -> Any:
        """The truncating Rust tokenizer (``tokenizers.Tokenizer``)."""
        return self.tokenizer.backend

    # -- encode ----------------------------------------------------------------------------------

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress: bool | None = None,
    ) -> NDArray[np.float32]:
        """[n, dim] float32 for a list ([0, dim] for []), [dim] for a single string.

        ``batch_size`` is the most texts one onnxruntime call takes; calls are smaller where the
        settings' ``run_rows`` / ``run_tokens`` say so (faster on CPU). ``normalize``: None keeps
        the model's pipeline, True L2-normalises, False skips a trailing Normalize module.
        """
        items, single = check_texts(texts)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not items:
            return np.empty((0, self.dimension), dtype=np.float32)
        tokens = self.tokenizer.tokenize(items)
        if tokens.truncated.any():
            logger.info(
                "%d of %d inputs were truncated to %d tokens",
                int(tokens.truncated.sum()),
                len(items),
                self.max_seq_length,
            )
        out = self.encode_tokens(tokens, batch_size, normalize, show_progress)
        return out[0] if single else out

    def tokenize_texts(self, texts: Sequence[str]) -> Tokens:
        """Unpadded ids with special tokens, cut at ``max_seq_length`` (no model call)."""
        return self.tokenizer.tokenize(texts)

    def encode_tokens(
        self,
        tokens: TokenBatch,
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress: bool | None = None,
    ) -> NDArray[np.float32]:
        """[n, dim] embeddings of already tokenised texts, run in length-sorted calls."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        rows_per_call = min(batch_size, self.settings.run_rows)
        run = functools.partial(self.forward_rows, tokens, normalize=normalize)
        return encode_in_batches(
            tokens, self.dimension, run, rows_per_call, self.settings.run_tokens, show_progress
        )

    def forward_rows(
        self, tokens: TokenBatch, rows: NDArray[np.int64], normalize: bool | None = None
    ) -> NDArray[np.float32]:
        """Sentence embeddings of the chosen rows of already tokenised texts."""
        batch = self.tokenizer.collate(tokens, rows)
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = batch.token_type_ids
        hidden = self.session.run(None, feeds)[0]  # [b, s, d]
        return self.head(hidden, batch.attention_mask, normalize)

    # -- similarity ------------------------------------------------------------------------------

    def similarity(self, a: Any, b: Any) -> NDArray[np.float32]:
        """[n, m] similarities with the model's function (cosine unless configured otherwise)."""
        return sim.similarity(a, b, self.similarity_function)

    def similarity_pairwise(self, a: Any, b: Any) -> NDArray[np.float32]:
        """[n] similarity of a[i] with b[i]."""
        return sim.similarity_pairwise(a, b, self.similarity_function)

    def __repr__(self) -> str:
        return f"OnnxEncoder({self.path}, dim={self.dimension}, max_seq_length={self.max_seq_length})"


def make_session(graph: Path, settings: RuntimeSettings) -> Any:
    """An onnxruntime CPU session for ``graph`` with the given thread settings."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("the ONNX runtime needs onnxruntime: pip install 'biencoder[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not settings.spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelFolderError(f"{graph}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
