"""Dynamic batching: the texts of concurrent requests share one model call.

Requests are tokenised on the event loop, then queued as jobs. One worker thread takes jobs in
arrival order while the batch stays within ``max_batch_tokens`` padded tokens (texts x longest)
and ``max_batch_requests`` requests, runs the model once on all their rows (the runtime sorts
them by length), and hands each job its rows back on its event loop. There is no wait window:
a batch is whatever queued while the previous one ran, so a lone request never waits and a
busy server fills its batches. Jobs whose client went away are skipped, not computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.protocol import TokenBatch, TokenEncoder, Tokens

logger = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one model batch held and cost, for the metrics."""

    texts: int
    requests: int
    padded_tokens: int
    seconds: float


@dataclass(eq=False, slots=True)
class Job:
    """One request's tokens on their way through the queue."""

    tokens: TokenBatch
    future: asyncio.Future[NDArray[np.float32]]
    loop: asyncio.AbstractEventLoop
    width: int  # longest row, tokens
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    finished: float = 0.0
    cancelled: bool = False

    @property
    def count(self) -> int:
        return len(self.tokens.ids)

    @property
    def queue_seconds(self) -> float:
        return max(0.0, self.started - self.enqueued)

    @property
    def inference_seconds(self) -> float:
        return max(0.0, self.finished - self.started)


class Batcher:
    """One inference worker thread fed by a queue of jobs; see the module docstring."""

    def __init__(
        self,
        encoder: TokenEncoder,
        *,
        max_batch_tokens: int = 16384,
        max_batch_requests: int | None = None,
        call_batch_size: int = 32,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        if max_batch_requests is not None and max_batch_requests < 1:
            raise ValueError(f"max_batch_requests must be positive or None, got {max_batch_requests}")
        self.encoder = encoder
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests or 1 << 30
        self.call_batch_size = call_batch_size
        self.on_batch = on_batch
        self._queue: deque[Job] = deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.busy_since: float | None = None  # perf_counter when the running batch began
        self.last_done = time.perf_counter()  # when a batch last finished (or the worker started)
        self.dropped = 0  # jobs skipped because their client went away

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the batcher is already started")
        self._thread = threading.Thread(target=self._run, name="biencoder-inference", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new jobs, finish the queued ones, stop the worker. True if it stopped in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, tokens: TokenBatch) -> Job:
        """Queue a request's tokens; await ``job.future`` for its [n, dim] rows (not normalised)."""
        loop = asyncio.get_running_loop()
        width = max((len(r) for r in tokens.ids), default=0)
        job = Job(tokens=tokens, future=loop.create_future(), loop=loop, width=width)
        with self._cond:
            if self._closing:
                raise BatcherClosed("the server is shutting down")
            self._queue.append(job)
            self._queued_texts += job.count
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The client went away: skip the job if it has not run yet."""
        job.cancelled = True
        if not job.future.done():
            job.future.cancel()

    # -- the worker ------------------------------------------------------------------------------

    def _take(self) -> list[Job] | None:
        """The next batch in arrival order, within the token and request budgets; None: stop."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            batch: list[Job] = []
            texts = width = 0
            while self._queue:
                job = self._queue[0]
                if job.cancelled:
                    self._queue.popleft()
                    self._queued_texts -= job.count
                    self.dropped += 1
                    continue
                new_width, new_texts = max(width, job.width), texts + job.count
                if batch and (
                    new_width * new_texts > self.max_batch_tokens or len(batch) >= self.max_batch_requests
                ):
                    break
                self._queue.popleft()
                self._queued_texts -= job.count
                batch.append(job)
                texts, width = new_texts, new_width
            if not batch and self._closing:
                return None
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._process(batch)

    def _process(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        self.busy_since = started
        for job in batch:
            job.started = started
        joined = Tokens.join([job.tokens for job in batch])
        error: BaseException | None = None
        out: NDArray[np.float32] | None = None
        try:
            out = self.encoder.encode_tokens(joined, batch_size=self.call_batch_size, normalize=False)
        except Exception as exc:  # handed to each request; the worker lives on
            logger.exception("model batch of %d texts failed", len(joined.ids))
            error = exc
        finished = time.perf_counter()
        self.busy_since = None
        self.last_done = finished
        results: list[tuple[Job, Any]] = []
        start = 0
        for job in batch:
            job.finished = finished
            rows = error if out is None else out[start : start + job.count]
            start += job.count
            results.append((job, rows))
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Any]]] = {}
        for job, rows in results:
            by_loop.setdefault(job.loop, []).append((job, rows))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its requests are gone
                loop.call_soon_threadsafe(_deliver, items)
        if self.on_batch is not None:
            widths = max(job.width for job in batch)
            self.on_batch(
                BatchStats(len(joined.ids), len(batch), widths * len(joined.ids), finished - started)
            )


def _deliver(items: list[tuple[Job, Any]]) -> None:
    for job, rows in items:
        if job.future.done():
            continue
        if isinstance(rows, BaseException):
            job.future.set_exception(rows)
        else:
            job.future.set_result(rows)
