"""Hostile requests against a live `biencoder serve`: each is refused with the route's error shape.

The hand list below goes over raw sockets (so it can send what HTTP clients will not: a lying
Content-Length, bytes that are not UTF-8, a chunked body past the limit, garbage instead of
HTTP). Every case must get a 4xx (a few are explicitly 200: the server is lenient there) whose
body is JSON in the route's convention, OpenAI's ``{"error": {"message", "type", "param",
"code"}}`` on /v1/* and /embeddings, TEI's ``{"error", "error_type"}`` elsewhere, with a
message; and the server must stay up and keep answering. The API key and the limits set on
the command line or in the environment are checked on two servers of their own.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.helpers import ServerProcess

OPENAI_PREFIXES = ("/v1/", "/embeddings")
TIMEOUT = 15.0  # seconds one exchange may take; a refusal must come well within it


# -- raw HTTP ------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def request(
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str | None] | None = None,
    *,
    close: bool = True,
) -> bytes:
    """One HTTP/1.1 request as bytes; a header given as None is left out."""
    head: dict[str, str | None] = {"Host": "127.0.0.1", "Content-Type": "application/json"}
    if close:
        head["Connection"] = "close"
    if body is not None:
        head["Content-Length"] = str(len(body))
    head.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items() if v is not None)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def read_reply(sock: socket.socket, timeout: float = TIMEOUT) -> Reply:
    """One response: the head, then Content-Length bytes (or up to EOF)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    assert buf, "the server closed the connection without answering"
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Reply(int(status_line.split()[1]), headers, rest[:length] if length >= 0 else rest)


def exchange(port: int, data: bytes, timeout: float = TIMEOUT) -> Reply:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_reply(sock, timeout)


def stream_until_answered(port: int, head: bytes, chunks: Iterator[bytes], timeout: float = TIMEOUT) -> Reply:
    """Send ``head`` then ``chunks`` while the server has not answered; then read its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer is there: stop sending
                sock.sendall(chunk)
        except OSError:
            pass  # the server stopped reading; its answer is still to be read
        return read_reply(sock, timeout)


def chunk_bytes(*parts: bytes) -> bytes:
    """``parts`` as a chunked body, terminated."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def chunked(first: bytes, filler: bytes, total: int) -> Iterator[bytes]:
    """A chunked body of at least ``total`` bytes (``first``, then ``filler`` repeated), terminated."""
    sent = 0
    for data in (first, *([filler] * (total // len(filler) + 1))):
        yield b"%x\r\n%s\r\n" % (len(data), data)
        sent += len(data)
        if sent >= total:
            break
    yield b"0\r\n\r\n"


# -- the cases -----------------------------------------------------------------------------------

Body = bytes | Callable[[dict[str, Any]], bytes]


@dataclass(frozen=True)
class Hostile:
    """One hostile request and what it must get.

    ``body`` may depend on GET /info (the model's dimension, the limits); ``raw`` replaces the
    whole request; ``send`` is for requests streamed over several writes. ``protocol`` marks
    requests refused by uvicorn's HTTP parser before the app runs: uvicorn answers those with a
    plain-text 400 that the app cannot shape.
    """

    id: str
    path: str
    body: Body | None = None
    method: str = "POST"
    headers: dict[str, str | None] = field(default_factory=dict)
    status: tuple[int, ...] = (422,)
    says: str = ""  # a substring of the message (case-insensitive)
    code: str | None = None  # OpenAI routes: the error code
    param: str | None = None  # OpenAI routes: the offending parameter
    raw: bytes | None = None
    send: Callable[[int, dict[str, Any]], Reply] | None = None
    protocol: bool = False


def _dims(value: Any) -> Body:
    return lambda info: js({"input": "hello", "dimensions": value(info) if callable(value) else value})


def _nested(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def _over_limit_announced(path: str) -> Callable[[int, dict[str, Any]], Reply]:
    """Content-Length over the payload limit, body never sent: the refusal must come at once."""

    def send(port: int, info: dict[str, Any]) -> Reply:
        size = info["payload_limit"] + 1
        head = request("POST", path, headers={"Content-Length": str(size)}, close=False)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(head)
            return read_reply(sock, timeout=30)

    return send


def _over_limit_expect_continue(port: int, info: dict[str, Any]) -> Reply:
    """With ``Expect: 100-continue`` the refusal replaces the 100: no body is asked for."""
    size = info["payload_limit"] * 2
    head = request(
        "POST", "/embed", headers={"Content-Length": str(size), "Expect": "100-continue"}, close=False
    )
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head)
        return read_reply(sock, timeout=30)


def _over_limit_chunked(path: str, key: str) -> Callable[[int, dict[str, Any]], Reply]:
    """A chunked body (no Content-Length) that passes the limit: refused as soon as it does."""

    def send(port: int, info: dict[str, Any]) -> Reply:
        head = request("POST", path, headers={"Transfer-Encoding": "chunked"}, close=False)
        first = b'{"%s": "' % key.encode() + b"a" * 65_000
        body = chunked(first, b"a" * 65_536, info["payload_limit"] * 2)
        return stream_until_answered(port, head, body)

    return send


CASES: list[Hostile] = [
    # -- bytes that are not a JSON object --
    Hostile("malformed-json", "/v1/embeddings", b'{"input": "a",', status=(400,), says="not valid JSON"),
    Hostile("malformed-json-tei", "/embed", b'{"inputs": ["a" "b"]}', status=(400,), says="not valid JSON"),
    Hostile("truncated-json", "/v1/embeddings", b'{"input": ["hello", "wor', status=(400,), says="JSON"),
    Hostile("invalid-utf8", "/v1/embeddings", b'{"input": "caf\xe9 \xff\xfe"}', status=(400,), says="UTF-8"),
    Hostile("invalid-utf8-tei", "/embed", b'{"inputs": "\xc3\x28"}', status=(400,), says="UTF-8"),
    Hostile("lone-surrogate", "/v1/embeddings", b'{"input": "a\\ud800b"}', status=(400,), says="surrogate"),
    Hostile("utf8-bom", "/v1/embeddings", b'\xef\xbb\xbf{"input": "hello"}', status=(400,)),
    Hostile("nan-literal", "/v1/embeddings", b'{"input": "a", "dimensions": NaN}', status=(400,)),
    Hostile("empty-body", "/v1/embeddings", b"", status=(400,), says="empty"),
    Hostile("empty-body-tei", "/similarity", b"", status=(400,), says="empty"),
    Hostile("no-body-no-length", "/v1/embeddings", None, status=(400,), says="empty"),
    Hostile("body-is-list", "/v1/embeddings", b'["hello"]', says="JSON object"),
    Hostile("body-is-string", "/v1/embeddings", b'"hello"', says="JSON object"),
    Hostile("body-is-number", "/v1/embeddings", b"42", says="JSON object"),
    Hostile("body-is-null", "/v1/embeddings", b"null", says="JSON object"),
    Hostile("body-is-list-tei", "/embed", b'["hello"]', says="JSON object"),
    Hostile("alias-body-is-list", "/embeddings", b"[]", says="JSON object"),
    Hostile(
        "form-encoded",
        "/v1/embeddings",
        b"input=hello",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        status=(400,),
    ),
    Hostile("nesting-10000", "/v1/embeddings", _nested(10_000), status=(400,), says="depth"),
    Hostile(
        "nesting-10000-in-input",
        "/embed",
        b'{"inputs": ' + _nested(10_000) + b"}",
        status=(400,),
        says="depth",
    ),
    Hostile("nesting-500-in-input", "/v1/embeddings", b'{"input": ' + _nested(500) + b"}", param="input"),
    Hostile("number-10000-digits", "/v1/embeddings", b"9" * 10_000, status=(400, 422)),
    Hostile(
        "dimensions-10000-digits",
        "/v1/embeddings",
        b'{"input": "a", "dimensions": ' + b"9" * 10_000 + b"}",
        status=(400, 422),
    ),
    Hostile("duplicate-keys-last-bad", "/v1/embeddings", b'{"input": "hello", "input": 5}', param="input"),
    Hostile("duplicate-keys-last-good", "/v1/embeddings", b'{"input": 5, "input": "hello"}', status=(200,)),
    Hostile(
        "content-type-text-plain",
        "/v1/embeddings",
        js({"input": "hello"}),
        headers={"Content-Type": "text/plain"},
        status=(200,),
    ),
    Hostile(
        "content-type-missing",
        "/embed",
        js({"inputs": "hello"}),
        headers={"Content-Type": None},
        status=(200,),
    ),
    # -- OpenAI `input` --
    Hostile("input-missing", "/v1/embeddings", js({"model": "tiny"}), says="input", param="input"),
    Hostile("input-null", "/v1/embeddings", js({"input": None}), param="input"),
    Hostile("input-number", "/v1/embeddings", js({"input": 42}), param="input"),
    Hostile("input-object", "/v1/embeddings", js({"input": {"text": "hello"}}), param="input"),
    Hostile("input-str-and-int", "/v1/embeddings", js({"input": ["hello", 1]}), param="input"),
    Hostile("input-bools", "/v1/embeddings", js({"input": [True, False]}), param="input"),
    Hostile("input-empty-list", "/v1/embeddings", js({"input": []}), says="must not be empty", param="input"),
    Hostile("input-empty-string", "/v1/embeddings", js({"input": ""}), says="empty string", param="input"),
    Hostile(
        "input-list-empty-string", "/v1/embeddings", js({"input": ["a", ""]}), says="input[1]", param="input"
    ),
    Hostile(
        "token-ids",
        "/v1/embeddings",
        js({"input": [1996, 4937, 2003]}),
        says="check_embedding_ctx_length",
        code="token_ids_not_supported",
        param="input",
    ),
    Hostile(
        "token-id-lists",
        "/v1/embeddings",
        js({"input": [[1996, 4937], [2003]]}),
        says="check_embedding_ctx_length",
        code="token_ids_not_supported",
        param="input",
    ),
    Hostile(
        "too-many-inputs",
        "/v1/embeddings",
        lambda info: js({"input": ["a"] * (info["max_client_batch_size"] + 1)}),
        says="at most",
        code="too_many_inputs",
        param="input",
    ),
    Hostile(
        "as-many-inputs-as-allowed",
        "/v1/embeddings",
        lambda info: js({"input": ["a"] * info["max_client_batch_size"]}),
        status=(200,),
    ),
    Hostile(
        "input-over-max-chars",
        "/v1/embeddings",
        lambda info: js({"input": "a" * (info["max_input_chars"] + 1)}),
        says="characters",
        code="input_too_long",
        param="input",
    ),
    Hostile(
        "input-at-max-chars",
        "/v1/embeddings",
        lambda info: js({"input": "word " * (info["max_input_chars"] // 5)}),
        status=(200,),
    ),
    Hostile(
        "encoding-format-bad",
        "/v1/embeddings",
        js({"input": "a", "encoding_format": "int8"}),
        says="encoding_format",
        param="encoding_format",
    ),
    Hostile("dimensions-0", "/v1/embeddings", _dims(0), says="must lie in", param="dimensions"),
    Hostile("dimensions-negative", "/v1/embeddings", _dims(-1), says="must lie in", param="dimensions"),
    Hostile(
        "dimensions-over-model",
        "/v1/embeddings",
        _dims(lambda info: info["dimension"] + 1),
        says="must lie in",
        param="dimensions",
    ),
    Hostile("dimensions-u64-max", "/v1/embeddings", _dims(2**64 - 1), param="dimensions"),
    Hostile("dimensions-string", "/v1/embeddings", _dims("5"), says="integer", param="dimensions"),
    Hostile("dimensions-float", "/v1/embeddings", _dims(5.5), says="integer", param="dimensions"),
    Hostile(
        "model-unknown",
        "/v1/embeddings",
        js({"input": "a", "model": "text-embedding-3-small"}),
        status=(404,),
        says="served: tiny",
        code="model_not_found",
        param="model",
    ),
    Hostile("model-number", "/v1/embeddings", js({"input": "a", "model": 3}), param="model"),
    # -- TEI /embed, /similarity, /tokenize --
    Hostile("embed-inputs-null", "/embed", js({"inputs": None}), says="inputs"),
    Hostile("embed-inputs-empty-list", "/embed", js({"inputs": []}), says="must not be empty"),
    Hostile("embed-inputs-empty-string", "/embed", js({"inputs": [""]}), says="empty string"),
    Hostile("embed-truncate-string", "/embed", js({"inputs": "a", "truncate": "yes"}), says="truncate"),
    Hostile("embed-normalize-string", "/embed", js({"inputs": "a", "normalize": "true"}), says="normalize"),
    Hostile(
        "embed-prompt-unknown", "/embed", js({"inputs": "a", "prompt_name": "query"}), says="prompt_name"
    ),
    Hostile(
        "embed-dimensions-over-model",
        "/embed",
        lambda info: js({"inputs": "a", "dimensions": info["dimension"] + 1}),
        says="must lie in",
    ),
    Hostile(
        "embed-too-long-no-truncate",
        "/embed",
        js({"inputs": "word " * 400, "truncate": False}),
        status=(413,),
        says="tokens",
    ),
    Hostile(
        "similarity-no-source",
        "/similarity",
        js({"inputs": {"sentences": ["a", "b"]}}),
        says="source_sentence",
    ),
    Hostile(
        "similarity-sentences-empty",
        "/similarity",
        js({"inputs": {"source_sentence": "a", "sentences": []}}),
        says="sentences",
    ),
    Hostile(
        "similarity-sentences-not-list",
        "/similarity",
        js({"inputs": {"source_sentence": "a", "sentences": "b"}}),
        says="sentences",
    ),
    Hostile("similarity-inputs-string", "/similarity", js({"inputs": "a"}), says="inputs"),
    Hostile(
        "similarity-empty-sentence",
        "/similarity",
        js({"inputs": {"source_sentence": "a", "sentences": ["b", ""]}}),
        says="empty string",
    ),
    Hostile(
        "similarity-too-long-no-truncate",
        "/similarity",
        js({"inputs": {"source_sentence": "a", "sentences": ["word " * 400]}, "truncate": False}),
        status=(413,),
        says="tokens",
    ),
    Hostile("tokenize-inputs-number", "/tokenize", js({"inputs": 5}), says="inputs"),
    Hostile("tokenize-inputs-empty-list", "/tokenize", js({"inputs": []}), says="must not be empty"),
    Hostile(
        "tokenize-special-tokens-string",
        "/tokenize",
        js({"inputs": "a", "add_special_tokens": "no"}),
        says="add_special_tokens",
    ),
    # -- TEI's root route (POST /, /invocations), /decode, /embed_all, unknown options --
    Hostile(
        "root-unknown-option", "/", js({"inputs": "a", "pooling": "cls"}), says="unknown option `pooling`"
    ),
    Hostile(
        "root-similarity-unknown-option",
        "/",
        js({"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"top_k": 3}}),
        says="unknown option `parameters.top_k`",
    ),
    Hostile("root-inputs-empty-list", "/", js({"inputs": []}), says="must not be empty"),
    Hostile("root-inputs-number", "/invocations", js({"inputs": 5}), says="inputs"),
    Hostile("root-body-is-list", "/", b'["hello"]', says="JSON object"),
    Hostile("root-malformed-json", "/invocations", b'{"inputs": ', status=(400,), says="not valid JSON"),
    Hostile(
        "root-similarity-sentences-empty",
        "/",
        js({"inputs": {"source_sentence": "a", "sentences": []}}),
        says="sentences",
    ),
    Hostile(
        "root-truncate-twice",
        "/",
        js(
            {
                "inputs": {"source_sentence": "a", "sentences": ["b"]},
                "truncate": True,
                "parameters": {"truncate": True},
            }
        ),
        says="given twice",
    ),
    Hostile(
        "root-encoding-base64", "/", js({"inputs": "a", "encoding_format": "base64"}), says="encoding_format"
    ),
    Hostile(
        "embed-truncation-direction-unknown",
        "/embed",
        js({"inputs": "a", "truncation_direction": "middle"}),
        says="truncation_direction",
    ),
    Hostile("embed-unknown-option", "/embed", js({"inputs": "a", "normalise": False}), says="`normalise`"),
    Hostile("decode-empty", "/decode", js({"ids": []}), says="must not be empty"),
    Hostile("decode-row-empty", "/decode", js({"ids": [[1], []]}), says="must not be empty"),
    Hostile("decode-out-of-vocabulary", "/decode", js({"ids": [[1], [10**9]]}), says="`ids[1]` holds the id"),
    Hostile("decode-ids-strings", "/decode", js({"ids": ["the"]}), says="ids"),
    Hostile("embed-all-not-offered", "/embed_all", js({"inputs": "a"}), status=(424,), says="not offered"),
    Hostile("get-on-root-post-alias", "/invocations", method="GET", status=(405,), says="not allowed"),
    # -- search without an index --
    Hostile(
        "search-no-index", "/v1/search", js({"query": "a"}), status=(404,), code="no_index", says="index"
    ),
    Hostile("search-k-0", "/v1/search", js({"query": "a", "k": 0}), status=(404, 422)),
    Hostile("search-k-string", "/v1/search", js({"query": "a", "k": "5"}), status=(404, 422)),
    Hostile("search-query-number", "/v1/search", js({"query": 5}), param="query"),
    Hostile(
        "search-model-unknown",
        "/v1/search",
        js({"query": "a", "model": "nope"}),
        status=(404,),
        code="model_not_found",
        says="served: tiny",
    ),
    # -- sizes --
    Hostile(
        "over-limit-announced",
        "/v1/embeddings",
        status=(413,),
        says="payload limit",
        send=_over_limit_announced("/v1/embeddings"),
    ),
    Hostile(
        "over-limit-announced-tei",
        "/embed",
        status=(413,),
        says="payload limit",
        send=_over_limit_announced("/embed"),
    ),
    Hostile(
        "over-limit-expect-continue",
        "/embed",
        status=(413,),
        says="payload limit",
        send=_over_limit_expect_continue,
    ),
    Hostile(
        "over-limit-chunked",
        "/v1/embeddings",
        status=(413,),
        says="payload limit",
        send=_over_limit_chunked("/v1/embeddings", "input"),
    ),
    Hostile(
        "over-limit-chunked-tei",
        "/embed",
        status=(413,),
        says="payload limit",
        send=_over_limit_chunked("/embed", "inputs"),
    ),
    Hostile(
        "content-length-shorter",
        "/v1/embeddings",
        raw=request("POST", "/v1/embeddings", js({"input": "hello"}), {"Content-Length": "9"}),
        status=(400,),
        says="JSON",
    ),
    Hostile(
        "chunked-body-ok",
        "/v1/embeddings",
        raw=request("POST", "/v1/embeddings", headers={"Transfer-Encoding": "chunked"})
        + chunk_bytes(b'{"input": ', b'"hel', b'lo"}'),
        status=(200,),
    ),
    # -- methods and paths --
    Hostile("get-on-post-route", "/v1/embeddings", method="GET", status=(405,), says="not allowed"),
    Hostile("get-on-post-route-tei", "/embed", method="GET", status=(405,), says="not allowed"),
    Hostile("put-on-post-route", "/v1/search", b"{}", method="PUT", status=(405,), says="not allowed"),
    Hostile("post-on-get-route", "/info", b"{}", status=(405,), says="not allowed"),
    Hostile("delete-models", "/v1/models", method="DELETE", status=(405,), says="not allowed"),
    Hostile("unknown-path", "/v2/embeddings", method="GET", status=(404,), says="no route"),
    Hostile("unknown-path-openai", "/v1/engines", method="GET", status=(404,), says="no route"),
    Hostile("unknown-path-post", "/predict", b"{}", status=(404,), says="no route"),
    Hostile("path-not-utf8", "/%ff%fe", method="GET", status=(404,)),
    # -- not HTTP, or HTTP uvicorn refuses before the app --
    Hostile("garbage", "", raw=b"HELLO THERE\r\n\r\n", status=(400,), protocol=True),
    Hostile("binary-garbage", "", raw=bytes(range(256)) * 4, status=(400,), protocol=True),
    Hostile(
        "tls-client-hello",
        "",
        raw=bytes.fromhex("160301020001000200030301") + b"\x00" * 200,
        status=(400,),
        protocol=True,
    ),
    Hostile(
        "content-length-not-a-number",
        "/v1/embeddings",
        raw=request("POST", "/v1/embeddings", js({"input": "a"}), {"Content-Length": "ten"}),
        status=(400,),
        protocol=True,
    ),
    Hostile(
        "content-length-negative",
        "/v1/embeddings",
        raw=request("POST", "/v1/embeddings", js({"input": "a"}), {"Content-Length": "-1"}),
        status=(400,),
        protocol=True,
    ),
    Hostile(
        "content-length-and-chunked",
        "/v1/embeddings",
        raw=request("POST", "/v1/embeddings", headers={"Content-Length": "5", "Transfer-Encoding": "chunked"})
        + chunk_bytes(b'{"input": "a"}'),
        status=(400,),
        protocol=True,
    ),
    Hostile(
        "chunk-size-not-hex",
        "/v1/embeddings",
        raw=request("POST", "/v1/embeddings", headers={"Transfer-Encoding": "chunked"})
        + b"zz\r\n{}\r\n0\r\n\r\n",
        status=(400,),
        protocol=True,
    ),
]


# -- fixtures and checks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def info(tiny_server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(tiny_server.url + "/info", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def counters(
    url: str, name: str = "biencoder_requests_total", headers: dict[str, str] | None = None
) -> dict[str, float]:
    """One Prometheus counter family of /metrics: labels text -> value."""
    text = httpx.get(url + "/metrics", headers=headers, timeout=30).text
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) :].rpartition(" ")
            out[labels] = float(value)
    return out


def gauge(url: str, name: str) -> float:
    """An unlabelled gauge of /metrics."""
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture(scope="module")
def requests_before(tiny_server: ServerProcess) -> dict[str, float]:
    """The server's request counters before the hostile list: the list must add no 5xx."""
    return counters(tiny_server.url)


def assert_error_shape(reply: Reply, path: str) -> str:
    """The route's error convention with a non-empty message; returns the message."""
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    body = reply.json()
    if path.startswith(OPENAI_PREFIXES):
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, body
        assert isinstance(error["message"], str) and error["message"].strip(), body
        assert isinstance(error["type"], str) and error["type"], body
        assert error["param"] is None or isinstance(error["param"], str), body
        assert error["code"] is None or isinstance(error["code"], str), body
        return error["message"]
    assert set(body) == {"error", "error_type"}, body
    assert isinstance(body["error"], str) and body["error"].strip(), body
    assert isinstance(body["error_type"], str) and body["error_type"], body
    return body["error"]


def assert_alive(server: ServerProcess) -> None:
    assert server.proc.poll() is None, f"the server died:\n{server.output()}"
    response = httpx.get(server.url + "/health", timeout=30)
    assert response.status_code == 200, response.text


def send_case(case: Hostile, port: int, info: dict[str, Any]) -> Reply:
    if case.send is not None:
        return case.send(port, info)
    if case.raw is not None:
        return exchange(port, case.raw)
    body = case.body(info) if callable(case.body) else case.body
    return exchange(port, request(case.method, case.path, body, case.headers))


# -- the tests -----------------------------------------------------------------------------------


def test_the_list_is_long_enough() -> None:
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request(
    case: Hostile, tiny_server: ServerProcess, info: dict[str, Any], requests_before: dict[str, float]
) -> None:
    reply = send_case(case, tiny_server.port, info)
    assert reply.status < 500, (reply.status, reply.body[:500], tiny_server.output())
    assert reply.status in case.status, (reply.status, reply.body[:500])
    if case.protocol:
        # uvicorn's own refusal (the request never reached the app): plain text, but a message.
        assert reply.body.strip(), reply
    elif reply.status == 200:
        body = reply.json()
        if case.path.startswith(OPENAI_PREFIXES):
            assert body["object"] == "list" and body["data"], body
            assert all(len(d["embedding"]) == info["dimension"] for d in body["data"])
        else:
            assert isinstance(body, list) and all(len(row) == info["dimension"] for row in body), body
    else:
        message = assert_error_shape(reply, case.path)
        assert case.says.lower() in message.lower(), message
        if case.path.startswith(OPENAI_PREFIXES):
            error = reply.json()["error"]
            if case.code is not None:
                assert error["code"] == case.code, error
            if case.param is not None:
                assert error["param"] == case.param, error
    assert_alive(tiny_server)


def test_still_serving_after_the_list(
    tiny_server: ServerProcess, info: dict[str, Any], requests_before: dict[str, float]
) -> None:
    """After every hostile case: healthy, embeddings right, and no 5xx counted on any route."""
    assert_alive(tiny_server)
    response = httpx.post(
        tiny_server.url + "/v1/embeddings", json={"input": ["hello", "world"], "model": "tiny"}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == "tiny"
    assert [d["index"] for d in body["data"]] == [0, 1]
    for item in body["data"]:
        assert item["object"] == "embedding"
        assert len(item["embedding"]) == info["dimension"]
        assert all(isinstance(x, float) for x in item["embedding"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    after = counters(tiny_server.url)
    new_5xx = {k: v - requests_before.get(k, 0) for k, v in after.items() if 'status="5' in k}
    assert not {k: v for k, v in new_5xx.items() if v}, new_5xx


def test_keep_alive_survives_an_error(tiny_server: ServerProcess) -> None:
    """A refused request does not spoil the connection: the next one on it is answered."""
    with socket.create_connection(("127.0.0.1", tiny_server.port), timeout=TIMEOUT) as sock:
        sock.sendall(request("POST", "/v1/embeddings", b'{"input": [', close=False))
        first = read_reply(sock)
        sock.sendall(request("POST", "/v1/embeddings", js({"input": "hello"}), close=False))
        second = read_reply(sock)
    assert first.status == 400, first
    assert second.status == 200, second
    assert len(second.json()["data"]) == 1


def test_body_cut_short_is_not_handed_to_the_app(tiny_server: ServerProcess) -> None:
    """A client that announces more bytes than it sends, then hangs up: the route never runs.

    Meanwhile (the body still pending) the server answers other clients. The bytes that did
    come are JSON on their own (``{"inputs": 5}``, refused 422 if the route saw them): a route
    handed the partial body as if whole would answer it, counted on /embed; and were the bytes
    a valid request, it would embed them for no one. Only a 499 (client gone) may be counted.
    """
    url = tiny_server.url
    body = js({"inputs": 5})
    before = counters(url)
    sock = socket.create_connection(("127.0.0.1", tiny_server.port), timeout=TIMEOUT)
    try:
        sock.sendall(request("POST", "/embed", body, {"Content-Length": str(len(body) + 100)}))
        time.sleep(0.3)
        # The pending body holds no one else up (another route, so the counters below stay clean).
        other = httpx.post(url + "/v1/embeddings", json={"input": "meanwhile"}, timeout=30)
        assert other.status_code == 200, other.text
        with pytest.raises(socket.timeout):
            read_reply(sock, timeout=0.5)  # nothing to answer yet: the body is not all there
    finally:
        sock.close()
    time.sleep(0.3)
    deadline = time.monotonic() + 60  # bounded generously: a loaded machine is slow to notice the close
    while time.monotonic() < deadline and gauge(url, "biencoder_requests_in_flight") > 0:
        time.sleep(0.05)
    time.sleep(0.2)
    after = counters(url)
    route = 'route="/embed"'
    moved = {k: after[k] - before.get(k, 0) for k in after if route in k and after[k] != before.get(k, 0)}
    assert set(moved) <= {'{route="/embed",status="499"}'}, f"the partial body was handled: {moved}"
    assert_alive(tiny_server)


# -- API key and limits on servers of their own ------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_servers(tiny_onnx: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers started together: the key and limits on the command line, and the key in the env."""
    cli = ServerProcess(
        tiny_onnx,
        "--served-model-name",
        "tiny",
        "--api-key",
        "secret",
        "--max-client-batch-size",
        "4",
        "--payload-limit",
        "1000",
    )
    env = ServerProcess(tiny_onnx, "--served-model-name", "tiny", env={"BIENCODER_API_KEY": "from-env"})
    try:
        cli.wait_ready()
        env.wait_ready()
        yield cli, env
    finally:
        codes = (cli.stop(), env.stop())
    assert codes == (0, 0), (cli.output(), env.output())


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("which", ["cli", "env"])
def test_api_key(guarded_servers: tuple[ServerProcess, ServerProcess], which: str) -> None:
    server, key = (guarded_servers[0], "secret") if which == "cli" else (guarded_servers[1], "from-env")
    url = server.url
    payload = {"input": "hello"}

    missing = httpx.post(url + "/v1/embeddings", json=payload, timeout=30)
    assert missing.status_code == 401, missing.text
    error = missing.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "authentication_error" and "API key" in error["message"]

    for headers in (
        _auth("wrong"),
        _auth(key + "x"),
        {"Authorization": key},
        {"Authorization": f"Basic {key}"},
    ):
        wrong = httpx.post(url + "/v1/embeddings", json=payload, headers=headers, timeout=30)
        assert wrong.status_code == 401, (headers, wrong.text)
        assert wrong.json()["error"]["type"] == "authentication_error"

    for path in ("/embed", "/", "/invocations"):
        tei = httpx.post(url + path, json={"inputs": "hello"}, timeout=30)
        assert tei.status_code == 401, (path, tei.text)
        assert set(tei.json()) == {"error", "error_type"} and tei.json()["error_type"] == "Unauthorized"
    for path in ("/v1/models", "/info"):
        assert httpx.get(url + path, timeout=30).status_code == 401, path

    right = httpx.post(url + "/v1/embeddings", json=payload, headers=_auth(key), timeout=30)
    assert right.status_code == 200, right.text
    assert len(right.json()["data"]) == 1
    lower = httpx.post(
        url + "/embed", json={"inputs": "hello"}, headers={"Authorization": f"bearer {key}"}, timeout=30
    )
    assert lower.status_code == 200, lower.text
    assert httpx.get(url + "/info", headers=_auth(key), timeout=30).status_code == 200

    # Probes and scrapers need no key (TEI's health answers, GET / and /ping, neither).
    for path in ("/health", "/", "/ping"):
        assert httpx.get(url + path, timeout=30).status_code == 200, path
    metrics = httpx.get(url + "/metrics", timeout=30)
    assert metrics.status_code == 200 and "biencoder_requests_total" in metrics.text
    assert 'status="401"' in metrics.text


def test_limits_from_the_command_line(guarded_servers: tuple[ServerProcess, ServerProcess]) -> None:
    url = guarded_servers[0].url
    headers = _auth("secret")
    info = httpx.get(url + "/info", headers=headers, timeout=30).json()
    assert info["max_client_batch_size"] == 4 and info["payload_limit"] == 1000

    five = httpx.post(url + "/v1/embeddings", json={"input": ["a"] * 5}, headers=headers, timeout=30)
    assert five.status_code == 422, five.text
    assert (
        five.json()["error"]["code"] == "too_many_inputs" and "at most 4" in five.json()["error"]["message"]
    )
    four = httpx.post(url + "/v1/embeddings", json={"input": ["a"] * 4}, headers=headers, timeout=30)
    assert four.status_code == 200, four.text
    five_tei = httpx.post(url + "/embed", json={"inputs": ["a"] * 5}, headers=headers, timeout=30)
    assert five_tei.status_code == 422 and "at most 4" in five_tei.json()["error"]

    big = js({"input": "a" * 1990})
    assert len(big) > 1000
    too_big = httpx.post(
        url + "/v1/embeddings",
        content=big,
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )
    assert too_big.status_code == 413, too_big.text
    assert "1000" in too_big.json()["error"]["message"]
    # Without the key the same body is refused for the key (checked first; the body is never read).
    no_key = httpx.post(
        url + "/v1/embeddings", content=big, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert no_key.status_code == 401, no_key.text
    # Chunked, past the limit of 1000 bytes.
    head = request("POST", "/v1/embeddings", headers={"Transfer-Encoding": "chunked", **headers}, close=False)
    reply = stream_until_answered(guarded_servers[0].port, head, chunked(b'{"input": "', b"a" * 300, 3000))
    assert reply.status == 413, reply
    assert_error_shape(reply, "/v1/embeddings")
    assert_alive(guarded_servers[0])
