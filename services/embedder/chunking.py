"""Token-aware chunking with overlap.

Windows of ``chunk_tokens`` model tokens advance by ``chunk_tokens - overlap_tokens``; each
chunk is the exact character span of its tokens in the original text (offset mapping of a
fast tokenizer), so no text is rewritten and every chunk fits the model after the title
and special tokens are added. The chunker works on its own copy of the fast tokenizer's
backend (no truncation), so it never changes the settings of the tokenizer that serving
threads share.
"""

import copy
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int


class Chunker:
    def __init__(self, tokenizer, chunk_tokens: int, overlap_tokens: int):
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
        if not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError(f"overlap_tokens must be in [0, chunk_tokens), got {overlap_tokens} for {chunk_tokens}")
        self.backend = copy.deepcopy(tokenizer.backend_tokenizer)
        self.backend.no_truncation()
        self.backend.no_padding()
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens

    def split(self, text: str) -> list[Chunk]:
        return self.split_many([text])[0]

    def split_many(self, texts: list[str]) -> list[list[Chunk]]:
        """Chunks of each text (one tokenizer call for all); a blank text has no chunks."""
        encodings = self.backend.encode_batch(texts, add_special_tokens=False) if texts else []
        return [self._windows(text, encoding.offsets) for text, encoding in zip(texts, encodings)]

    def _windows(self, text: str, offsets: list[tuple[int, int]]) -> list[Chunk]:
        offsets = [o for o in offsets if o[1] > o[0]]
        if not offsets:
            return [Chunk(0, text.strip(), 0, len(text))] if text.strip() else []
        chunks = []
        step = self.chunk_tokens - self.overlap_tokens
        start_token = 0
        while True:
            window = offsets[start_token : start_token + self.chunk_tokens]
            start, end = window[0][0], window[-1][1]
            chunks.append(Chunk(len(chunks), text[start:end], start, end))
            if start_token + self.chunk_tokens >= len(offsets):
                return chunks
            start_token += step
