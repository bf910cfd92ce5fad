"""Scaling examplegen and curator on consumer lag: KEDA ScaledObjects whose Kafka triggers name
the consumer groups and topics that libs/topics.py declares for the service (through
files/topics.yaml), never together with the CPU HPA. KEDA's CRDs have no schema in
kubernetes-validate (like Strimzi's), so the rendered fields are asserted here."""

import subprocess

import kubernetes_validate
import pytest

from libs import topics
from tests.deploy.rendering import CHART, CRD_KINDS, KUBE_VERSION, RELEASE, helm_template, objects, render

KEDA = """
services:
  examplegen:
    autoscaling: {enabled: false, keda: {enabled: true, minReplicas: 2, maxReplicas: 5, lagThreshold: 7}}
  curator:
    autoscaling: {enabled: false, keda: {enabled: true}}
"""
SASL = """
kafka:
  topicPrefix: team1.
  securityProtocol: SASL_SSL
  saslMechanism: SCRAM-SHA-512
  sasl: {existingSecret: kafka-creds}
  tls: {caSecret: kafka-ca}
"""


@pytest.fixture
def keda_values(tmp_path):
    path = tmp_path / "keda.yaml"
    path.write_text(KEDA)
    return path


def shared_triggers(service: str, prefix: str = "") -> set[tuple[str, str]]:
    """(consumer group, topic) of every topic the service's shared consumer groups read."""
    return {(prefix + g.id, prefix + t.name) for g in topics.SERVICES[service].groups if not g.per_replica for t in g.topics}


def triggers(scaled: dict) -> set[tuple[str, str]]:
    return {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in scaled["spec"]["triggers"]}


def test_keda_scales_examplegen_and_curator_on_the_lag_of_their_groups_and_topics(helm, keda_values):
    docs = render(helm, [keda_values])
    scaled = objects(docs, "ScaledObject")
    assert set(scaled) == {f"{RELEASE}-embedforge-examplegen", f"{RELEASE}-embedforge-curator"}
    examplegen, curator = scaled[f"{RELEASE}-embedforge-examplegen"], scaled[f"{RELEASE}-embedforge-curator"]
    assert triggers(examplegen) == shared_triggers("examplegen")
    assert (
        triggers(curator)
        == shared_triggers("curator")
        == {("curator", "forge.examples.raw"), ("curator-dedup", "forge.curator.candidates")}
    )
    assert (examplegen["spec"]["minReplicaCount"], examplegen["spec"]["maxReplicaCount"]) == (2, 5)
    for name, obj in scaled.items():
        assert obj["spec"]["scaleTargetRef"]["name"] == name
        for trigger in obj["spec"]["triggers"]:
            assert trigger["type"] == "kafka" and "authenticationRef" not in trigger
            assert (
                trigger["metadata"]["bootstrapServers"] == "kafka:9092" and trigger["metadata"]["offsetResetPolicy"] == "earliest"
            )
    assert {t["metadata"]["lagThreshold"] for t in examplegen["spec"]["triggers"]} == {"7"}
    assert {t["metadata"]["lagThreshold"] for t in curator["spec"]["triggers"]} == {"200"}


def test_keda_scaled_services_get_no_cpu_hpa_and_no_fixed_replicas(helm, keda_values):
    docs = render(helm, [keda_values])
    assert {
        h["metadata"]["labels"]["app.kubernetes.io/component"] for h in objects(docs, "HorizontalPodAutoscaler").values()
    } == {"taskgen"}
    for service in ("examplegen", "curator"):
        assert "replicas" not in objects(docs, "Deployment")[f"{RELEASE}-embedforge-{service}"]["spec"]
    assert not objects(docs, "TriggerAuthentication")


def test_keda_reads_prefixed_groups_and_topics_with_the_kafka_secrets(helm, keda_values, tmp_path):
    sasl = tmp_path / "sasl.yaml"
    sasl.write_text(SASL)
    docs = render(helm, [keda_values, sasl])
    (auth,) = objects(docs, "TriggerAuthentication").values()
    assert {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]} == {
        ("username", "kafka-creds", "username"),
        ("password", "kafka-creds", "password"),
        ("ca", "kafka-ca", "ca.crt"),
    }
    curator = objects(docs, "ScaledObject")[f"{RELEASE}-embedforge-curator"]
    assert triggers(curator) == shared_triggers("curator", "team1.")
    for trigger in curator["spec"]["triggers"]:
        assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


def test_hpa_and_keda_on_one_service_are_refused(helm, tmp_path):
    both = tmp_path / "both.yaml"
    both.write_text("services:\n  curator:\n    autoscaling: {enabled: true, keda: {enabled: true}}\n")
    result = helm_template(helm, [both])
    assert result.returncode != 0
    assert "services.curator: autoscaling.enabled (CPU HorizontalPodAutoscaler) and autoscaling.keda.enabled" in result.stderr


def test_keda_on_a_service_that_must_not_scale_on_lag_is_refused(helm, tmp_path):
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text("services:\n  trainer:\n    autoscaling: {keda: {enabled: true}}\n")
    result = helm_template(helm, [trainer])
    assert result.returncode != 0
    assert "services.trainer.autoscaling.keda: only examplegen and curator scale on consumer lag" in result.stderr


def test_keda_values_lint_strictly_and_the_rest_of_the_render_validates(helm, keda_values, tmp_path):
    sasl = tmp_path / "sasl.yaml"
    sasl.write_text(SASL)
    lint = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(keda_values), "-f", str(sasl)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for doc in render(helm, [keda_values, sasl]):
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
