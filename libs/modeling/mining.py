"""Hard-negative mining from a corpus with the current model.

FlagEmbedding's recipe: rank the corpus for each query, sample negatives from a rank window
(e.g. ranks 2-200, skipping the very top where unlabeled positives cluster), and
NV-Retriever's TopK-PercPos filter (arXiv 2407.15831): keep only candidates scoring below
``positive_ratio`` x the positive's score, which drops likely false negatives.

The same ranking gives round-trip consistency filtering (Promptagator, arXiv 2209.11755; InPars):
with ``round_trip_k``, an example whose positive is one of the corpus documents (a query written
from that passage) is left out unless its positive ranks in the top ``round_trip_k`` for its query,
by the model or (``round_trip_lexical``, hybrid) by BM25 (bm25s): a base model that reads a language
or a domain poorly would otherwise drop exactly the queries it has most to learn from.
"""

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import bm25s
import torch

from libs.modeling.data import TrainExample
from libs.modeling.embedder import Embedder

log = logging.getLogger(__name__)


@dataclass
class MiningConfig:
    # Rank window [range_start, range_end) of the ranked corpus (0 = best) to sample from.
    range_start: int = 2
    range_end: int = 200
    negatives: int = 7
    # Keep candidates whose score is below this fraction of the positive's score.
    positive_ratio: float = 0.95
    # Keep the example's own (e.g. LLM-written) negatives ahead of the mined ones.
    keep_existing: bool = True
    default_instruction: str = ""
    batch_size: int = 64
    seed: int = 0
    # Round-trip filter: keep a corpus query only if its passage ranks in the top k (0 = keep all).
    round_trip_k: int = 10
    # Hybrid round trip: a passage BM25 ranks in the top k also keeps its query.
    round_trip_lexical: bool = True


def mine_hard_negatives(
    embedder: Embedder, examples: Sequence[TrainExample], corpus: Sequence[str], config: MiningConfig
) -> list[TrainExample]:
    """Examples with mined negatives; ``corpus`` defaults (when empty) to the positives pool.
    Examples failing the round-trip filter (``config.round_trip_k``) are left out."""
    documents = list(dict.fromkeys(corpus or [e.positive for e in examples]))
    if len(documents) < 2:
        raise ValueError("mining needs a corpus of at least two documents")
    doc_vectors = embedder.encode(documents, batch_size=config.batch_size)
    query_vectors = embedder.encode(
        [e.query for e in examples],
        batch_size=config.batch_size,
        prompts=[embedder.query_prompt(e.instruction or config.default_instruction) for e in examples],
    )
    positive_vectors = embedder.encode([e.positive for e in examples], batch_size=config.batch_size)
    window_end = min(config.range_end, len(documents))
    in_corpus = set(documents)
    lexical_top = (
        lexical_top_k(documents, [e.query for e in examples], config.round_trip_k)
        if config.round_trip_k and config.round_trip_lexical
        else None
    )
    mined, dropped, round_trip = [], 0, 0
    for i, example in enumerate(examples):
        positive_score = float(query_vectors[i] @ positive_vectors[i])
        scores = doc_vectors @ query_vectors[i]
        if (
            config.round_trip_k
            and example.positive in in_corpus
            and positive_rank(scores, positive_score) >= config.round_trip_k
            and not (lexical_top and example.positive in lexical_top[i])
        ):
            round_trip += 1
            continue
        ranked = torch.argsort(scores, descending=True)[config.range_start : window_end].tolist()
        threshold = config.positive_ratio * positive_score
        own = {example.positive, example.query}
        candidates = []
        for j in ranked:
            if documents[j] in own:
                continue
            if float(scores[j]) >= threshold:
                dropped += 1
                continue
            candidates.append(documents[j])
        rng = random.Random(f"{config.seed}:{example.content_hash}")
        sampled = rng.sample(candidates, min(config.negatives, len(candidates)))
        existing = [n for n in example.negatives if n not in own] if config.keep_existing else []
        negatives = list(dict.fromkeys(existing + sampled))[: max(config.negatives, len(existing))]
        mined.append(replace(example, negatives=tuple(negatives)))
    counts = {"examples": len(examples), "corpus": len(documents), "dropped_as_false_negative": dropped}
    log.info("mined hard negatives", extra=counts | {"round_trip_rejected": round_trip})
    return mined


def nearest_passages(embedder: Embedder, queries: Sequence[str], corpus: Sequence[str], count: int) -> list[str]:
    """Up to ``count`` passages of ``corpus``, the ones ``embedder`` ranks nearest to ``queries``:
    every query's rank-r passage comes before any query's rank r+1 (a pooled ranking set, as
    TREC pools judgments)."""
    corpus = list(dict.fromkeys(corpus))
    if len(corpus) <= count:
        return corpus
    scores = embedder.encode(list(queries)) @ embedder.encode(corpus).T
    rank_major = torch.topk(scores, count, dim=1).indices.T.flatten().tolist()
    return [corpus[i] for i in list(dict.fromkeys(rank_major))[:count]]


# One token per CJK character (no spaces between words there), one per word elsewhere.
LEXICAL_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W_]+")


def lexical_tokens(text: str) -> list[str]:
    return LEXICAL_TOKEN.findall(text.lower())


def lexical_top_k(documents: Sequence[str], queries: Sequence[str], k: int) -> list[set[str]]:
    """The documents BM25 ranks in the top ``k`` for each query (only those sharing a token with it)."""
    index = bm25s.BM25()
    index.index([lexical_tokens(d) or [""] for d in documents], show_progress=False)
    k = min(k, len(documents))
    found, scores = index.retrieve([lexical_tokens(q) or [""] for q in queries], k=k, show_progress=False)
    return [{documents[j] for j, score in zip(row, row_scores) if score > 0} for row, row_scores in zip(found, scores)]


def positive_rank(scores: torch.Tensor, positive_score: float) -> int:
    """0-based rank of the positive among the corpus: the documents scoring above it (the positive
    itself, and its duplicates, score the same and do not count)."""
    return int((scores > positive_score + 1e-4).sum())
