"""FlagEmbedding JSONL, the train/dev split, and batches without a repeated query."""

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


@pytest.mark.parametrize("size", range(3, 12))
def test_a_small_set_still_holds_out_a_positive_for_dev(size):
    examples = [TrainExample(f"q{i}", f"passage {i // 2}") for i in range(size)]  # two questions per passage
    train, dev = split_train_dev(examples, 0.1)
    assert dev and train
    assert not {e.positive for e in train} & {e.positive for e in dev}
    assert split_train_dev(examples, 0.0) == (examples, [])


def test_shared_positives_and_negatives_still_fill_batches_but_a_query_never_repeats():
    # A small corpus: 10 passages, 4 questions each; every hard negative is another example's positive.
    examples = [
        TrainExample(f"question {i} about passage {i % 10}", f"passage {i % 10}", (f"passage {(i + 3) % 10}",)) for i in range(40)
    ]
    batches = plan_batches(examples, batch_size=8, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(40))
    assert [len(b) for b in batches] == [8] * 5
    # Two examples with one query text (and different positives) never meet in a batch.
    repeated = [TrainExample("what is it", f"answer {i}") for i in range(3)] + [TrainExample(f"q{i}", f"a{i}") for i in range(9)]
    batches = plan_batches(repeated, batch_size=4, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(12))
    for batch in batches:
        queries = [repeated[i].query for i in batch]
        assert len(queries) == len(set(queries))
    assert sum(len(b) >= 2 for b in batches) >= 3


def test_six_examples_about_three_documents_form_batches_of_at_least_two():
    examples = [
        TrainExample(f"question {i}", f"document {i % 3}", tuple(f"document {j}" for j in range(3) if j != i % 3))
        for i in range(6)
    ]
    for seed in range(5):
        batches = plan_batches(examples, batch_size=4, seed=seed)
        assert sorted(len(b) for b in batches) == [2, 4]


def test_batches_are_a_function_of_the_seed():
    examples = [TrainExample(f"q{i}", "x" * (i % 7) + f"p{i}") for i in range(50)]
    assert plan_batches(examples, 8, seed=3) == plan_batches(examples, 8, seed=3)
    assert plan_batches(examples, 8, seed=3) != plan_batches(examples, 8, seed=4)


def test_drop_last_keeps_only_full_batches_for_distributed_runs():
    examples = [TrainExample(f"q{i}", f"p{i}") for i in range(21)]
    assert all(len(b) == 4 for b in plan_batches(examples, 4, seed=0, drop_last=True))
