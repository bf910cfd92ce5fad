"""Each service reads its settings from environment variables under its own prefix."""

import importlib

import pytest

from libs.local.runtime import SERVICES, env_prefix


def settings_class(name: str):
    module = importlib.import_module(f"services.{name}.settings")
    return next(v for v in vars(module).values() if isinstance(v, type) and getattr(v, "model_config", {}).get("env_prefix") == env_prefix(name))


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
