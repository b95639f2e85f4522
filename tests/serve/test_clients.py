"""The clients people point at an embedding server, against `biencoder serve` on MiniLM.

Embeddings through the official openai client (base64 by default), LangChain and LlamaIndex
equal sentence-transformers' to 1e-5 (fp32 default); int8 stays at mean cosine >= 0.995.
Concurrent requests each get the embeddings of their own inputs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve.helpers import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.reference]


def test_openai_client_base64_equals_sentence_transformers(minilm_server, texts, reference) -> None:  # type: ignore[no-untyped-def]
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=minilm_server.url + "/v1", api_key="unused", max_retries=0)
    got = []
    for start in range(0, len(texts), 50):
        response = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[start : start + 50])
        assert [d.index for d in response.data] == list(range(len(response.data)))
        got += [d.embedding for d in response.data]
        assert response.usage.prompt_tokens > 0
    ours = np.asarray(got, dtype=np.float32)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-5


def test_float_format_and_truncation_flags(minilm_server, texts, reference, st_minilm) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(
        minilm_server.url + "/v1/embeddings", json={"input": texts, "encoding_format": "float"}, timeout=120
    )
    assert r.status_code == 200, r.text
    body = r.json()
    ours = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert np.abs(ours - reference).max() <= 1e-5
    tokenizer = st_minilm.tokenizer
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    expected = [n > 256 for n in lengths]
    assert [d["truncated"] for d in body["data"]] == expected
    assert int(r.headers["x-truncated-inputs"]) == sum(expected) > 0
    assert body["usage"]["prompt_tokens"] == sum(min(n, 256) for n in lengths)
    for name in ("x-queue-time", "x-inference-time", "x-tokenization-time", "x-total-time"):
        assert float(r.headers[name]) >= 0


def test_dimensions_cut_then_renormalise(minilm_server, texts, reference) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(
        minilm_server.url + "/v1/embeddings", json={"input": texts[:5], "dimensions": 64}, timeout=60
    )
    assert r.status_code == 200, r.text
    ours = np.asarray([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    cut = reference[:5, :64] / np.linalg.norm(reference[:5, :64], axis=1, keepdims=True)
    assert np.abs(ours - cut).max() <= 1e-5


def test_tei_embed_and_similarity(minilm_server, texts, reference) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(minilm_server.url + "/embed", json={"inputs": texts[:8]}, timeout=60)
    assert r.status_code == 200, r.text
    assert np.abs(np.asarray(r.json(), dtype=np.float32) - reference[:8]).max() <= 1e-5
    body = {"inputs": {"source_sentence": texts[0], "sentences": texts[1:6]}}
    r = httpx.post(minilm_server.url + "/similarity", json=body, timeout=60)
    assert r.status_code == 200, r.text
    expected = reference[1:6] @ reference[0]
    assert np.abs(np.asarray(r.json()) - expected).max() <= 1e-5


def test_langchain_openai_embeddings(minilm_server, texts, reference) -> None:  # type: ignore[no-untyped-def]
    lc = pytest.importorskip("langchain_openai")
    emb = lc.OpenAIEmbeddings(
        model="all-MiniLM-L6-v2", base_url=minilm_server.url + "/v1", api_key="unused",
        check_embedding_ctx_length=False, max_retries=0,
    )  # fmt: skip
    docs = np.asarray(emb.embed_documents(texts[:20]), dtype=np.float32)
    assert np.abs(docs - reference[:20]).max() <= 1e-5
    query = np.asarray(emb.embed_query(texts[0]), dtype=np.float32)
    assert np.abs(query - reference[0]).max() <= 1e-5


def test_langchain_default_token_ids_get_a_clear_422(minilm_server) -> None:  # type: ignore[no-untyped-def]
    # What OpenAIEmbeddings sends by default (check_embedding_ctx_length=True): tiktoken ids of
    # each text, a list of lists of ints. tiktoken needs the network for its vocabulary here, so
    # the payload is sent directly, with ids as cl100k_base gives them for two short texts.
    payload = {"input": [[9906, 1917], [15339, 11, 1268, 527, 499, 30]], "model": "all-MiniLM-L6-v2",
               "encoding_format": "base64"}  # fmt: skip
    r = httpx.post(minilm_server.url + "/v1/embeddings", json=payload, timeout=30)
    assert r.status_code == 422
    error = r.json()["error"]
    assert "check_embedding_ctx_length=False" in error["message"]
    assert error["code"] == "token_ids_not_supported" and error["param"] == "input"
    r = httpx.post(minilm_server.url + "/v1/embeddings", json={"input": [9906, 1917]}, timeout=30)
    assert r.status_code == 422 and "token ids" in r.json()["error"]["message"]


def test_llamaindex_openai_like_embedding(minilm_server, texts, reference) -> None:  # type: ignore[no-untyped-def]
    mod = pytest.importorskip("llama_index.embeddings.openai_like")
    emb = mod.OpenAILikeEmbedding(
        model_name="all-MiniLM-L6-v2", api_base=minilm_server.url + "/v1", api_key="unused", max_retries=0
    )
    got = np.asarray(emb.get_text_embedding_batch(texts[:12]), dtype=np.float32)
    assert np.abs(got - reference[:12]).max() <= 1e-5
    query = np.asarray(emb.get_query_embedding(texts[3]), dtype=np.float32)
    assert np.abs(query - reference[3]).max() <= 1e-5


def test_concurrent_requests_get_their_own_embeddings(minilm_server, texts) -> None:  # type: ignore[no-untyped-def]
    url = minilm_server.url + "/v1/embeddings"
    requests = [texts[i % len(texts) : i % len(texts) + 1 + i % 5] for i in range(96)]
    with httpx.Client(timeout=120) as client:
        sequential = [_vectors(client.post(url, json={"input": r})) for r in requests[:24]]
    with (
        ThreadPoolExecutor(max_workers=32) as pool,
        httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64)) as client,
    ):
        concurrent = list(pool.map(lambda r: _vectors(client.post(url, json={"input": r})), requests))
    for i, seq in enumerate(sequential):
        assert seq.shape == concurrent[i].shape
        assert np.abs(seq - concurrent[i]).max() <= 1e-5  # other batch mates change padding only
    # Requests 24.. repeat 0.. with the same inputs where the index wraps: each is its own.
    for i, got in enumerate(concurrent):
        assert got.shape[0] == len(requests[i])
    metrics = httpx.get(minilm_server.url + "/metrics").text
    assert "biencoder_batch_requests_bucket" in metrics


def _vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def test_int8_mean_cosine(minilm_onnx: Path, texts, reference) -> None:  # type: ignore[no-untyped-def]
    openai = pytest.importorskip("openai")
    server = ServerProcess(minilm_onnx, "--precision", "int8").wait_ready()
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        info = httpx.get(server.url + "/info").json()
        assert info["precision"] == "int8" and info["backend"] == "onnx"
        ours = np.asarray(
            [d.embedding for d in client.embeddings.create(model=minilm_onnx.name, input=texts).data]
        )
    finally:
        assert server.stop() == 0
    cos = (ours * reference).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.mean() >= 0.995, cos.mean()
