"""Telemetry: JSON log lines carry trace ids and extra fields; service names come from the environment."""

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from libs.telemetry import JsonFormatter, service_resource


def test_json_log_line_has_trace_ids_and_extra_fields():
    tracer = TracerProvider().get_tracer("test")
    record = logging.LogRecord("svc.module", logging.WARNING, __file__, 1, "dead-lettering %s", ("record",), None)
    record.topic = "forge.tasks"
    with tracer.start_as_current_span("work") as span:
        line = json.loads(JsonFormatter("curator").format(record))
    assert line["msg"] == "dead-lettering record" and line["level"] == "warning" and line["service"] == "curator"
    assert line["topic"] == "forge.tasks"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_otel_service_name_and_resource_attributes_come_from_the_environment(monkeypatch):
    assert service_resource("trainer").attributes["service.name"] == "trainer"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "prod-trainer")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=trainer-0")
    attributes = service_resource("trainer").attributes
    assert attributes["service.name"] == "prod-trainer" and attributes["k8s.pod.name"] == "trainer-0"
