import json

import pytest

from libs.modeling.data import TrainExample, write_examples
from tests.tiny import build_tiny_model

TOPICS = ["volcano", "river", "glacier", "desert", "forest", "ocean", "island", "canyon", "meadow", "tundra", "swamp", "reef"]


def synthetic_examples(count: int = 48) -> list[TrainExample]:
    """Distinct (query, passage, negative) triples about made-up places."""
    return [
        TrainExample(
            query=f"where is the {TOPICS[i % 12]} number {i}",
            positive=f"The {TOPICS[i % 12]} number {i} lies north of town {i * 3}.",
            negatives=(f"The {TOPICS[(i + 5) % 12]} number {i + 100} lies south of town {i * 7}.",),
        )
        for i in range(count)
    ]


@pytest.fixture
def make_examples():
    return synthetic_examples


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture
def more_data_roots() -> list[str]:
    """Data roots of the trainer fixture beside the test's files and the tiny model (a module overrides it)."""
    return []


@pytest.fixture
def dataset_file(tmp_path) -> str:
    path = tmp_path / "train.jsonl"
    write_examples(path, synthetic_examples())
    return str(path)


@pytest.fixture
def beir_folder(tmp_path) -> str:
    """A small BEIR-layout folder built from the synthetic passages (not the training queries)."""
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    examples = synthetic_examples()
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": e.positive}) + "\n" for i, e in enumerate(examples))
    )
    (folder / "queries.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"q{i}", "text": f"which {TOPICS[i % 12]} is number {i}"}) + "\n" for i in range(len(examples))
        )
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(examples)))
    )
    return str(folder)
