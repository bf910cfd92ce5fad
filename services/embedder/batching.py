"""Dynamic batching: concurrent requests share forward passes.

Callers tokenize on their own thread and submit token ids with the model they started on.
One worker thread owns the accelerator: it takes the oldest item, waits at most
``max_wait_s`` for more items of the same model until the padded-token budget is full, runs
them together (the engine sorts by length and buckets), and hands each caller its rows.
A request is pinned to the model it was submitted with, so a model swap never mixes
models inside one response, and the old model finishes its queued work (drains) first.
"""

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import metrics

from services.embedder.engine import EmbeddingModel, Tokens, length_batches

log = logging.getLogger(__name__)
meter = metrics.get_meter("embedforge.embedder")
batch_rows = meter.create_histogram("embedder.batch.rows", description="Texts per worker step (across requests)")
queue_wait = meter.create_histogram("embedder.batch.queue_wait", unit="s", description="Time from submit to start of compute")


@dataclass
class _Item:
    model: EmbeddingModel
    rows: list[Tokens]
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)

    @property
    def padded_tokens(self) -> int:
        return len(self.rows) * max(len(x) for x in self.rows)


class DynamicBatcher:
    """Queue of token-id items, executed by one worker thread; ``embed`` blocks for the result."""

    def __init__(self, batch_tokens: int = 8192, max_wait_s: float = 0.002):
        self.batch_tokens = batch_tokens
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._held: deque[_Item] = deque()
        self._in_flight: dict[int, int] = {}
        self._lock = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="embedder-batcher", daemon=True)
        self._worker.start()

    def embed(self, model: EmbeddingModel, rows: list[Tokens]) -> np.ndarray:
        """Vectors for ``rows`` computed by ``model``, in order. Large requests are split into
        length-sorted items of about one budget each, so other callers interleave."""
        if not rows:
            return np.empty((0, model.dimensions), dtype=np.float32)
        groups = length_batches([len(x) for x in rows], self.batch_tokens)
        items = [_Item(model, [rows[i] for i in group]) for group in groups]
        with self._lock:
            self._in_flight[id(model)] = self._in_flight.get(id(model), 0) + len(items)
        for item in items:
            self._queue.put(item)
        out = np.empty((len(rows), model.dimensions), dtype=np.float32)
        for group, item in zip(groups, items):
            out[group] = item.future.result()
        return out

    def wait_drained(self, model: EmbeddingModel, timeout_s: float | None = None) -> bool:
        """Block until no submitted work for ``model`` is pending; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight.get(id(model), 0) == 0, timeout=timeout_s)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    def _next(self, timeout: float | None) -> _Item | None:
        if self._held:
            return self._held.popleft()
        return self._queue.get(timeout=timeout)

    def _run(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            items, tokens = [first], first.padded_tokens
            deadline = time.perf_counter() + self.max_wait_s
            while tokens < self.batch_tokens:
                try:
                    item = self._next(max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                if item.model is not first.model or tokens + item.padded_tokens > self.batch_tokens:
                    self._held.append(item)
                    break
                items.append(item)
                tokens += item.padded_tokens
            self._execute(first.model, items)

    def _execute(self, model: EmbeddingModel, items: list[_Item]) -> None:
        started = time.perf_counter()
        for item in items:
            queue_wait.record(started - item.submitted)
        batch_rows.record(sum(len(i.rows) for i in items))
        try:
            vectors = model.encode([row for item in items for row in item.rows])
        except Exception as exc:  # noqa: BLE001 - the callers receive the error
            log.exception("embedding step failed", extra={"model_id": model.spec.model_id})
            for item in items:
                item.future.set_exception(exc)
        else:
            offset = 0
            for item in items:
                item.future.set_result(vectors[offset : offset + len(item.rows)])
                offset += len(item.rows)
        with self._lock:
            self._in_flight[id(model)] -= len(items)
            if not self._in_flight[id(model)]:
                del self._in_flight[id(model)]
            self._lock.notify_all()
