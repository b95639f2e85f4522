"""Schemathesis against the app's own /openapi.json, in-process over ASGI, lifespan running.

Every operation of the document gets generated requests, valid ones (positive mode) and
invalid ones (negative mode); each must be answered, never with a 5xx, with a status, a
content type and a body that the document declares. Run with ``-s`` to see how many cases ran.

The cases are drawn with hypothesis from ``APIOperation.as_strategy`` rather than through
``schemathesis.pytest.from_fixture``: its pytest plugin sets ``request.node._nodeid``, which
pytest 9 no longer has (AttributeError before any case runs).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = 100  # per operation and generation mode
# Not positive_data_acceptance: the document does not state the server's value constraints
# (non-empty texts and lists, `dimensions` in 1..dim, known prompt names, at most
# max_client_batch_size texts), and `dimensions: 5.0` is a JSON Schema integer that the strict
# model refuses; so schema-valid requests may rightly get a 422.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Every operation /openapi.json documents; test_every_operation_is_fuzzed keeps the list honest.
OPERATIONS = [
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("POST", "/v1/search"),
    ("POST", "/embed"),
    ("POST", "/similarity"),
    ("POST", "/"),
    ("POST", "/tokenize"),
    ("POST", "/decode"),
    ("POST", "/embed_all"),
    ("GET", "/info"),
    ("GET", "/"),
    ("GET", "/health"),
    ("GET", "/metrics"),
]
# Negative cases need something to break: only the POST routes take input (a JSON body).
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or method == "POST"
]

# Cases that ran, by operation and mode, and the statuses they got; printed at the end.
RAN: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    by_op = ", ".join(f"{op}: {n}" for op, n in RAN.items())
    by_status = ", ".join(f"{code}: {n}" for code, n in sorted(STATUSES.items()))
    print(f"\nfuzz: {sum(RAN.values())} cases in {elapsed:.1f} s; statuses {by_status}\n  {by_op}")


@pytest.fixture()
def api_schema(tiny_onnx: Path) -> Iterator[Any]:
    """The app built as `tiny_client` builds it, with its lifespan (the batcher) running.

    One app per test: schemathesis' pytest plugin ends every ASGI lifespan after each test
    (``pytest_runtest_teardown``), and the app's batcher does not start twice.
    """
    from schemathesis.python.asgi import shutdown_lifespans

    from biencoder.serve.app import create_app
    from biencoder.serve.config import ServeConfig
    from biencoder.serve.model import load_served_model

    app = create_app(
        load_served_model(str(tiny_onnx)), ServeConfig(model=str(tiny_onnx), served_model_names=("tiny",))
    )
    # from_asgi enters schemathesis' ASGI client, which runs the lifespan startup once for this
    # app (keyed by the app); it stays up for every case, and is shut down at the end.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    assert app.state.batcher.alive, "the lifespan did not start the inference worker"
    yield schema
    shutdown_lifespans()
    assert not app.state.batcher.alive, "the lifespan shutdown did not stop the inference worker"


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    documented = sorted((op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations())
    assert documented == sorted(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_openapi_conformance(api_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]
    key = f"{method} {path} {mode.value}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        RAN[key] += 1
        response = case.call(timeout=30)
        STATUSES[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    check()
