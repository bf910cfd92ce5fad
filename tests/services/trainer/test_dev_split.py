"""The synthetic dev split the trainer reports base vs tuned on (services.trainer.pipeline)."""

import json

import numpy as np
import torch

from libs.modeling.data import TrainExample, write_examples
from libs.modeling.embedder import ModelConfig
from libs.modeling.trainer import TrainConfig
from services.trainer.pipeline import RunConfig, dev_dataset, merge_weight_choice, snapshot


def test_dev_queries_rank_their_positive_among_every_passage_of_the_snapshot(tmp_path):
    examples = [
        TrainExample(f"question {i}", f"passage {i}", (f"distractor {i}",), instruction="Find the passage") for i in range(40)
    ]
    write_examples(tmp_path / "data.jsonl", examples)
    config = RunConfig(
        str(tmp_path / "data.jsonl"), str(tmp_path / "run"), ModelConfig("unused"), TrainConfig(output_dir=""), dev_fraction=0.2
    )
    (tmp_path / "run").mkdir()
    train, dev, _ = snapshot(config)
    dataset = dev_dataset(dev, config, TopicEmbedder())
    assert len(dataset.queries) == len(dev) > 0
    assert sorted(dataset.corpus.values()) == sorted(
        {t for e in examples for t in (e.positive, *e.negatives)}
    )  # 80 passages, not len(dev) * 2
    for query_id, relevant in dataset.qrels.items():
        (doc_id,) = relevant
        number = dataset.queries[query_id].rsplit(" ", 1)[-1]
        assert dataset.corpus[doc_id] == f"passage {number}"
        assert dataset.queries[query_id] == f"question {number}"  # its instruction becomes a prompt when encoded


class TopicEmbedder:
    """A base-model stand-in: a text's vector is one-hot on the number it ends with, so
    "question 3" is nearest to "corpus passage 3", then to every other passage alike."""

    def encode(self, texts, batch_size=64):
        vectors = torch.full((len(texts), 64), 0.01)
        for row, text in enumerate(texts):
            vectors[row, int(text.rsplit(" ", 1)[-1])] = 1.0
        return torch.nn.functional.normalize(vectors, dim=-1)


def test_dev_queries_are_also_ranked_against_the_corpus_passages_the_base_model_finds_nearest(tmp_path):
    examples = [TrainExample(f"question {i}", f"passage {i}", (), instruction="Find the passage") for i in range(40)]
    write_examples(tmp_path / "data.jsonl", examples)
    corpus = [f"corpus passage {i}" for i in range(60)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in corpus))
    config = RunConfig(
        str(tmp_path / "data.jsonl"),
        str(tmp_path / "run"),
        ModelConfig("unused"),
        TrainConfig(output_dir=""),
        corpus_path=str(tmp_path / "corpus.jsonl"),
        corpus_whole_documents=True,
        dev_fraction=0.2,
        dev_corpus_passages=10,
    )
    (tmp_path / "run").mkdir()
    _, dev, _ = snapshot(config)
    passages = set(dev_dataset(dev, config, TopicEmbedder()).corpus.values())
    from_corpus = passages & set(corpus)
    assert len(from_corpus) == 10
    # Each of the 8 dev queries' nearest corpus passage first; 2 of the others fill the budget.
    assert {f"corpus passage {e.query.split()[-1]}" for e in dev} < from_corpus
    assert passages - from_corpus == {e.positive for e in examples}


def dev_scores(first: int, queries: int = 50) -> np.ndarray:
    """Per-query nDCG@10 of a dev split where the first ``first`` queries rank their positive second."""
    return np.array([0.63] * first + [1.0] * (queries - first))


def test_the_merge_weight_is_the_most_base_like_within_one_standard_error_of_the_best():
    # One query of 50 moving is within one standard error of the paired difference; four are not.
    scores = {1.0: dev_scores(0), 0.9: dev_scores(1), 0.8: dev_scores(1), 0.7: dev_scores(4), 0.6: dev_scores(1)}
    assert merge_weight_choice(scores, 30) == 0.8  # 0.6 lies past the worse 0.7
    assert merge_weight_choice({1.0: dev_scores(2), 0.9: dev_scores(2), 0.8: dev_scores(2)}, 30) == 0.8  # a tie goes to the base
    # A worse 1.0 is passed over.
    assert merge_weight_choice({1.0: dev_scores(6), 0.9: dev_scores(0), 0.8: dev_scores(5)}, 30) == 0.9
    assert merge_weight_choice({1.0: dev_scores(0), 0.9: dev_scores(10)}, 30) == 1.0


def test_a_dev_split_too_small_for_its_standard_error_keeps_the_best_mean():
    # 16 queries, as cmrc2018-dev's job had, four of them moving both ways between weights: every
    # weight is within one standard error of the best, so the walk reaches 0.5; below the floor
    # the best mean stays.
    best = np.array([1.0] * 12 + [0.5] * 4)

    def moved(down: int, up: int) -> np.ndarray:
        return best - 0.63 * (np.arange(16) < down) + 0.5 * ((np.arange(16) >= 12) & (np.arange(16) < 12 + up))

    scores = {1.0: best, 0.9: moved(1, 0), 0.7: moved(2, 1), 0.5: moved(3, 2)}
    assert merge_weight_choice(scores, 0) == 0.5
    assert merge_weight_choice(scores, 30) == 1.0
    assert merge_weight_choice({**scores, 0.7: best + 0.01}, 30) == 0.7
