"""Embed over a real gRPC server on loopback: validation, concurrency, hot model swap."""

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import messages_pb2 as pb

QUERY = api.INPUT_KIND_QUERY
DOCUMENT = api.INPUT_KIND_DOCUMENT


def embed(stub, texts, kind=DOCUMENT, **kwargs) -> np.ndarray:
    response = stub.Embed(api.EmbedRequest(texts=texts, kind=kind, **kwargs))
    return np.array([e.values for e in response.embeddings])


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"texts": [], "kind": DOCUMENT}, "texts is empty"),
        ({"texts": ["ok", "  "], "kind": DOCUMENT}, "texts[1] is empty"),
        ({"texts": ["x"] * 65, "kind": DOCUMENT}, "too many texts: 65 > 64"),
        ({"texts": ["y" * 2001], "kind": DOCUMENT}, "texts[0] has 2001 characters > 2000"),
        ({"texts": ["z" * 1500] * 14, "kind": DOCUMENT}, "request too large: 21000 characters > 20000"),
        (
            {"texts": ["hello"], "kind": api.INPUT_KIND_UNSPECIFIED},
            "kind must be INPUT_KIND_QUERY or INPUT_KIND_DOCUMENT, got INPUT_KIND_UNSPECIFIED",
        ),
        ({"texts": ["hello"], "kind": 7}, "kind must be INPUT_KIND_QUERY or INPUT_KIND_DOCUMENT, got 7"),
        ({"texts": ["hello"], "kind": DOCUMENT, "dimensions": 385}, "dimensions must be between 0 (all) and 384"),
    ],
    ids=[
        "empty",
        "blank-text",
        "too-many",
        "oversized-text",
        "oversized-request",
        "unspecified-kind",
        "unknown-kind",
        "too-many-dimensions",
    ],
)
def test_bad_embed_requests_get_invalid_argument_with_a_clear_message(stub, request_fields, message):
    with pytest.raises(grpc.RpcError) as error:
        stub.Embed(api.EmbedRequest(**request_fields))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


def test_bad_search_requests_get_invalid_argument(stub):
    for request in (api.SearchRequest(query=" "), api.SearchRequest(query="q", top_k=-1), api.SearchRequest(query="q", mode=9)):
        with pytest.raises(grpc.RpcError) as error:
            stub.Search(request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_query_instruction_counts_once_per_text_against_the_request_size(stub):
    """The instruction is prepended to every text, so 10 short texts with a 1,900-character
    instruction are 19,050 characters of work (the limit here is 20,000) and 11 are too many."""
    instruction = "i" * 1900
    assert len(embed(stub, ["hello"] * 10, kind=QUERY, instruction=instruction)) == 10
    with pytest.raises(grpc.RpcError) as error:
        stub.Embed(api.EmbedRequest(texts=["hello"] * 11, kind=QUERY, instruction=instruction))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request too large: 20955 characters > 20000" in error.value.details()


def test_an_oversized_instruction_is_refused_by_the_field_limit(stub):
    with pytest.raises(grpc.RpcError) as error:
        stub.Embed(api.EmbedRequest(texts=["hello"], kind=QUERY, instruction="i" * 1_000_000))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "instruction has 1000000 characters; at most 2000 are allowed"


@pytest.mark.parametrize("collection", ["../../escape", "/tmp/x", "a" * 200, "x\x00y", ".."])
def test_collection_names_outside_the_id_format_are_refused(stub, collection):
    for call in (
        lambda: stub.Search(api.SearchRequest(query="q", collection=collection)),
        lambda: stub.GetModelInfo(api.GetModelInfoRequest(collection=collection)),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("collection ")


def test_search_of_a_missing_collection_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as error:
        stub.Search(api.SearchRequest(query="anything", collection="nowhere"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nowhere" in error.value.details()


def test_embeddings_are_unit_length_and_match_the_engine(stub, minilm):
    texts = ["The cat sat on the mat.", "Quantum chromodynamics describes the strong interaction between quarks and gluons."]
    vectors = embed(stub, texts)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, minilm.encode(minilm.tokenize(texts)), atol=1e-6)


def test_queries_carry_the_instruction_and_documents_do_not(stub, minilm):
    query = embed(stub, ["capital of France"], kind=QUERY, instruction="Find the city")
    expected = minilm.encode(minilm.tokenize(["capital of France"], "Find the city: "))  # an encoder's prompt
    np.testing.assert_allclose(query, expected, atol=1e-6)
    assert not np.allclose(query, minilm.encode(minilm.tokenize(["capital of France"])), atol=1e-3)
    document = embed(stub, ["capital of France"], kind=DOCUMENT, instruction="Find the city")
    np.testing.assert_allclose(document, minilm.encode(minilm.tokenize(["capital of France"])), atol=1e-6)


def test_matryoshka_dimensions_truncate_and_renormalize(stub):
    full = embed(stub, ["a sentence about trains"])
    short = embed(stub, ["a sentence about trains"], dimensions=64)
    assert short.shape == (1, 64)
    np.testing.assert_allclose(short, full[:, :64] / np.linalg.norm(full[:, :64]), atol=1e-5)


def test_response_reports_model_dimensions_and_tokens(stub, minilm):
    response = stub.Embed(api.EmbedRequest(texts=["one two", "three"], kind=DOCUMENT))
    assert response.model_id == "minilm"
    assert response.dimensions == 384
    assert response.tokens == sum(len(x) for x in minilm.tokenize(["one two", "three"]))


def test_model_info_describes_the_serving_model_and_its_collection(stub, servicer):
    info = stub.GetModelInfo(api.GetModelInfoRequest())
    assert (info.model_id, info.dimensions, info.max_length, info.pooling, info.collection) == (
        "minilm",
        384,
        256,
        "mean",
        "documents",
    )
    assert info.dtype in ("bf16", "fp32")
    assert (info.points, info.documents) == (0, 0)
    long_text = " ".join(f"word{i}" for i in range(600))
    servicer.indexer.apply(
        [pb.Document(doc_id="a", text=long_text), pb.Document(doc_id="b", text="short")], servicer.current, "documents"
    )
    info = stub.GetModelInfo(api.GetModelInfoRequest())
    assert info.documents == 2 and info.points > 2


def test_sixteen_concurrent_clients_get_their_own_results_in_order(stub, minilm):
    """Requests of different sizes and lengths are batched together by the server; every client
    must get exactly the vectors of its own texts, in its order."""
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    requests = [
        [f"client {c} text {i}: " + " ".join(words[: 1 + (c * 7 + i * 3) % len(words)]) for i in range(1 + c % 5)]
        for c in range(16)
    ]
    expected = [minilm.encode(minilm.tokenize(texts)) for texts in requests]
    barrier = threading.Barrier(16)

    def client(index: int):
        barrier.wait()
        return [embed(stub, requests[index]) for _ in range(3)]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, range(16)))
    for index, rounds in enumerate(results):
        for vectors in rounds:
            np.testing.assert_allclose(vectors, expected[index], atol=5e-3)


def test_model_swap_under_load_loses_no_request(stub, servicer, publish_tiny):
    """8 clients embed without pause while the service swaps to another model: every call
    succeeds, and each response is wholly from one model (384-d minilm or 32-d tiny)."""
    stop = threading.Event()
    seen: list[tuple[str, int]] = []
    errors: list[Exception] = []

    def client():
        while not stop.is_set():
            try:
                response = stub.Embed(api.EmbedRequest(texts=["swap me", "and me too"], kind=DOCUMENT))
                assert all(len(e.values) == response.dimensions for e in response.embeddings)
                seen.append((response.model_id, response.dimensions))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    while len(seen) < 8 and not errors:
        threading.Event().wait(0.05)
    servicer.swap(publish_tiny(servicer.settings, dimensions=32))
    after_swap = len(seen)
    while len(seen) < after_swap + 16 and not errors:
        threading.Event().wait(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(seen) == {("minilm", 384), ("tiny", 32)}
    assert seen[-1] == ("tiny", 32)
    assert stub.GetModelInfo(api.GetModelInfoRequest()).pooling == "cls"
