"""Shared fixtures: one real tansu broker and one local generator server (llama.cpp serving
Qwen2.5-Coder-0.5B-Instruct) per test session, isolated topics per test."""

import os
import uuid
from pathlib import Path

import pytest

from libs.kafka import ensure_topics
from libs.local.broker import TansuBroker
from libs.local.llm_server import LlamaServer
from libs.local.objectstore import MotoS3
from libs.settings import KafkaSettings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def torch_defaults_unchanged():
    """Fail the test that leaves torch's process-wide default dtype or autocast changed: every
    later test in the process would silently build bf16 tensors."""
    yield
    import torch

    assert torch.get_default_dtype() == torch.float32, f"default dtype left at {torch.get_default_dtype()}"
    assert not torch.is_autocast_enabled("cpu"), "CPU autocast left enabled"


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    with TansuBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log") as running:
        yield running


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory):
    """The local generator as `make run` starts it (fewer slots: tests send a few requests at once)."""
    with LlamaServer(parallel=4, log_path=tmp_path_factory.mktemp("llm") / "llm.log") as running:
        yield running


@pytest.fixture
def kafka_settings(broker) -> KafkaSettings:
    """Settings for a fresh set of topics (unique prefix), created with 3 partitions each."""
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
    )
    ensure_topics(settings, partitions=3)
    return settings


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"evaluation data not found at {SHARED_DATA} (../shared/data beside the repository)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback, a real HTTP endpoint: this process and its children reach it
    through AWS_ENDPOINT_URL and test credentials, which the fixture puts in os.environ."""
    with MotoS3() as server:
        yield server


@pytest.fixture
def s3_uri(s3_server) -> str:
    """A fresh bucket with a prefix, as a storage URI (s3://bucket/prefix)."""
    return s3_server.bucket() + "/embedforge"
