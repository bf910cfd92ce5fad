"""Base and tuned models are each evaluated in their own query format: the tuned model with the
run's instruction (a dev query with its own), the base as its card uses it (its declared query
prompt, or plain)."""

import json

import torch

from libs.modeling.data import TrainExample
from services.trainer.pipeline import base_encoder, tuned_encoder


class Recorder:
    """Stands in for an Embedder: records what encode receives; query_prompt as an encoder's."""

    def __init__(self):
        self.calls = []

    def query_prompt(self, instruction: str) -> str:
        return f"{instruction}: " if instruction else ""

    def encode(self, texts, prompts=()):
        self.calls.append((list(texts), list(prompts)))
        return torch.zeros(len(texts), 2)


def test_the_tuned_model_gets_the_run_instruction_or_a_dev_query_s_own_as_a_prompt():
    model = Recorder()
    dev = [TrainExample("capital of Peru", "Lima is ...", instruction="Another task"), TrainExample("plain one", "...")]
    encode = tuned_encoder(model, "Find the place", dev)
    encode(["capital of France", "capital of Peru", "plain one"], True)
    encode(["Paris is ..."], False)
    assert model.calls == [
        (["capital of France", "capital of Peru", "plain one"], ["Find the place: ", "Another task: ", "Find the place: "]),
        (["Paris is ..."], []),
    ]


def test_the_base_gets_its_own_prompt_and_never_the_instruction(tmp_path):
    model = Recorder()
    base_encoder(model, str(tmp_path))(["capital of France"], True)
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: "}})
    )
    base_encoder(model, str(tmp_path))(["capital of France"], True)
    base_encoder(model, str(tmp_path))(["Paris is ..."], False)
    assert model.calls == [(["capital of France"], []), (["query: capital of France"], []), (["Paris is ..."], [])]
