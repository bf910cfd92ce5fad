"""libs.llm.complete against a real OpenAI-compatible HTTP server on loopback
(tests/libs/llm/fault_server.py) that returns scripted 429s, 500s, slow answers and bad JSON."""

import pytest

from embedforge.v1 import messages_pb2 as pb
from libs.llm import LlmError, Usage, UsageAccumulator, complete
from tests.libs.llm.fault_server import FaultServer, Reply

MESSAGES = [{"role": "user", "content": "Write a query."}]
SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"], "additionalProperties": False}
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


def call(server: FaultServer, **kwargs):
    return complete("openai/fault-model", MESSAGES, api_base=server.api_base, api_key="test-key", **{**FAST, **kwargs})


def test_rate_limit_is_retried_after_the_servers_retry_after():
    with FaultServer([Reply(429, retry_after="1")], default=Reply(text="hello")) as server:
        answer = call(server)
    assert answer.text == "hello"
    assert answer.attempts == 2
    assert (answer.usage.completion_tokens, answer.usage.calls) == (7, 1)  # the 429 spent nothing
    (first, _), (second, _) = server.requests
    assert second - first >= 1.0


def test_server_errors_are_retried_until_success():
    with FaultServer([Reply(500), Reply(503)], default=Reply(text="fine")) as server:
        answer = call(server)
    assert (answer.text, answer.attempts, len(server.requests)) == ("fine", 3, 3)


def test_a_slow_answer_times_out_and_is_retried():
    with FaultServer([Reply(delay_s=3.0)], default=Reply(text="quick")) as server:
        answer = call(server, timeout_s=0.5)
    assert (answer.text, answer.attempts) == ("quick", 2)


def test_malformed_json_is_retried_then_fails_with_reason_invalid_json():
    with FaultServer([], default=Reply(text='{"query": "unterminated')) as server:
        with pytest.raises(LlmError) as failure:
            call(server, json_schema=SCHEMA, attempts=3)
    assert failure.value.reason == "invalid_json"
    assert failure.value.attempts == 3
    assert (failure.value.usage.prompt_tokens, failure.value.usage.completion_tokens) == (
        3 * 11,
        3 * 7,
    )  # rejected answers still cost tokens
    assert len(server.requests) == 3


def test_json_missing_a_required_key_is_a_schema_violation():
    with FaultServer([Reply(text='{"other": "x"}')], default=Reply(text='{"query": "ok"}')) as server:
        answer = call(server, json_schema=SCHEMA)
    assert answer.text == '{"query": "ok"}'
    assert answer.attempts == 2
    assert (answer.usage.completion_tokens, answer.usage.calls) == (2 * 7, 2)


def test_persistent_rate_limit_fails_with_reason_rate_limited():
    with FaultServer([], default=Reply(429, retry_after="0")) as server:
        with pytest.raises(LlmError) as failure:
            call(server, attempts=3)
    assert failure.value.reason == "rate_limited"
    assert len(server.requests) == 3


def test_client_errors_are_not_retried():
    with FaultServer([], default=Reply(400)) as server:
        with pytest.raises(LlmError) as failure:
            call(server)
    assert failure.value.reason == "bad_request"
    assert len(server.requests) == 1


def test_schema_is_sent_as_response_format_to_openai_compatible_servers():
    with FaultServer([], default=Reply(text='{"query": "q"}')) as server:
        call(server, json_schema=SCHEMA)
    body = server.requests[0][1]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA


def test_usage_of_every_attempt_is_accumulated_per_model():
    accumulator = UsageAccumulator()
    with FaultServer([Reply(text="not json")], default=Reply(text='{"query": "q"}')) as server:
        answer = call(server, json_schema=SCHEMA, accumulator=accumulator)
    totals = accumulator.totals()["openai/fault-model"]
    assert (answer.usage.calls, answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        2,
        22,
        14,
    )  # the rejected first answer counts
    assert (totals.calls, totals.prompt_tokens, totals.completion_tokens) == (2, 22, 14)


def test_usage_becomes_the_llm_usage_message_field_for_field():
    usage = Usage("local/x", prompt_tokens=3, completion_tokens=5, cost_usd=0.25, latency_s=1.5, calls=2)
    assert usage.message() == pb.LlmUsage(
        model="local/x", prompt_tokens=3, completion_tokens=5, cost_usd=0.25, latency_s=1.5, calls=2
    )
