"""`python -m libs.local topics`: creates every topic of libs/topics.py that a broker lacks."""

import subprocess
import sys
import uuid

from libs import topics
from libs.kafka import require_topics
from libs.local.runtime import REPO_ROOT, python_env
from libs.settings import KafkaSettings


def create(bootstrap: str, prefix: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "libs.local", "topics", "--bootstrap-servers", bootstrap, "--topic-prefix", prefix]
    return subprocess.run(command, env=python_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_topics_command_creates_every_declared_topic_once(broker):
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix=f"cli{uuid.uuid4().hex[:6]}.")
    first = create(broker.bootstrap, settings.topic_prefix)
    assert first.returncode == 0, first.stderr
    assert f"created {len(topics.ALL_TOPICS)} topics" in first.stdout
    require_topics(settings, topics.ALL_TOPICS)
    again = create(broker.bootstrap, settings.topic_prefix)
    assert again.returncode == 0 and "created 0 topics" in again.stdout
