"""Each service reads its settings from environment variables under its own prefix."""

import importlib
import os
import subprocess
import sys

import pytest

from libs.llm import call_options
from libs.local.runtime import REPO_ROOT, SERVICES, env_prefix, python_env
from libs.settings import LlmSettings, UnknownSettingError, load_settings, setting_names, unknown_settings


def settings_class(name: str):
    module = importlib.import_module(f"services.{name}.settings")
    return next(
        v
        for v in vars(module).values()
        if isinstance(v, type) and getattr(v, "model_config", {}).get("env_prefix") == env_prefix(name)
    )


@pytest.mark.parametrize("name", SERVICES)
def test_service_settings_use_the_service_prefix_and_nested_groups(monkeypatch, name):
    prefix = env_prefix(name)
    monkeypatch.setenv(f"{prefix}GRPC_PORT", "6123")
    monkeypatch.setenv(f"{prefix}KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv(f"{prefix}KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("OTHER_GRPC_PORT", "1")
    settings = settings_class(name)()
    assert settings.grpc_port == 6123
    assert settings.kafka.client_kwargs()["bootstrap_servers"] == ["kafka-0:9092", "kafka-1:9092"]
    assert "s3cret" not in repr(settings)


def test_defaults_are_the_cluster_defaults():
    settings = settings_class("taskgen")()
    assert settings.grpc_port == 50051 and settings.kafka.session_timeout_ms == 45000 and settings.telemetry.otlp_endpoint == ""


@pytest.mark.parametrize("name", SERVICES)
def test_every_setting_name_of_a_service_is_accepted(monkeypatch, name):
    for variable in setting_names(settings_class(name)):
        monkeypatch.setenv(variable, "")
    assert unknown_settings(settings_class(name), dict(os.environ)) == []


def test_an_unknown_variable_under_the_prefix_is_refused_naming_the_closest_field(monkeypatch):
    monkeypatch.setenv("TASKGEN_LLM__MODLE", "hosted_vllm/qwen")
    monkeypatch.setenv("TASKGEN_QDRANT__URL", "http://qdrant:6333")
    with pytest.raises(UnknownSettingError) as refused:
        load_settings(settings_class("taskgen"))
    message = str(refused.value)
    assert "TASKGEN_LLM__MODLE: no such setting (closest: TASKGEN_LLM__MODEL)" in message
    assert "TASKGEN_QDRANT__URL: no such setting" in message


def test_variables_under_other_prefixes_are_left_alone(monkeypatch):
    monkeypatch.setenv("EMBEDDER_QDRANT__URL", "http://qdrant:6333")
    monkeypatch.setenv("TASKGEN_LLM__MODEL", "hosted_vllm/qwen")
    settings = load_settings(settings_class("taskgen"))
    assert settings.llm.model == "hosted_vllm/qwen"


def test_a_service_with_a_mistyped_setting_refuses_to_start():
    env = {**python_env(), "EMBEDDER_QDRANT_URL": "http://qdrant:6333"}
    result = subprocess.run(
        [sys.executable, "-m", "services.embedder"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "EMBEDDER_QDRANT_URL: no such setting (closest: EMBEDDER_QDRANT__URL)" in result.stderr


def test_llm_call_options_send_the_api_base_only_to_the_configured_provider():
    llm = LlmSettings(model="hosted_vllm/qwen2.5-7b-instruct", api_base="http://vllm:8000/v1", timeout_s=5, attempts=2)
    assert call_options(llm, "hosted_vllm/other")["api_base"] == "http://vllm:8000/v1"
    assert "api_base" not in call_options(llm, "openai/gpt-4o-mini")
    assert call_options(llm, "openai/gpt-4o-mini")["attempts"] == 2
