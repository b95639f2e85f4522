"""The dynamic batcher on a fake encoder that records every model call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from biencoder.protocol import TokenEncoder
from biencoder.serve.batcher import Batcher, BatcherClosed, BatchStats
from tests.serve.helpers import RecordingEncoder


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_fake_answers_the_protocol() -> None:
    assert isinstance(RecordingEncoder(), TokenEncoder)


def test_concurrent_requests_share_a_batch_and_get_their_own_rows() -> None:
    enc = RecordingEncoder()
    stats: list[BatchStats] = []
    batcher = Batcher(enc, max_batch_tokens=10_000, on_batch=stats.append)
    batcher.start()
    enc.gate.clear()  # hold the worker so the queue fills

    async def main() -> list[Any]:
        first = batcher.submit(enc.tokenize_texts(["warm"]))  # taken alone while the worker waits
        await asyncio.sleep(0.05)
        jobs = [batcher.submit(enc.tokenize_texts(["x" * (i + 1)] * (i % 3 + 1))) for i in range(10)]
        enc.gate.set()
        await first.future
        return [await j.future for j in jobs]

    results = run(main())
    assert batcher.close(5)
    assert len(enc.calls) == 2  # the first request alone, then all ten together
    assert len(enc.calls[1]) == sum(i % 3 + 1 for i in range(10))
    for i, rows in enumerate(results):
        assert rows.shape == (i % 3 + 1, 2)
        assert (rows[:, 0] == i + 2).all()  # its own texts: i+1 characters -> i+2 ids
    assert stats[1].requests == 10 and stats[1].texts == len(enc.calls[1])


@pytest.mark.parametrize(
    ("limit", "budget", "expected"),
    [(None, 40, [1, 4, 4, 3]), (1, 10_000, [1] * 12), (5, 10_000, [1, 5, 5, 1])],
)
def test_token_budget_and_request_limit_split_batches(
    limit: int | None, budget: int, expected: list[int]
) -> None:
    enc = RecordingEncoder()
    batcher = Batcher(enc, max_batch_tokens=budget, max_batch_requests=limit)
    batcher.start()
    enc.gate.clear()

    async def main() -> None:
        first = batcher.submit(enc.tokenize_texts(["abcdefghi"]))
        await asyncio.sleep(0.05)
        jobs = [batcher.submit(enc.tokenize_texts(["abcdefghi"])) for _ in range(11)]  # 10 ids each
        enc.gate.set()
        await asyncio.gather(first.future, *(j.future for j in jobs))

    run(main())
    batcher.close(5)
    assert [len(c) for c in enc.calls] == expected


def test_one_request_over_the_budget_runs_alone() -> None:
    enc = RecordingEncoder()
    batcher = Batcher(enc, max_batch_tokens=8)
    batcher.start()

    async def main() -> Any:
        return await batcher.submit(enc.tokenize_texts(["abcdefghijkl"] * 5)).future

    assert run(main()).shape == (5, 2)
    batcher.close(5)
    assert [len(c) for c in enc.calls] == [5]


def test_cancelled_jobs_are_not_computed() -> None:
    enc = RecordingEncoder()
    batcher = Batcher(enc)
    batcher.start()
    enc.gate.clear()

    async def main() -> None:
        first = batcher.submit(enc.tokenize_texts(["a"]))
        await asyncio.sleep(0.05)
        gone = batcher.submit(enc.tokenize_texts(["bb", "bb"]))
        kept = batcher.submit(enc.tokenize_texts(["ccc"]))
        batcher.cancel(gone)
        enc.gate.set()
        await first.future
        assert (await kept.future).shape == (1, 2)
        assert gone.future.cancelled()

    run(main())
    batcher.close(5)
    assert enc.calls == [[[1, 0]], [[3, 0, 1, 2]]]
    assert batcher.dropped == 1


def test_a_failing_batch_fails_its_requests_and_the_worker_lives() -> None:
    enc = RecordingEncoder(fail=True)
    batcher = Batcher(enc)
    batcher.start()

    async def main() -> None:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(enc.tokenize_texts(["a"])).future
        enc.fail = False
        assert (await batcher.submit(enc.tokenize_texts(["a"])).future).shape == (1, 2)

    run(main())
    assert batcher.alive
    batcher.close(5)


def test_close_answers_the_queue_then_refuses() -> None:
    enc = RecordingEncoder(delay=0.02)
    batcher = Batcher(enc, max_batch_requests=1)
    batcher.start()

    async def main() -> None:
        jobs = [batcher.submit(enc.tokenize_texts(["a"])) for _ in range(5)]
        closed = asyncio.get_running_loop().run_in_executor(None, batcher.close, 5)
        results = [await j.future for j in jobs]
        assert len(results) == 5
        assert await closed
        with pytest.raises(BatcherClosed):
            batcher.submit(enc.tokenize_texts(["a"]))

    run(main())
    assert not batcher.alive and len(enc.calls) == 5


def test_health_sees_a_stuck_batch() -> None:
    enc = RecordingEncoder()
    batcher = Batcher(enc)
    batcher.start()
    enc.gate.clear()

    async def main() -> None:
        job = batcher.submit(enc.tokenize_texts(["a"]))
        await asyncio.sleep(0.1)
        assert batcher.busy_since is not None  # the worker is inside the model call
        enc.gate.set()
        await job.future
        assert batcher.busy_since is None

    run(main())
    batcher.close(5)


def test_arguments_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_tokens"):
        Batcher(RecordingEncoder(), max_batch_tokens=0)
    with pytest.raises(ValueError, match="max_batch_requests"):
        Batcher(RecordingEncoder(), max_batch_requests=0)
