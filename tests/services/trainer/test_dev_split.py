"""The synthetic dev split the trainer reports base vs tuned on (services.trainer.pipeline)."""

import json

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


def test_the_merge_weight_walks_toward_the_base_until_dev_falls_out_of_tolerance():
    # dbpedia's quality run: 0.6 scored within 0.005 of the best only by noise, past worse 0.8 and 0.7.
    scores = {1.0: 0.8842, 0.9: 0.8839, 0.8: 0.8791, 0.7: 0.8732, 0.6: 0.8793, 0.5: 0.8709}
    assert merge_weight_choice(scores, 0.005) == 0.9
    assert merge_weight_choice(scores, 0.0) == 1.0
    assert merge_weight_choice({1.0: 0.9, 0.9: 0.9, 0.8: 0.9}, 0.005) == 0.8  # a tie goes to the base
    assert merge_weight_choice({1.0: 0.80, 0.9: 0.86, 0.8: 0.85}, 0.005) == 0.9  # a worse 1.0 is passed over
