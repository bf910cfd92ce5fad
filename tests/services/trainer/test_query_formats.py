"""Base and tuned models are each evaluated in their own query format: the tuned model with the
run's instruction, the base as its card uses it (its declared query prompt, or plain)."""

import json

from libs.modeling.data import TrainExample, write_examples
from libs.modeling.embedder import ModelConfig
from libs.modeling.pooling import format_query
from libs.modeling.trainer import TrainConfig
from services.trainer.pipeline import RunConfig, base_query_format, instructions_inform, snapshot, tuned_query_format
from tests.tiny import build_tiny_model


def test_the_tuned_model_gets_the_instruction_once():
    tuned = tuned_query_format("Find the place")
    assert tuned("capital of France") == format_query("Find the place", "capital of France")
    dev_query = format_query("Another task", "capital of France")  # dev queries arrive formatted
    assert tuned(dev_query) == dev_query


def test_the_base_gets_its_own_prompt_and_never_the_instruction(tmp_path):
    plain = base_query_format(str(tmp_path))
    assert plain(format_query("Find the place", "capital of France")) == "capital of France"
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: "}})
    )
    own = base_query_format(str(tmp_path))
    assert own(format_query("Find the place", "capital of France")) == "query: capital of France"
    assert own("capital of France") == "query: capital of France"


def test_one_shared_instruction_is_dropped_for_an_encoder_and_kept_for_a_decoder(tmp_path):
    encoder, decoder = build_tiny_model("bert", tmp_path / "bert"), build_tiny_model("qwen2", tmp_path / "qwen2")
    one_task = [TrainExample(f"question {i}", f"passage {i}", instruction="Find the passage") for i in range(4)]
    two_tasks = one_task + [TrainExample("a sentence", "its paraphrase", instruction="Find a paraphrase")]
    assert not instructions_inform(one_task, encoder)
    assert instructions_inform(two_tasks, encoder)
    assert instructions_inform(one_task, decoder)


def test_a_run_without_query_instructions_drops_the_examples_own(tmp_path):
    examples = [TrainExample(f"question {i}", f"passage {i}", instruction="Find the passage") for i in range(10)]
    write_examples(tmp_path / "data.jsonl", examples)
    (tmp_path / "run").mkdir()
    config = RunConfig(str(tmp_path / "data.jsonl"), str(tmp_path / "run"), ModelConfig("unused"), TrainConfig(output_dir=""))
    train, dev, _ = snapshot(config)
    assert {e.instruction for e in train + dev} == {"Find the passage"}
    config.query_instructions = False
    train, dev, _ = snapshot(config)
    assert {e.instruction for e in train + dev} == {""} and len(train + dev) == 10
