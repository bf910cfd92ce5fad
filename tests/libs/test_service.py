"""A service process checks at start that the topics it uses exist and never creates them."""

import signal
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
    result = subprocess.run(
        [sys.executable, "-m", "services.trainer"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 2, result.stderr
    missing = [physical_name(settings, t) for t in topics.SERVICES["trainer"].uses if t != topics.MODELS]
    assert f"trainer: refusing to start: missing Kafka topics {', '.join(missing)}" in result.stderr
    assert physical_name(settings, topics.TASKS) not in result.stderr  # not a topic the trainer uses
    admin = KafkaAdminClient(**settings.client_kwargs())
    try:
        assert not set(missing) & set(admin.list_topics()), "the service created a topic"
    finally:
        admin.close()


STOPS_WITH_A_THREAD_LEFT_RUNNING = """
import threading
from libs.service import ServiceParts, main
from services.curator.settings import CuratorSettings

def build(settings):
    # As examplegen's pool worker blocked in an LLM call: a thread that never ends, which the
    # interpreter would join at exit.
    threading.Thread(target=threading.Event().wait, name="left-running").start()
    return ServiceParts(grpc_services=[])

main("curator", CuratorSettings, build)
"""


def test_a_drained_service_exits_zero_at_once_whatever_threads_still_run(broker, tmp_path):
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix=f"stop{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings)
    env = {
        **python_env(),
        "CURATOR_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "CURATOR_KAFKA__TOPIC_PREFIX": settings.topic_prefix,
        "CURATOR_STATE_DIR": str(tmp_path),
        "CURATOR_GRPC_PORT": "0",
    }
    command = [sys.executable, "-c", STOPS_WITH_A_THREAD_LEFT_RUNNING]
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if '"service started"' in line:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
