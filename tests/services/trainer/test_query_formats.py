"""Base and tuned models are each evaluated in their own query format: the tuned model with the
run's instruction, the base as its card uses it (its declared query prompt, or plain)."""

import json

from libs.modeling.pooling import format_query
from services.trainer.pipeline import base_query_format, tuned_query_format


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
