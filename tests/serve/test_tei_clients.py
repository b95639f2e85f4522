"""TEI's own clients against `biencoder serve` on MiniLM, as someone moving from TEI calls it.

huggingface_hub's InferenceClient (which posts to the server's root, ``POST /``), LangChain's
HuggingFaceEndpointEmbeddings (through that client) and LlamaIndex's TextEmbeddingsInference
(``POST /embed``) get sentence-transformers' embeddings to 1e-5, long inputs included; the server
counts each truncated input as on its other routes, and an option it refuses gets a 4xx naming
it. The client snippets of docs/serving.md ("Moving from TEI") are read from the file and run.

huggingface_hub refuses every request while HF_HUB_OFFLINE=1 (a server on loopback too), so its
tests lift the flag, turn off its telemetry (which would look up a list on the Hub to build its
user agent) and let its session reach 127.0.0.1 alone: a request elsewhere fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.numerics import EMBEDDING_ATOL, cosine_atol
from tests.serve.helpers import ROOT, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.reference]

DOCS = ROOT / "docs" / "serving.md"
DOCS_URL = "http://localhost:8080"  # what the snippets say; the tests put the live server's URL there
SCORE_ATOL = cosine_atol(EMBEDDING_ATOL, 384)  # cosines of two vectors each within the contract


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(texts: list[str], st_minilm) -> list[int]:  # type: ignore[no-untyped-def]
    """Indices of 12 STSb sentences, then 3 SciFact abstracts over 256 tokens and 3 within."""
    lengths = {i: _tokens(st_minilm, texts[i]) for i in range(120, len(texts))}
    long = [i for i, n in lengths.items() if n > 256][:3]
    short = [i for i, n in lengths.items() if n <= 256][:3]
    assert len(long) == len(short) == 3
    return list(range(12)) + long + short


@pytest.fixture()
def hub_to_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """huggingface_hub with offline mode lifted, telemetry off and its session held to 127.0.0.1;
    yields the hosts it sent requests to."""
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants
    from huggingface_hub.utils._http import default_client_factory

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    hosts: list[str] = []

    def loopback_only(request: Any) -> None:
        hosts.append(request.url.host)
        if request.url.host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"huggingface_hub tried to reach {request.url}")

    def factory() -> Any:
        client = default_client_factory()
        client.event_hooks["request"].append(loopback_only)
        return client

    hub.set_client_factory(factory)
    yield hosts
    hub.set_client_factory(default_client_factory)
    assert set(hosts) <= {"127.0.0.1", "localhost"}, hosts  # also requests whose errors were swallowed


# -- helpers -------------------------------------------------------------------------------------


def _tokens(st: Any, text: str) -> int:
    return len(st.tokenizer(text)["input_ids"])


def truncated_total(url: str) -> float:
    """The server's count of inputs cut at max_seq_length (every route adds to it)."""
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("biencoder_truncated_inputs_total "):
            return float(line.split()[1])
    raise AssertionError("biencoder_truncated_inputs_total not in /metrics")


def snippet(name: str) -> str:
    """The python block of docs/serving.md that follows ``<!-- tested: name -->``."""
    found = re.search(rf"<!-- tested: {re.escape(name)} -->\n```python\n(.*?)```", DOCS.read_text(), re.S)
    assert found, f"no snippet {name!r} in {DOCS}"
    return found.group(1)


def run_snippet(name: str, url: str) -> dict[str, Any]:
    """Run the snippet against ``url``; its variables."""
    code = snippet(name)
    assert DOCS_URL in code, f"snippet {name!r} does not call {DOCS_URL}"
    namespace: dict[str, Any] = {}
    exec(compile(code.replace(DOCS_URL, url), f"{DOCS}:{name}", "exec"), namespace)
    return namespace


def assert_close(got: Any, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=EMBEDDING_ATOL)


# -- huggingface_hub.InferenceClient -----------------------------------------------------------


def test_inference_client_snippet(
    minilm_server: ServerProcess, st_minilm: Any, hub_to_loopback: list[str]
) -> None:
    ns = run_snippet("inference-client", minilm_server.url)
    query, docs = st_minilm.encode([ns["query"]]), st_minilm.encode(ns["docs"])
    assert_close(ns["one"], query)
    assert_close(ns["several"], docs)
    np.testing.assert_allclose(ns["scores"], (docs @ query.T)[:, 0], rtol=0, atol=SCORE_ATOL)
    assert hub_to_loopback  # the fixture checks they all went to loopback


def test_inference_client_feature_extraction(
    minilm_server: ServerProcess,
    texts: list[str],
    reference: np.ndarray,
    sample: list[int],
    hub_to_loopback: list[str],
) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=minilm_server.url)
    assert_close(client.feature_extraction(texts[0]), reference[:1])
    before = truncated_total(minilm_server.url)
    assert_close(client.feature_extraction([texts[i] for i in sample]), reference[sample])
    assert truncated_total(minilm_server.url) - before == 3  # the three long abstracts


def test_inference_client_sentence_similarity(
    minilm_server: ServerProcess,
    texts: list[str],
    reference: np.ndarray,
    sample: list[int],
    hub_to_loopback: list[str],
) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=minilm_server.url)
    others = sample[1:]
    before = truncated_total(minilm_server.url)
    scores = client.sentence_similarity(texts[sample[0]], [texts[i] for i in others])
    want = reference[others] @ reference[sample[0]]
    np.testing.assert_allclose(scores, want, rtol=0, atol=SCORE_ATOL)
    assert truncated_total(minilm_server.url) - before == 3


def test_inference_client_options(
    minilm_server: ServerProcess,
    texts: list[str],
    sample: list[int],
    st_minilm: Any,
    hub_to_loopback: list[str],
) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    client = InferenceClient(model=minilm_server.url)
    long = [texts[i] for i in sample[12:15]]
    st_minilm.tokenizer.truncation_side = "left"  # sentence-transformers keeping each text's end
    try:
        want_left = st_minilm.encode(long)
    finally:
        st_minilm.tokenizer.truncation_side = "right"
    assert_close(client.feature_extraction(long, truncation_direction="left"), want_left)
    want = st_minilm.encode(long)
    raw = client.feature_extraction(long, normalize=False)  # mean pooling without MiniLM's Normalize
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).min() > 0.1
    assert_close(raw / np.linalg.norm(raw, axis=1, keepdims=True), want)
    cut = want[:, :64]
    assert_close(client.feature_extraction(long, dimensions=64), cut / np.linalg.norm(cut, axis=1)[:, None])

    refusals = [
        ({"truncate": False}, 413, "over the model's limit of 256"),
        ({"encoding_format": "base64"}, 422, "encoding_format"),
        ({"prompt_name": "query"}, 422, "prompt_name"),
    ]
    for options, status, says in refusals:
        with pytest.raises(HfHubHTTPError) as caught:
            client.feature_extraction(long, **options)
        assert caught.value.response.status_code == status, options
        body = caught.value.response.json()
        assert says in body["error"] and body["error_type"] == "Validation", body


# -- LangChain and LlamaIndex ------------------------------------------------------------------


def test_langchain_snippet(minilm_server: ServerProcess, st_minilm: Any, hub_to_loopback: list[str]) -> None:
    pytest.importorskip("langchain_huggingface")
    ns = run_snippet("langchain", minilm_server.url)
    assert_close(ns["doc_vectors"], st_minilm.encode(ns["docs"]))
    assert_close(ns["query_vector"], st_minilm.encode(ns["query"]))


def test_langchain_huggingface_endpoint_embeddings(
    minilm_server: ServerProcess,
    texts: list[str],
    reference: np.ndarray,
    sample: list[int],
    hub_to_loopback: list[str],
) -> None:
    lc = pytest.importorskip("langchain_huggingface")
    from huggingface_hub import AsyncInferenceClient, InferenceClient

    emb = lc.HuggingFaceEndpointEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2")
    emb.client = InferenceClient(model=minilm_server.url)
    emb.async_client = AsyncInferenceClient(model=minilm_server.url)
    before = truncated_total(minilm_server.url)
    assert_close(emb.embed_documents([texts[i] for i in sample]), reference[sample])
    assert truncated_total(minilm_server.url) - before == 3
    assert_close(emb.embed_query(texts[5]), reference[5])


def test_llamaindex_snippet(minilm_server: ServerProcess, st_minilm: Any) -> None:
    pytest.importorskip("llama_index.embeddings.text_embeddings_inference")
    ns = run_snippet("llamaindex", minilm_server.url)
    assert_close(ns["doc_vectors"], st_minilm.encode(ns["docs"]))
    assert_close(ns["query_vector"], st_minilm.encode(ns["query"]))


def test_llamaindex_text_embeddings_inference(
    minilm_server: ServerProcess, texts: list[str], reference: np.ndarray, sample: list[int]
) -> None:
    mod = pytest.importorskip("llama_index.embeddings.text_embeddings_inference")
    emb = mod.TextEmbeddingsInference(
        model_name="sentence-transformers/all-MiniLM-L6-v2", base_url=minilm_server.url, embed_batch_size=8
    )
    before = truncated_total(minilm_server.url)
    assert_close(emb.get_text_embedding_batch([texts[i] for i in sample]), reference[sample])
    assert truncated_total(minilm_server.url) - before == 3
    assert_close(emb.get_query_embedding(texts[7]), reference[7])


# -- the routes themselves -----------------------------------------------------------------------


def test_root_routes_answer_as_tei(
    minilm_server: ServerProcess, texts: list[str], reference: np.ndarray, sample: list[int]
) -> None:
    url = minilm_server.url
    long = sample[12:15]
    for path in ("/", "/invocations"):
        r = httpx.post(url + path, json={"inputs": [texts[i] for i in long]}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["x-truncated-inputs"] == "3"  # as /embed and /v1/embeddings report it
        assert_close(r.json(), reference[long])
    body = {"inputs": "a", "truncation_direction": "up", "pooling": "cls"}
    r = httpx.post(url + "/", json=body, timeout=30)
    assert r.status_code == 422
    assert r.json()["error"].startswith("unknown option `pooling`; the body takes: inputs, truncate")
    health = httpx.get(url + "/", timeout=30)
    assert health.status_code == 200 and health.content == b""
    assert httpx.get(url + "/ping", timeout=30).status_code == 200


def test_decode_equals_transformers_and_embed_all_says_why_not(
    minilm_server: ServerProcess, texts: list[str], st_minilm: Any
) -> None:
    url = minilm_server.url
    tokens = httpx.post(url + "/tokenize", json={"inputs": texts[:3]}, timeout=30).json()
    ids = [[t["id"] for t in row] for row in tokens]
    decoded = httpx.post(url + "/decode", json={"ids": ids}, timeout=30).json()
    assert decoded == st_minilm.tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert httpx.post(url + "/decode", json={"ids": ids[0]}, timeout=30).json() == decoded[:1]
    kept = httpx.post(url + "/decode", json={"ids": ids[0], "skip_special_tokens": False}, timeout=30).json()
    assert kept[0].startswith("[CLS] ") and kept[0].endswith(" [SEP]")
    r = httpx.post(url + "/embed_all", json={"inputs": texts[0]}, timeout=30)
    assert r.status_code == 424 and "pooled sentence embeddings only" in r.json()["error"]
