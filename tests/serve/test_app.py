"""The app in-process: search over an index, health, metrics, info, the OpenAPI document, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biencoder.serve.config import ServeConfig
from tests.numerics import EMBEDDING_ATOL, assert_same_ranking, cosine_atol, dot_atol

CORPUS = [
    "the cat sat on the mat",
    "a dog runs in the park",
    "fish swim in the river by the house",
    "birds fly over the green trees",
    "what is a vector search model",
    "the small red house by the river",
]


@pytest.fixture()
def search_client(tiny_onnx: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from biencoder.index import Index
    from biencoder.serve.app import create_app
    from biencoder.serve.model import load_served_model

    served = load_served_model(str(tiny_onnx))
    index = Index(served.encoder.dimension)
    index.add([f"d{i}" for i in range(len(CORPUS))], served.encoder.encode(CORPUS), texts=CORPUS)
    index.save(tmp_path / "index")
    app = create_app(served, ServeConfig(model=str(tiny_onnx)), Index.load(tmp_path / "index"))
    with TestClient(app) as client:
        client.encoder = served.encoder  # type: ignore[attr-defined]
        client.index = index  # type: ignore[attr-defined]
        yield client


def test_search_equals_in_process_index_search(search_client) -> None:  # type: ignore[no-untyped-def]
    queries = ["a cat on a mat", "houses near rivers"]
    r = search_client.post("/v1/search", json={"queries": queries, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = search_client.index.search(search_client.encoder.encode(queries), 3)
    assert [d["query"] for d in body["data"]] == queries
    # The server's batcher may encode the queries in another batch: embeddings within the
    # contract, so each cosine within cosine_atol of the in-process one.
    atol = cosine_atol(EMBEDDING_ATOL, search_client.encoder.dimension)
    for i, item in enumerate(body["data"]):
        hits = item["hits"]
        assert_same_ranking(
            [h["id"] for h in hits], [h["score"] for h in hits], expected.ids[i], expected.scores[i], atol
        )
        assert [h["text"] for h in hits] == [CORPUS[int(h["id"][1:])] for h in hits]
    assert body["usage"]["prompt_tokens"] > 0 and body["object"] == "list"
    one = search_client.post("/v1/search", json={"query": queries[0], "k": 100}).json()
    assert len(one["data"]) == 1 and len(one["data"][0]["hits"]) == len(CORPUS)  # k capped at the corpus


def test_search_route_over_a_lancedb_store(tiny_onnx: Path, tmp_path: Path) -> None:
    """The route depends on the store contract only: a LanceDB folder serves like an Index."""
    pytest.importorskip("lancedb")
    from starlette.testclient import TestClient

    from biencoder.index import Index
    from biencoder.serve.app import create_app
    from biencoder.serve.model import load_served_model
    from biencoder.stores import open_store
    from biencoder.stores.lance import LanceStore

    served = load_served_model(str(tiny_onnx))
    vectors = served.encoder.encode(CORPUS)
    ids = [f"d{i}" for i in range(len(CORPUS))]
    LanceStore.create(tmp_path / "lance", dimension=served.encoder.dimension).add(ids, vectors, texts=CORPUS)
    reference = Index(served.encoder.dimension)
    reference.add(ids, vectors)
    app = create_app(served, ServeConfig(model=str(tiny_onnx)), open_store(tmp_path / "lance"))
    with TestClient(app) as client:
        body = client.post("/v1/search", json={"queries": ["a cat on a mat", "rivers"], "k": 3}).json()
        info = client.get("/info").json()
    want = reference.search(served.encoder.encode(["a cat on a mat", "rivers"]), 3)
    # the same query vectors, scored by LanceDB's kernel and by ours: a float32 dot product's error
    atol = max(1e-5, dot_atol(served.encoder.dimension))
    for i, item in enumerate(body["data"]):
        hits = item["hits"]
        assert_same_ranking(
            [h["id"] for h in hits], [h["score"] for h in hits], want.ids[i], want.scores[i], atol
        )
        assert [h["text"] for h in hits] == [CORPUS[int(h["id"][1:])] for h in hits]
    assert info["index"] == {
        "backend": "lancedb",
        "rows": 6,
        "dimension": served.encoder.dimension,
        "kind": "exact",
        "metric": "cosine",
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [({"k": 3}, "query"), ({"query": "a", "queries": ["b"]}, "query"), ({"query": "a", "k": 0}, "k"),
     ({"query": "a", "k": 10**6}, "k"), ({"queries": []}, "queries"), ({"query": ""}, "query")],
)  # fmt: skip
def test_search_refusals(search_client, body, param) -> None:  # type: ignore[no-untyped-def]
    r = search_client.post("/v1/search", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["param"] == param and r.json()["error"]["message"]


def test_info_health_metrics(search_client) -> None:  # type: ignore[no-untyped-def]
    info = search_client.get("/info").json()
    assert info["backend"] == "onnx" and info["precision"] == "fp32"
    assert info["dimension"] == search_client.encoder.dimension
    assert info["max_input_length"] == search_client.encoder.max_seq_length
    assert info["index"]["rows"] == len(CORPUS)
    assert search_client.get("/health").json() == {"status": "ok"}
    search_client.post("/embed", json={"inputs": ["one", "two " * 400]})
    text = search_client.get("/metrics").text
    for name in ("biencoder_requests_total", "biencoder_queue_duration_seconds_bucket",
                 "biencoder_inference_duration_seconds_bucket", "biencoder_batch_size_bucket",
                 "biencoder_batch_padded_tokens_bucket", "biencoder_queue_depth",
                 "biencoder_truncated_inputs_total 1.0", 'route="/embed",status="200"'):  # fmt: skip
        assert name in text, name


def test_health_reports_a_stuck_worker(tiny_client) -> None:  # type: ignore[no-untyped-def]
    import time

    batcher = tiny_client.app.state.batcher
    assert tiny_client.get("/health").status_code == 200
    batcher.busy_since = time.perf_counter() - 3600  # as if one batch had run for an hour
    r = tiny_client.get("/health")
    assert r.status_code == 503 and "one batch" in r.json()["detail"]
    for path in ("/", "/ping"):  # TEI's health answers: its error shape, the same reason
        r = tiny_client.get(path)
        assert r.status_code == 503 and r.json()["error_type"] == "Unhealthy", r.text
        assert "one batch" in r.json()["error"]
    batcher.busy_since = None
    idle_since = time.perf_counter() - 60
    batcher.last_done = idle_since  # idle for a minute: /health probes the model
    assert tiny_client.get("/health").status_code == 200
    assert batcher.last_done > idle_since  # the probe ran a batch (no wall-clock bound: machines vary)


def test_openapi_document_lists_every_route_with_its_bodies(tiny_client) -> None:  # type: ignore[no-untyped-def]
    doc = tiny_client.get("/openapi.json").json()
    for path in ("/v1/embeddings", "/v1/search", "/v1/models", "/embed", "/similarity", "/", "/tokenize",
                 "/decode", "/embed_all", "/info", "/health", "/metrics"):  # fmt: skip
        assert path in doc["paths"], path
    assert set(doc["paths"]["/"]) == {"get", "post"}
    schemas = doc["components"]["schemas"]
    names = ["EmbeddingRequest", "EmbeddingResponse", "EmbedRequest", "SimilarityRequest", "SimilarityInputs"]
    names += ["SimilarityParameters", "SearchRequest", "TokenizeRequest", "DecodeRequest", "EmbedAllRequest"]
    names += ["TruncationDirection", "OpenAIError", "TEIError"]
    for name in names:
        assert name in schemas, name
    body = doc["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/EmbeddingRequest"}
    root = doc["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert root == {"anyOf": [{"$ref": "#/components/schemas/EmbedRequest"},
                              {"$ref": "#/components/schemas/SimilarityRequest"}]}  # fmt: skip
    assert schemas["EmbedRequest"]["additionalProperties"] is False  # TEI bodies refuse unknown options
    assert tiny_client.get("/docs").status_code == 200


def test_models_route_and_model_names(tiny_client) -> None:  # type: ignore[no-untyped-def]
    assert [m["id"] for m in tiny_client.get("/v1/models").json()["data"]] == ["tiny"]
    assert ServeConfig(model="/a/b/all-MiniLM-L6-v2/").model_names == (
        "/a/b/all-MiniLM-L6-v2/",
        "all-MiniLM-L6-v2",
    )
    assert ServeConfig(model="m", served_model_names=("x", "y")).model_names == ("x", "y")


def test_tokenize_gives_ids_offsets_and_special_flags(tiny_client) -> None:  # type: ignore[no-untyped-def]
    tokens = tiny_client.post("/tokenize", json={"inputs": "the cat"}).json()[0]
    assert [t["special"] for t in tokens] == [True, False, False, True]
    assert [t["text"] for t in tokens[1:3]] == ["the", "cat"]
    assert (tokens[1]["start"], tokens[1]["stop"]) == (0, 3)
    plain = tiny_client.post("/tokenize", json={"inputs": ["the cat"], "add_special_tokens": False}).json()[0]
    assert [t["id"] for t in plain] == [t["id"] for t in tokens[1:3]]


def test_embed_truncate_false_gives_the_count_and_the_limit(tiny_client) -> None:  # type: ignore[no-untyped-def]
    long = "the cat and the dog " * 100
    r = tiny_client.post("/embed", json={"inputs": [long], "truncate": False})
    assert r.status_code == 413
    message = r.json()["error"]
    assert "502 tokens" in message and "limit of" in message and r.json()["error_type"] == "Validation"
    r = tiny_client.post("/embed", json={"inputs": [long]})  # the server's --auto-truncate (on)
    assert r.status_code == 200 and r.headers["x-truncated-inputs"] == "1"


def test_embed_normalize_false_and_dimensions(tiny_client) -> None:  # type: ignore[no-untyped-def]
    raw = np.asarray(tiny_client.post("/embed", json={"inputs": ["the cat"], "normalize": False}).json())
    unit = np.asarray(tiny_client.post("/embed", json={"inputs": ["the cat"]}).json())
    assert np.allclose(unit, raw / np.linalg.norm(raw), atol=1e-6)
    cut = np.asarray(tiny_client.post("/embed", json={"inputs": ["the cat"], "dimensions": 4}).json())
    assert cut.shape == (1, 4) and np.allclose(cut, raw[:, :4] / np.linalg.norm(raw[:, :4]), atol=1e-6)


def test_config_from_env_and_errors() -> None:
    env = {"BIENCODER_API_KEY": "k", "BIENCODER_MAX_BATCH_TOKENS": "99", "BIENCODER_AUTO_TRUNCATE": "false",
           "BIENCODER_SERVED_MODEL_NAMES": "a, b", "BIENCODER_HEALTH_TIMEOUT": "2.5"}  # fmt: skip
    config = ServeConfig.from_env(env, max_batch_tokens=7)
    assert config.api_key == "k" and config.max_batch_tokens == 7 and config.auto_truncate is False
    assert config.served_model_names == ("a", "b") and config.health_timeout == 2.5
    with pytest.raises(ValueError, match="BIENCODER_PORT='x'"):
        ServeConfig.from_env({"BIENCODER_PORT": "x"})
    with pytest.raises(ValueError, match="unknown backend 'tpu'; valid: onnx, torch"):
        ServeConfig(backend="tpu")
    with pytest.raises(ValueError, match="int8 needs --backend onnx"):
        ServeConfig(backend="torch", precision="int8")
    with pytest.raises(ValueError, match="max_concurrent_requests must be a positive integer"):
        ServeConfig(max_concurrent_requests=0)


def test_serve_help_lists_every_option_with_default() -> None:
    from dataclasses import fields

    from biencoder.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    help_text = " ".join(sub.choices["serve"].format_help().split())  # type: ignore[union-attr]
    for f in fields(ServeConfig):
        flag = "--served-model-name" if f.name == "served_model_names" else "--" + f.name.replace("_", "-")
        assert flag in help_text, flag
        assert f"env {ServeConfig.env_name(f.name)})" in help_text, f.name
    assert "(default: 16384" in help_text and "(default: 512" in help_text and "(default: onnx" in help_text


def test_torch_backend_serves_the_same_vectors(tiny_onnx: Path, tiny_client) -> None:  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from biencoder.serve.app import create_app
    from biencoder.serve.model import load_served_model

    served = load_served_model(str(tiny_onnx), backend="torch", device="cpu")
    texts = ["the cat and the dog", "a small red house by the river " * 30, "fish"]
    with TestClient(create_app(served, ServeConfig(model=str(tiny_onnx), backend="torch"))) as client:
        body = client.post("/v1/embeddings", json={"input": texts}).json()
        assert client.get("/info").json()["backend"] == "torch"
    torch_vectors = np.asarray([d["embedding"] for d in body["data"]])
    onnx_vectors = np.asarray(
        [d["embedding"] for d in tiny_client.post("/v1/embeddings", json={"input": texts}).json()["data"]]
    )
    assert np.abs(torch_vectors - onnx_vectors).max() <= 1e-5
    assert [d["truncated"] for d in body["data"]] == [False, True, False]


def test_beyond_max_concurrent_requests_the_answer_is_429_at_once(tmp_path: Path) -> None:
    import threading
    import time

    from starlette.testclient import TestClient

    from biencoder.serve.app import create_app
    from biencoder.serve.model import ServedModel
    from tests.serve.helpers import RecordingEncoder

    encoder = RecordingEncoder()
    encoder.gate.clear()  # the model holds every batch until released
    served = ServedModel(encoder, tmp_path, "onnx", "fp32", {})  # type: ignore[arg-type]
    config = ServeConfig(model="fake", max_concurrent_requests=2)
    with TestClient(create_app(served, config)) as client:
        statuses: list[int] = []
        held = [
            threading.Thread(
                target=lambda: statuses.append(client.post("/embed", json={"inputs": "a"}).status_code)
            )
            for _ in range(2)
        ]
        for t in held:
            t.start()
        deadline = time.monotonic() + 60
        while client.app.state.biencoder.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The model holds every batch until released: a queued request would not return before
        # the gate opens, so an answer while it is closed proves the request was refused, not queued.
        answers: list[Any] = []
        third = threading.Thread(
            target=lambda: answers.append(client.post("/v1/embeddings", json={"input": "b"}))
        )
        third.start()
        third.join(60)  # generous: a loaded machine is slow, but a refusal needs no batch
        assert answers, "the third request was queued behind the held batches, not refused with 429"
        r = answers[0]
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error" and "limit 2" in r.json()["error"]["message"]
        assert client.get("/health").status_code == 200  # open when full; busy is not stuck
        encoder.gate.set()
        for t in held:
            t.join(10)
        assert statuses == [200, 200]
        assert client.post("/embed", json={"inputs": "c"}).status_code == 200


def test_a_folder_without_a_graph_is_exported_once_in_place_or_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    from biencoder.serve.model import ensure_onnx, load_served_model
    from tests.tiny import build_tiny_encoder

    writable = build_tiny_encoder(tmp_path / "writable")
    served = load_served_model(str(writable))  # no onnx/ yet: exported into the folder
    assert served.folder == writable and (writable / "onnx" / "model.onnx").is_file()
    mtime = os.stat(writable / "onnx" / "model.onnx").st_mtime_ns
    assert ensure_onnx(writable, "fp32") == writable  # once: the second start reuses it
    assert os.stat(writable / "onnx" / "model.onnx").st_mtime_ns == mtime

    monkeypatch.setenv("BIENCODER_CACHE", str(tmp_path / "cache"))
    read_only = build_tiny_encoder(tmp_path / "read-only")
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(str(read_only)))
    try:
        served = load_served_model(str(read_only))
    finally:
        read_only.chmod(stat.S_IRWXU)
    assert str(served.folder).startswith(str(tmp_path / "cache")) and not (read_only / "onnx").exists()
    assert (served.folder / "onnx" / "model.onnx").is_file() and (served.folder / "tokenizer.json").is_file()
    texts = ["the cat and the dog", "fish"]
    assert (
        np.abs(served.encoder.encode(texts) - load_served_model(str(writable)).encoder.encode(texts)).max()
        < 1e-6
    )
