"""IR metrics on BEIR-layout folders (pytrec_eval) and Spearman on STS pair files."""

import json
import math

import torch

from libs.evaluation.retrieval import dataset_from_pairs, evaluate_retrieval, load_beir, query_ndcg10, score_run
from libs.evaluation.sts import StsDataset, evaluate_sts, load_sts
from libs.evaluation.suite import load_eval_set


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


def test_query_ndcg10_scores_each_judged_query_in_id_order():
    pairs = [("alpha q", "alpha doc"), ("gamma q", "beta doc"), ("beta q", "beta doc two")]
    dataset = dataset_from_pairs("toy", pairs, extra_documents=["gamma doc"])
    scores = query_ndcg10(one_hot_encoder, dataset)
    by_query = dict(zip(sorted(dataset.qrels), scores))
    query_ids = {text: qid for qid, text in dataset.queries.items()}
    assert by_query[query_ids["alpha q"]] == 1.0 and by_query[query_ids["gamma q"]] < 1.0
    assert math.isclose(scores.mean(), evaluate_retrieval(one_hot_encoder, dataset)["ndcg@10"])


def test_spearman_of_cosine_against_gold_scores(tmp_path):
    file = tmp_path / "pairs.tsv"
    file.write_text("sentence1\tsentence2\tscore\nalpha a\talpha b\t5\nalpha c\tbeta d\t1\nbeta e\tbeta f\t4\n")
    dataset = load_sts(file)
    assert isinstance(load_eval_set(file), StsDataset) and len(dataset.pairs) == 3
    assert evaluate_sts(one_hot_encoder, dataset)["spearman"] > 0.8


def test_shared_beir_folder_loads(shared_data):
    dataset = load_beir(shared_data / "xquad-en")
    assert len(dataset.corpus) == 240 and len(dataset.queries) == 1190
