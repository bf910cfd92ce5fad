"""FlagEmbedding JSONL, the train/dev split, and batches without duplicate texts."""

import json

import pytest

from libs.modeling.data import TrainExample, plan_batches, read_examples, split_train_dev, write_examples


def test_flagembedding_jsonl_round_trips_with_prompt_and_negatives(tmp_path):
    examples = [TrainExample("q1", "p1", ("n1", "n2"), instruction="Find it"), TrainExample("q2", "p2")]
    write_examples(tmp_path / "x.jsonl", examples)
    assert read_examples(tmp_path / "x.jsonl") == examples
    assert json.loads((tmp_path / "x.jsonl").read_text().splitlines()[0])["prompt"] == "Find it"


def test_a_malformed_line_is_reported_with_its_number(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"query": "q", "pos": ["p"]}\n{"query": "q", "pos": []}\n')
    with pytest.raises(ValueError, match="x.jsonl:2"):
        read_examples(tmp_path / "x.jsonl")


def test_split_is_deterministic_and_keeps_a_positive_on_one_side():
    examples = [TrainExample(f"q{i}", f"passage {i % 30}") for i in range(300)]
    train, dev = split_train_dev(examples, 0.2, seed=1)
    assert (train, dev) == split_train_dev(examples, 0.2, seed=1)
    assert not {e.positive for e in train} & {e.positive for e in dev}
    assert 0 < len(dev) < len(examples)


def test_no_text_appears_twice_in_a_batch_and_every_example_is_planned():
    # Examples share positives and negatives in groups of three: they must not meet in one batch.
    examples = [TrainExample(f"query {i}", f"passage {i // 3}", (f"negative {i % 5}",)) for i in range(60)]
    batches = plan_batches(examples, batch_size=8, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(60))
    for batch in batches:
        texts = [t for i in batch for t in examples[i].texts()]
        assert len(texts) == len(set(texts))


def test_batches_are_a_function_of_the_seed():
    examples = [TrainExample(f"q{i}", "x" * (i % 7) + f"p{i}") for i in range(50)]
    assert plan_batches(examples, 8, seed=3) == plan_batches(examples, 8, seed=3)
    assert plan_batches(examples, 8, seed=3) != plan_batches(examples, 8, seed=4)


def test_drop_last_keeps_only_full_batches_for_distributed_runs():
    examples = [TrainExample(f"q{i}", f"p{i}") for i in range(21)]
    assert all(len(b) == 4 for b in plan_batches(examples, 4, seed=0, drop_last=True))
