"""The chart's topics come from libs/topics.py only: files/topics.yaml is generated from it, and
the topic Job and the Strimzi KafkaTopics render exactly its topics, configs and overrides."""

import os
import subprocess
import sys

from libs import topics
from tests.deploy.rendering import REPO, helm_template, job_topics, objects, render

DECLARED = {t.name: (t.partitions, t.retention_ms, t.cleanup_policy) for t in topics.ALL_TOPICS}
STRIMZI = "  strimzi: {enabled: true, clusterName: main}\n"


def write_values(tmp_path, text: str):
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return path


def strimzi_topics(docs: list[dict]) -> dict[str, tuple[int, int, str]]:
    return {
        t["spec"]["topicName"]: (
            t["spec"]["partitions"],
            int(t["spec"]["config"]["retention.ms"]),
            t["spec"]["config"]["cleanup.policy"],
        )
        for t in objects(docs, "KafkaTopic").values()
    }


def test_topics_file_and_readme_table_are_generated_from_libs_topics():
    result = subprocess.run([sys.executable, "tools/topics.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_topic_job_creates_every_topic_of_libs_topics_with_its_config(renders):
    assert job_topics(renders["default"]) == DECLARED


def test_curator_topics_are_declared_with_a_compacted_dedup_log_partitioned_like_the_candidates():
    assert topics.CURATOR_DEDUP_LOG.cleanup_policy == "compact" and topics.CURATOR_DEDUP_LOG.retention_ms == topics.FOREVER
    assert topics.CURATOR_DEDUP_LOG.partitions_of == topics.CURATOR_CANDIDATES.name
    assert topics.CURATOR_DEDUP_LOG.partitions == topics.CURATOR_CANDIDATES.partitions


def test_minimal_values_create_the_same_topics_with_replication_one(renders):
    (job,) = objects(renders["minimal"], "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert job_topics(renders["minimal"]) == DECLARED
    assert {"name": "REPLICATION_FACTOR", "value": "1"} in container["env"]


def test_topic_job_runs_as_a_hook_before_install_and_upgrade(renders):
    (job,) = objects(renders["default"], "Job").values()
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}


def test_strimzi_topics_match_libs_topics_with_the_prefix_and_cluster_label(renders):
    docs = renders["external"]
    assert not objects(docs, "Job")
    assert strimzi_topics(docs) == {f"prod.{name}": spec for name, spec in DECLARED.items()}
    for topic in objects(docs, "KafkaTopic").values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "kafka" and topic["spec"]["replicas"] == 3
        assert topic["metadata"]["namespace"] == "kafka"  # the Kafka cluster's, which its Topic Operator watches


def test_strimzi_topics_go_to_the_release_namespace_when_no_kafka_namespace_is_set(helm, tmp_path):
    docs = render(helm, [write_values(tmp_path, "kafka:\n" + STRIMZI)])
    assert all("namespace" not in t["metadata"] for t in objects(docs, "KafkaTopic").values())


def test_partition_overrides_apply_and_the_dedup_log_follows_the_candidates(helm, tmp_path):
    overrides = "kafka:\n  partitions: {forge.tasks: 12, forge.curator.candidates: 3}\n  replicationFactor: 2\n"
    expected = DECLARED | {
        "forge.tasks": (12, topics.TASKS.retention_ms, "delete"),
        "forge.curator.candidates": (3, topics.CURATOR_CANDIDATES.retention_ms, "delete"),
        "forge.curator.dedup-log": (3, topics.FOREVER, "compact"),
    }
    assert job_topics(render(helm, [write_values(tmp_path, overrides)])) == expected
    strimzi = render(helm, [write_values(tmp_path, overrides + STRIMZI)])
    assert strimzi_topics(strimzi) == expected
    assert {t["spec"]["replicas"] for t in objects(strimzi, "KafkaTopic").values()} == {2}


def test_a_partition_override_of_an_unknown_topic_is_refused(helm, tmp_path):
    result = helm_template(helm, [write_values(tmp_path, "kafka:\n  partitions: {forge.task: 12}\n")])
    assert result.returncode != 0
    assert "kafka.partitions.forge.task: no such topic" in result.stderr


def test_a_partition_override_of_the_dedup_log_is_refused(helm, tmp_path):
    result = helm_template(helm, [write_values(tmp_path, "kafka:\n  partitions: {forge.curator.dedup-log: 12}\n")])
    assert result.returncode != 0
    assert "set kafka.partitions.forge.curator.candidates instead" in result.stderr


def test_topic_job_script_creates_each_topic_with_the_sasl_and_tls_client_config(helm, tmp_path):
    """Runs the Job's shell script with the rendered env. kafka-topics.sh (Java, from the apache/kafka
    image) is not obtainable here: a stand-in records each invocation and the client config it got."""
    sets = {
        "kafka.securityProtocol": "SASL_SSL",
        "kafka.saslMechanism": "SCRAM-SHA-512",
        "kafka.sasl.existingSecret": "kafka-creds",
        "kafka.tls.caSecret": "kafka-ca",
        "kafka.topicPrefix": "team1.",
    }
    (job,) = objects(render(helm, [], sets), "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {"PATH": os.environ["PATH"], "SASL_USERNAME": "forge", "SASL_PASSWORD": "s3cr3t"}
    rendered_env = {entry["name"]: entry for entry in container["env"]}
    for name, entry in rendered_env.items():
        if "value" in entry:
            env[name] = entry["value"]
    assert {"SASL_USERNAME", "SASL_PASSWORD"} <= {n for n, e in rendered_env.items() if "secretKeyRef" in e.get("valueFrom", {})}
    (tmp_path / "bin").mkdir()
    recorder = tmp_path / "bin" / "kafka-topics.sh"
    recorder.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$*" >> "$CALLS"\n'
        'while [ $# -gt 0 ]; do [ "$1" = --command-config ] && cp "$2" "$CALLS.properties"; shift; done\n'
    )
    recorder.chmod(0o755)
    env |= {"KAFKA_HOME": str(tmp_path), "CALLS": str(tmp_path / "calls")}
    script = container["args"][0].replace("/tmp/client.properties", str(tmp_path / "client.properties"))
    result = subprocess.run([*container["command"], script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr

    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == len(topics.ALL_TOPICS)
    for topic in topics.ALL_TOPICS:
        (call,) = [c for c in calls if f"--topic team1.{topic.name} " in c]
        assert "--create --if-not-exists" in call and f"--partitions {topic.partitions} " in call
        assert f"--config retention.ms={topic.retention_ms}" in call and "--replication-factor 3" in call
        assert call.endswith(f"--config cleanup.policy={topic.cleanup_policy}")
    properties = (tmp_path / "calls.properties").read_text().splitlines()
    assert "security.protocol=SASL_SSL" in properties and "sasl.mechanism=SCRAM-SHA-512" in properties
    assert (
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="forge" password="s3cr3t";'
        in properties
    )
    assert "ssl.truststore.location=/etc/embedforge/kafka-ca/ca.crt" in properties
    assert "s3cr3t" not in result.stdout + result.stderr
