"""The local generator server (libs.local.llm_server): llama.cpp's OpenAI-compatible server,
reached through litellm as `hosted_vllm/<name>` exactly as the cluster reaches vLLM."""

import json
import os
import threading

import jsonschema
import pytest

from libs.llm import complete
from libs.llm.sources import ModelSourceError
from libs.local.llm_server import LlamaServer, served_gguf
from libs.local.runtime import LocalRuntime

SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string", "maxLength": 60}, "language": {"type": "string", "enum": ["en", "fr"]}},
    "required": ["query", "language"],
    "additionalProperties": False,
}


def test_the_server_answers_through_litellm_with_usage(llm_server):
    answer = complete(
        llm_server.model, [{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0.0, api_base=llm_server.api_base
    )
    assert answer.text.strip()
    assert answer.usage.model == "hosted_vllm/qwen2.5-coder-0.5b-instruct"
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 8
    assert answer.usage.cost_usd == 0.0


def test_the_json_schema_constrains_decoding_on_the_server(llm_server):
    # The grammar bounds the object (query <= 60 characters), so 128 tokens always fit it whole.
    messages = [{"role": "user", "content": "Write a search query about rivers. Answer in JSON."}]
    for seed in range(3):
        answer = complete(
            llm_server.model,
            messages,
            json_schema=SCHEMA,
            max_tokens=128,
            temperature=1.0,
            attempts=1,
            validate=False,
            api_base=llm_server.api_base,
            seed=seed,
        )
        jsonschema.validate(json.loads(answer.text), SCHEMA)


def test_concurrent_requests_are_answered_in_parallel_slots(llm_server):
    answers = [None] * 4
    start = threading.Barrier(4)

    def ask(i: int) -> None:
        start.wait()
        answers[i] = complete(
            llm_server.model,
            [{"role": "user", "content": f"Count from {i} to {i + 20}."}],
            max_tokens=24,
            temperature=0.0,
            api_base=llm_server.api_base,
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a is not None and a.usage.completion_tokens > 0 for a in answers)
    assert all(a.text.strip() for a in answers)


def test_a_model_that_is_not_a_gguf_file_is_refused_before_anything_starts(tmp_path):
    folder = tmp_path / "hf-folder"
    folder.mkdir()
    with pytest.raises(ModelSourceError, match="not a .gguf file"):
        LlamaServer(str(folder)).start()


def test_a_server_that_exits_at_start_up_fails_fast_instead_of_waiting(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf")
    with pytest.raises(RuntimeError, match="exited before it served"):
        LlamaServer(str(broken), start_timeout_s=120, weights="as-shipped").start()


def test_bf16_weights_are_widened_from_the_shipped_gguf_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDFORGE_CACHE_DIR", str(tmp_path))
    shipped = served_gguf("smollm2", "as-shipped")
    widened = served_gguf("smollm2", "bf16")
    assert widened != shipped and widened.parent == tmp_path / "gguf"
    assert widened.read_bytes()[:4] == b"GGUF" and widened.stat().st_size > shipped.stat().st_size
    written = widened.stat().st_mtime_ns
    assert served_gguf("smollm2", "bf16") == widened and widened.stat().st_mtime_ns == written


def test_local_mode_gives_taskgen_and_examplegen_the_server_as_their_default_model(tmp_path, broker, llm_server):
    runtime = LocalRuntime(tmp_path, topic_prefix="llm-env.")
    runtime.start_broker(broker)
    runtime.start_llm_server(llm_server)
    for service in ("taskgen", "examplegen"):
        env = runtime.service_env(service, 1234)
        prefix = service.upper()
        assert env[f"{prefix}_LLM__MODEL"] == llm_server.model
        assert env[f"{prefix}_LLM__API_BASE"] == llm_server.api_base
    assert runtime.service_env("embedder", 1234)["EMBEDDER_TORCH_THREADS"] == "1"  # indexing does not starve generation
    assert not any("LLM__" in key for key in runtime.service_env("curator", 1234))
    runtime.stop()
    assert llm_server.process.poll() is None  # a server the runtime was given is left running


def test_local_mode_runs_the_services_that_compete_with_generation_at_a_lower_priority(tmp_path, broker, llm_server):
    runtime = LocalRuntime(tmp_path, services=("curator",), topic_prefix="llm-nice.")
    runtime.start_broker(broker)
    runtime.start_llm_server(llm_server)
    curator = runtime.start_service("curator")
    try:
        runtime.wait_healthy("curator")
        assert os.getpriority(os.PRIO_PROCESS, curator.process.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10
    finally:
        # A niced process drains slowly while the other test worker loads both cores: give it time.
        assert runtime.stop_service("curator", timeout_s=120) == 0
        runtime.stop()
