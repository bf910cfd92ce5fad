"""The synthetic dev split the trainer reports base vs tuned on (services.trainer.pipeline)."""

import json

from libs.modeling.data import TrainExample, write_examples
from libs.modeling.embedder import ModelConfig
from libs.modeling.trainer import TrainConfig
from services.trainer.pipeline import RunConfig, dev_dataset, snapshot


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
    dataset = dev_dataset(dev, config)
    assert len(dataset.queries) == len(dev) > 0
    assert sorted(dataset.corpus.values()) == sorted(
        {t for e in examples for t in (e.positive, *e.negatives)}
    )  # 80 passages, not len(dev) * 2
    for query_id, relevant in dataset.qrels.items():
        (doc_id,) = relevant
        number = dataset.queries[query_id].rsplit(" ", 1)[-1]
        assert dataset.corpus[doc_id] == f"passage {number}"
        assert dataset.queries[query_id] == f"Instruct: Find the passage\nQuery: question {number}"


def test_dev_queries_are_also_ranked_against_a_sample_of_the_mining_corpus(tmp_path):
    examples = [TrainExample(f"question {i}", f"passage {i}", (), instruction="Find the passage") for i in range(40)]
    write_examples(tmp_path / "data.jsonl", examples)
    corpus = [f"corpus passage {i}" for i in range(30)]
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
    passages = set(dev_dataset(dev, config).corpus.values())
    sampled = passages & set(corpus)
    assert len(sampled) == 10
    assert passages - sampled == {e.positive for e in examples}
    assert set(dev_dataset(dev, config).corpus.values()) == passages  # the same sample every time
