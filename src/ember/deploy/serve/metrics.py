"""The server's Prometheus metrics: one registry per app, the predict path's counts taken in bulk.

Every update of a ``prometheus_client`` counter or histogram takes a lock, and an answered
predict request makes three (requests, items, latency): 7% of the event loop's samples in a
py-spy profile of a small model's server at 64 clients. So answered requests are tallied in
plain Python (:meth:`Metrics.answered`: two adds and an append, on the event loop) and folded into
the registry every 256 answers and before every scrape (:meth:`Metrics.flush`), the latencies in
one numpy call (:class:`BulkHistogram`). Errors and the other endpoints, rare by comparison, update
their counters at once.

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> registry = CollectorRegistry()
    >>> hist = BulkHistogram("demo_seconds", "Demo latency", (0.1, 1.0), registry=registry)
    >>> hist.observe_many([0.05, 0.5, 2.0])
    >>> [ln for ln in generate_latest(registry).decode().splitlines() if "_bucket" in ln]
    ['demo_seconds_bucket{le="0.1"} 1.0', 'demo_seconds_bucket{le="1.0"} 2.0', 'demo_seconds_bucket{le="+Inf"} 3.0']
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
FLUSH_EVERY = 256  # answered requests tallied before they are folded into the registry


class BulkHistogram:
    """A Prometheus histogram fed many values at a time (one lock and one numpy call per batch).

    Args:
        name: the metric name (``_bucket``, ``_count`` and ``_sum`` are appended on export).
        documentation: the help text.
        buckets: upper bounds, increasing; ``+Inf`` is added.
        registry: where to register it (a ``prometheus_client.CollectorRegistry``).
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], *, registry: Any) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()  # observe on the event loop, collect in the scrape's thread
        registry.register(self)

    def observe_many(self, values: Sequence[float]) -> None:
        if not len(values):
            return
        array = np.asarray(values, dtype=np.float64)
        # a value equal to a bound counts in that bound's bucket (Prometheus's "le")
        counts = np.bincount(np.searchsorted(self.bounds, array, side="left"), minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(array.sum())

    def observe(self, value: float) -> None:
        self.observe_many([value])

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        with self._lock:
            cumulative, total = np.cumsum(self._counts), self._sum
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        buckets = [(e, float(c)) for e, c in zip(edges, cumulative, strict=True)]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)

    def describe(self) -> list[Any]:
        return []  # collected lazily: the registry need not call collect() at registration


class Metrics:
    """The app's own Prometheus registry (two apps in one process never share counters).

    Args:
        name, backend, sha256: the served model, exported as ``ember_model_info``.
        drift: a collector of drift statistics to export beside the rest, or None.
    """

    def __init__(self, name: str, backend: str, sha256: str, drift: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "ember_requests", "HTTP requests by endpoint and status", ["endpoint", "code"], registry=r
        )
        self.latency = BulkHistogram(
            "ember_request_latency_seconds",
            "Latency of answered predict requests",
            LATENCY_BUCKETS,
            registry=r,
        )
        self.items = Counter("ember_items", "Items predicted", registry=r)
        self.batch_size = Histogram(
            "ember_batch_size", "Items per model batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "ember_batch_latency_seconds", "Model time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.errors = Counter("ember_errors", "Failed requests by kind", ["kind"], registry=r)
        self.safety = Counter(
            "ember_safety_flags", "Safety-filter flags raised on outputs", ["flag"], registry=r
        )
        self.queue_depth = Gauge("ember_queue_depth", "Requests waiting for a batch", registry=r)
        self.in_flight = Gauge("ember_in_flight_requests", "Requests waiting or in the model", registry=r)
        info = Gauge("ember_model_info", "The served model", ["name", "backend", "sha256"], registry=r)
        info.labels(name, backend, sha256).set(1)
        if drift is not None:
            r.register(drift)
        self._ok = self.requests.labels("predict", "200")
        self._answered = 0
        self._items = 0
        self._latencies: list[float] = []

    def watch(self, batcher: Any) -> None:
        """Export ``batcher``'s queue depth and requests in flight."""
        self.queue_depth.set_function(lambda: batcher.queue_depth)
        self.in_flight.set_function(lambda: batcher.in_flight)

    def on_batch(self, items: int, requests: int, seconds: float) -> None:
        self.batch_size.observe(items)
        self.batch_latency.observe(seconds)

    def answered(self, items: int, seconds: float) -> None:
        """A predict request answered 200 with ``items`` items after ``seconds`` (event loop only)."""
        self._answered += 1
        self._items += items
        self._latencies.append(seconds)
        if self._answered >= FLUSH_EVERY:
            self.flush()

    def failed(self, kind: str, status: int) -> None:
        """A predict request answered ``status`` for an error of ``kind``."""
        self.errors.labels(kind).inc()
        self.requests.labels("predict", str(status)).inc()

    def flush(self) -> None:
        """Fold the tallied answers into the registry (event loop only; call before a scrape)."""
        if not self._answered:
            return
        self._ok.inc(self._answered)
        self.items.inc(self._items)
        self.latency.observe_many(self._latencies)
        self._answered, self._items, self._latencies = 0, 0, []
