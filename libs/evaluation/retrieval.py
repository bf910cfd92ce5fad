"""Retrieval evaluation on BEIR-layout data with pytrec_eval (the trec_eval implementation).

A BEIR folder holds ``corpus.jsonl`` ({"_id","title","text"}), ``queries.jsonl`` ({"_id","text"})
and ``qrels/<split>.tsv`` (query-id, corpus-id, score; header line). Metrics: nDCG@10 (primary),
Recall@100 and MRR@10 (reciprocal rank within the top 10). Documents are encoded as
``title + " " + text`` (the BEIR convention), queries with the instruction.
"""

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytrec_eval
import torch

# encode(texts, is_query) -> L2-normalized vectors, one row per text
Encoder = Callable[[list[str], bool], torch.Tensor]
METRICS = ("ndcg@10", "recall@100", "mrr@10")


@dataclass
class RetrievalDataset:
    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(folder: str | Path, split: str = "test") -> RetrievalDataset:
    folder = Path(folder)
    corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            corpus[str(row["_id"])] = f"{row.get('title', '')} {row['text']}".strip()
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        all_queries = {str(row["_id"]): row["text"] for row in map(json.loads, handle)}
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader)
        for query_id, doc_id, score in reader:
            qrels.setdefault(query_id, {})[doc_id] = int(float(score))
    queries = {q: all_queries[q] for q in qrels if q in all_queries}
    return RetrievalDataset(folder.name, corpus, queries, qrels)


def search(encode: Encoder, dataset: RetrievalDataset, top_k: int = 100, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Top-k documents per query by cosine similarity, as a pytrec_eval run."""
    doc_ids = list(dataset.corpus)
    query_ids = list(dataset.queries)
    docs = encode([dataset.corpus[d] for d in doc_ids], False)
    queries = encode([dataset.queries[q] for q in query_ids], True)
    run: dict[str, dict[str, float]] = {}
    k = min(top_k, len(doc_ids))
    for start in range(0, len(query_ids), batch_size):
        scores, indices = torch.topk(queries[start : start + batch_size] @ docs.T, k, dim=1)
        for row, query_id in enumerate(query_ids[start : start + batch_size]):
            run[query_id] = {doc_ids[int(i)]: float(s) for s, i in zip(scores[row], indices[row])}
    return run


def query_scores(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, np.ndarray]:
    """nDCG@10, Recall@100 and MRR@10 of each judged query that has a result, in query-id order
    (pytrec_eval): two runs' arrays over the same qrels pair query by query."""
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in run.items()}
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    queries = [q for q in sorted(qrels) if q in run]
    if not queries:
        raise ValueError("no judged query has a result")
    return {
        "ndcg@10": np.array([full[q]["ndcg_cut_10"] for q in queries]),
        "recall@100": np.array([full[q]["recall_100"] for q in queries]),
        "mrr@10": np.array([mrr[q]["recip_rank"] for q in queries]),
    }


def score_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the judged queries."""
    return {metric: float(values.mean()) for metric, values in query_scores(qrels, run).items()}


def query_metrics(encode: Encoder, dataset: RetrievalDataset) -> dict[str, np.ndarray]:
    return query_scores(dataset.qrels, search(encode, dataset))


def evaluate_retrieval(encode: Encoder, dataset: RetrievalDataset) -> dict[str, float]:
    return score_run(dataset.qrels, search(encode, dataset))


def dataset_from_pairs(name: str, pairs: Sequence[tuple[str, str]], extra_documents: Sequence[str] = ()) -> RetrievalDataset:
    """A retrieval set from (query, positive) pairs, e.g. the synthetic dev split."""
    corpus: dict[str, str] = {}
    by_text: dict[str, str] = {}
    for text in [p for _, p in pairs] + list(extra_documents):
        if text not in by_text:
            by_text[text] = f"d{len(by_text)}"
            corpus[by_text[text]] = text
    queries = {f"q{i}": q for i, (q, _) in enumerate(pairs)}
    qrels = {f"q{i}": {by_text[p]: 1} for i, (_, p) in enumerate(pairs)}
    return RetrievalDataset(name, corpus, queries, qrels)
