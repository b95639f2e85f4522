"""Prometheus metrics of one server, in a registry of its own (several apps may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from biencoder.serve.batcher import BatchStats

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_TOKENS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """Requests by route and status, durations, batch sizes, queue depth, truncated inputs."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "biencoder_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "biencoder_request_duration_seconds",
            "Time from request to response",
            ["route"],
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "biencoder_queue_duration_seconds",
            "Time a request's texts waited for the model",
            buckets=_SECONDS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "biencoder_inference_duration_seconds", "Model time of one batch", buckets=_SECONDS, registry=r
        )
        self.batch_texts = Histogram(
            "biencoder_batch_size", "Texts in one model batch", buckets=_COUNTS, registry=r
        )
        self.batch_requests = Histogram(
            "biencoder_batch_requests", "Requests joined in one model batch", buckets=_COUNTS, registry=r
        )
        self.batch_tokens = Histogram(
            "biencoder_batch_padded_tokens", "Padded tokens of one model batch", buckets=_TOKENS, registry=r
        )
        self.queue_depth = Gauge("biencoder_queue_depth", "Texts waiting for the model", registry=r)
        self.in_flight = Gauge("biencoder_requests_in_flight", "Requests being answered", registry=r)
        self.input_tokens = Counter("biencoder_input_tokens", "Tokens of embedded inputs", registry=r)
        self.inputs = Counter("biencoder_inputs", "Embedded inputs", registry=r)
        self.truncated = Counter(
            "biencoder_truncated_inputs", "Inputs cut at the model's max_seq_length", registry=r
        )
        self.rejected = Counter(
            "biencoder_rejected_requests", "Requests refused before reaching a route", ["reason"], registry=r
        )
        self.dropped = Counter(
            "biencoder_dropped_requests", "Requests whose client disconnected before the answer", registry=r
        )

    def observe_batch(self, stats: BatchStats) -> None:
        self.inference_seconds.observe(stats.seconds)
        self.batch_texts.observe(stats.texts)
        self.batch_requests.observe(stats.requests)
        self.batch_tokens.observe(stats.padded_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
