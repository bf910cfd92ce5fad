"""Contextual retrieval through libs.llm. The LLM is a recorded-response provider registered
in litellm (it stands in for a remote API): it answers each chunk with a canned context."""

import threading

import litellm
from litellm import CustomLLM

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import messages_pb2 as pb
from services.embedder.contextual import Contextualizer

REPORT = (
    " ".join(f"Paragraph {i}: shipments, prices and harbour logistics of the season." for i in range(60))
    + " Cloves were the main export."
)


class RecordedContexts(CustomLLM):
    """Answers with a context naming the document's subject; fails when told to."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail = fail
        self.prompts: list[str] = []
        self.lock = threading.Lock()

    def completion(self, model, messages, api_base, custom_prompt_dict, model_response, *args, **kwargs):
        with self.lock:
            self.prompts.append(messages[-1]["content"])
        if self.fail:
            raise ValueError("recorded provider: no answer")
        model_response.choices[0].message.content = "  From the 1890 report on the Zanzibar spice trade.\n"
        model_response.usage = litellm.Usage(prompt_tokens=10, completion_tokens=9, total_tokens=19)
        return model_response


def register(provider: RecordedContexts) -> None:
    litellm.custom_provider_map = [p for p in litellm.custom_provider_map if p["provider"] != "recorded-context"] + [
        {"provider": "recorded-context", "custom_handler": provider}
    ]


def test_each_chunk_gets_an_llm_context_that_makes_it_findable(servicer):
    provider = RecordedContexts()
    register(provider)
    servicer.indexer.contextualize = Contextualizer("recorded-context/any")
    stats = servicer.indexer.apply(
        [pb.Document(doc_id="report", text=REPORT), pb.Document(doc_id="other", text="Tea grows in Assam.")],
        servicer.current,
        "documents",
    )
    assert stats.chunks > 2
    assert len(provider.prompts) == stats.chunks - 1  # the single-chunk document needs no context
    assert all("<chunk>" in p and "Cloves" in p for p in provider.prompts)
    hits = servicer.Search(api.SearchRequest(query="Zanzibar", top_k=50, mode=api.SEARCH_MODE_HYBRID), None).hits
    assert {h.doc_id for h in hits[: stats.chunks - 1]} == {"report"}
    records, _ = servicer.store.client.scroll(servicer.store.resolve("documents"), limit=100, with_payload=True)
    contexts = {(r.payload["doc_id"], r.payload["context"]) for r in records}
    assert contexts == {("report", "From the 1890 report on the Zanzibar spice trade."), ("other", "")}


def test_a_failed_context_call_still_indexes_the_chunk_without_context(servicer):
    register(RecordedContexts(fail=True))
    servicer.indexer.contextualize = Contextualizer("recorded-context/any", attempts=1)
    stats = servicer.indexer.apply([pb.Document(doc_id="report", text=REPORT)], servicer.current, "documents")
    assert stats.chunks > 1 and servicer.store.count("documents") == stats.chunks
    records, _ = servicer.store.client.scroll(servicer.store.resolve("documents"), limit=100, with_payload=True)
    assert {r.payload["context"] for r in records} == {""}
