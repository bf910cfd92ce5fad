"""Contextual retrieval: an LLM writes a short context situating each chunk in its document,
and the context is prepended to the chunk before dense and BM25 indexing (Anthropic,
"Introducing Contextual Retrieval", 2024). Calls go through libs.llm (litellm), so any
provider works by model name, e.g. ``hosted_vllm/<name>`` (a vLLM or llama.cpp server) or ``openai/gpt-4o-mini``.

A document that is a single chunk gets no context (the chunk is the whole document). A
failed call leaves that chunk without context: the document is still indexed, and the
failure is logged and counted.
"""

import logging
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import metrics

from libs.llm import LlmError, complete

log = logging.getLogger(__name__)
meter = metrics.get_meter("embedforge.embedder")
contexts_counter = meter.create_counter("embedder.contexts", description="Chunk contexts requested, by outcome")

PROMPT = """<document>
{document}
</document>
Here is the chunk we want to situate within the whole document
<chunk>
{chunk}
</chunk>
Please give a short succinct context to situate this chunk within the overall document for the purposes of \
improving search retrieval of the chunk. Answer only with the succinct context and nothing else."""


class Contextualizer:
    def __init__(self, model: str, max_tokens: int = 80, max_document_chars: int = 8000, concurrency: int = 8, attempts: int = 3):
        self.model = model
        self.attempts = attempts
        self.max_tokens = max_tokens
        self.max_document_chars = max_document_chars
        self.concurrency = concurrency

    def __call__(self, document: str, chunks: list[str]) -> list[str]:
        if len(chunks) <= 1:
            return [""] * len(chunks)
        excerpt = document[: self.max_document_chars]
        with ThreadPoolExecutor(min(self.concurrency, len(chunks))) as pool:
            return list(pool.map(lambda chunk: self._context(excerpt, chunk), chunks))

    def _context(self, document: str, chunk: str) -> str:
        messages = [{"role": "user", "content": PROMPT.format(document=document, chunk=chunk)}]
        try:
            answer = complete(self.model, messages, max_tokens=self.max_tokens, temperature=0.0, attempts=self.attempts)
        except LlmError as exc:
            contexts_counter.add(1, {"outcome": "failed"})
            log.warning("chunk context failed; indexing the chunk without it", extra={"model": self.model, "reason": exc.reason})
            return ""
        contexts_counter.add(1, {"outcome": "ok"})
        return " ".join(answer.text.split())
