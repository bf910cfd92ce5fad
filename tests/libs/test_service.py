"""A service process checks at start that the topics it uses exist and never creates them."""

import subprocess
import sys
import uuid

from kafka import KafkaAdminClient

from libs import topics
from libs.kafka import ensure_topics, physical_name
from libs.local.runtime import REPO_ROOT, python_env
from libs.settings import KafkaSettings


def test_a_service_refuses_to_start_naming_the_topics_it_uses_that_are_missing(broker, tmp_path):
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix=f"absent{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings, [topics.MODELS])
    env = {
        **python_env(),
        "TRAINER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "TRAINER_KAFKA__TOPIC_PREFIX": settings.topic_prefix,
        "TRAINER_STATE_DIR": str(tmp_path),
    }
    result = subprocess.run([sys.executable, "-m", "services.trainer"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr
    missing = [physical_name(settings, t) for t in topics.SERVICES["trainer"].uses if t != topics.MODELS]
    assert f"trainer: refusing to start: missing Kafka topics {', '.join(missing)}" in result.stderr
    assert physical_name(settings, topics.TASKS) not in result.stderr  # not a topic the trainer uses
    admin = KafkaAdminClient(**settings.client_kwargs())
    try:
        assert not set(missing) & set(admin.list_topics()), "the service created a topic"
    finally:
        admin.close()
