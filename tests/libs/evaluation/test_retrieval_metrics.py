"""IR metrics on BEIR-layout folders (pytrec_eval) and Spearman on STS pair files."""

import json
import math

import numpy as np
import torch

from libs.evaluation.retrieval import dataset_from_pairs, evaluate_retrieval, load_beir, query_metrics, score_run
from libs.evaluation.sts import StsDataset, load_sts
from libs.evaluation.suite import bootstrap_spearman_difference_se, compare, load_eval_set, paired_difference_se


def test_score_run_matches_hand_computed_ndcg_recall_and_mrr():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    run = {"q1": {"x": 0.9, "a": 0.8}, "q2": {"b": 0.9, "y": 0.8, "c": 0.7}}
    metrics = score_run(qrels, run)
    ndcg_q1 = (1 / math.log2(3)) / 1.0
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert math.isclose(metrics["ndcg@10"], (ndcg_q1 + ndcg_q2) / 2, rel_tol=1e-6)
    assert math.isclose(metrics["mrr@10"], (0.5 + 1.0) / 2)
    assert metrics["recall@100"] == 1.0


def test_mrr_counts_only_the_top_ten():
    run = {"q": {f"d{i}": 1.0 - i / 100 for i in range(20)}}
    assert score_run({"q": {"d15": 1}}, run)["mrr@10"] == 0.0


def test_load_beir_reads_corpus_queries_and_qrels(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "Paris", "text": "capital of France"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "french capital"}) + "\n" + json.dumps({"_id": "q2", "text": "unjudged"}) + "\n"
    )
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    dataset = load_beir(tmp_path)
    assert dataset.corpus == {"d1": "Paris capital of France"}
    assert dataset.queries == {"q1": "french capital"}
    assert dataset.qrels == {"q1": {"d1": 1}}


def one_hot_encoder(texts, is_query):
    """Maps each text to the basis vector of its first word, so equal first words match."""
    words = sorted({t.split()[0] for t in texts} | {"alpha", "beta", "gamma"})
    return torch.stack([torch.nn.functional.one_hot(torch.tensor(words.index(t.split()[0])), len(words)).float() for t in texts])


def test_evaluate_retrieval_ranks_by_cosine():
    dataset = dataset_from_pairs("toy", [("alpha q", "alpha doc"), ("beta q", "beta doc")], extra_documents=["gamma doc"])
    assert evaluate_retrieval(one_hot_encoder, dataset)["ndcg@10"] == 1.0


def test_query_metrics_score_each_judged_query_in_id_order():
    pairs = [("alpha q", "alpha doc"), ("gamma q", "beta doc"), ("beta q", "beta doc two")]
    dataset = dataset_from_pairs("toy", pairs, extra_documents=["gamma doc"])
    scores = query_metrics(one_hot_encoder, dataset)
    by_query = dict(zip(sorted(dataset.qrels), scores["ndcg@10"]))
    query_ids = {text: qid for qid, text in dataset.queries.items()}
    assert by_query[query_ids["alpha q"]] == 1.0 and by_query[query_ids["gamma q"]] < 1.0
    means = evaluate_retrieval(one_hot_encoder, dataset)
    assert all(math.isclose(scores[metric].mean(), means[metric]) for metric in means)


def test_paired_difference_se_is_the_standard_error_of_the_per_query_differences():
    base = np.array([0.0, 1.0, 0.0, 1.0])
    tuned = np.array([1.0, 0.0, 1.0, 0.0])  # differences +1, -1, +1, -1: sd sqrt(4/3), n 4
    assert math.isclose(paired_difference_se(base, tuned), 1 / math.sqrt(3))
    assert paired_difference_se(base, base + 0.25) == 0.0  # the same gain on every query: no doubt about it
    assert paired_difference_se(np.array([0.0]), np.array([1.0])) == 0.0


def test_compare_gives_each_difference_its_standard_error():
    pairs = [("alpha q", "alpha doc"), ("gamma q", "beta doc"), ("beta q", "beta doc two")]
    dataset = dataset_from_pairs("toy", pairs, extra_documents=["gamma doc"])
    same = compare(one_hot_encoder, one_hot_encoder, [dataset])
    assert {r.metric for r in same} == {"ndcg@10", "recall@100", "mrr@10"}
    assert all(r.base == r.tuned and r.difference_se == 0.0 for r in same)

    def reversed_encoder(texts, is_query):  # queries point away from their documents
        vectors = one_hot_encoder(texts, is_query)
        return -vectors if is_query else vectors

    worse = {r.metric: r for r in compare(one_hot_encoder, reversed_encoder, [dataset])}
    base, tuned = (query_metrics(e, dataset)["ndcg@10"] for e in (one_hot_encoder, reversed_encoder))
    assert worse["ndcg@10"].tuned < worse["ndcg@10"].base
    assert math.isclose(worse["ndcg@10"].difference_se, paired_difference_se(base, tuned))


def test_bootstrap_spearman_se_shrinks_with_more_pairs_and_is_zero_for_equal_models():
    rng = np.random.default_rng(1)
    gold = rng.random(400)
    base, tuned = gold + rng.normal(0, 0.3, 400), gold + rng.normal(0, 0.3, 400)
    assert bootstrap_spearman_difference_se(base, base, gold) == 0.0
    small = bootstrap_spearman_difference_se(base[:50], tuned[:50], gold[:50])
    large = bootstrap_spearman_difference_se(base, tuned, gold)
    assert 0.0 < large < small


def test_spearman_of_cosine_against_gold_scores(tmp_path):
    file = tmp_path / "pairs.tsv"
    file.write_text("sentence1\tsentence2\tscore\nalpha a\talpha b\t5\nalpha c\tbeta d\t1\nbeta e\tbeta f\t4\n")
    dataset = load_sts(file)
    assert isinstance(load_eval_set(file), StsDataset) and len(dataset.pairs) == 3
    (row,) = compare(one_hot_encoder, one_hot_encoder, [dataset])
    assert row.metric == "spearman" and row.base > 0.8
    assert row.difference_se == 0.0 and math.isclose(row.tuned, row.base)


def test_shared_beir_folder_loads(shared_data):
    dataset = load_beir(shared_data / "xquad-en")
    assert len(dataset.corpus) == 240 and len(dataset.queries) == 1190
