"""Dynamic batching: concurrent callers share forward passes, each gets its own rows, and a
request stays on the model it was submitted with."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from services.embedder.batching import DynamicBatcher
from services.embedder.engine import EmbeddingModel, spec_from_folder


class CountingModel(EmbeddingModel):
    """The real engine, counting how many forward steps the batcher asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0

    def encode(self, ids):
        self.steps += 1
        return super().encode(ids)


def test_concurrent_requests_share_forward_steps_and_get_their_own_rows(minilm_path):
    model = CountingModel(spec_from_folder(minilm_path), batch_tokens=4096)
    batcher = DynamicBatcher(batch_tokens=4096, max_wait_s=0.2)
    texts = [[f"request {i} sentence {j}" for j in range(i % 3 + 1)] for i in range(8)]
    barrier = threading.Barrier(8)

    def call(i):
        barrier.wait()
        return batcher.embed(model, model.tokenize(texts[i]))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    batcher.close()
    assert model.steps < 8
    for request, vectors in zip(texts, results):
        np.testing.assert_allclose(vectors, model.encode(model.tokenize(request)), atol=5e-3)


def test_each_request_is_computed_by_the_model_it_was_submitted_with(minilm, tiny_model_path):
    tiny = EmbeddingModel(spec_from_folder(tiny_model_path))
    batcher = DynamicBatcher(batch_tokens=4096, max_wait_s=0.05)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(batcher.embed, model, model.tokenize(["same text"])) for model in (minilm, tiny) * 3]
        shapes = [f.result().shape for f in futures]
    assert batcher.wait_drained(minilm, timeout_s=5)
    batcher.close()
    assert shapes == [(1, 384), (1, 32)] * 3


def test_a_large_request_is_split_into_budget_sized_items_and_reassembled_in_order(minilm):
    batcher = DynamicBatcher(batch_tokens=64, max_wait_s=0.0)
    texts = [f"text number {i} " + "padding words " * (i % 7) for i in range(40)]
    vectors = batcher.embed(minilm, minilm.tokenize(texts))
    batcher.close()
    np.testing.assert_allclose(vectors, minilm.encode(minilm.tokenize(texts)), atol=5e-3)
