"""The README's grpcurl commands name real methods and send payloads their request types accept,
and every RPC of every service has a documented command."""

import json
import re
import shlex
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, json_format, message_factory

import embedforge.v1.curator_pb2  # noqa: F401  (registers the services in the default pool)
import embedforge.v1.embedder_pb2  # noqa: F401
import embedforge.v1.examplegen_pb2  # noqa: F401
import embedforge.v1.taskgen_pb2  # noqa: F401
import embedforge.v1.trainer_pb2  # noqa: F401

README = Path(__file__).resolve().parents[1] / "README.md"
SERVICES = ["TaskgenService", "ExamplegenService", "CuratorService", "TrainerService", "EmbedderService"]


def grpcurl_commands() -> list[tuple[str, str]]:
    """(method full name, JSON payload) of each grpcurl call in the README's shell blocks."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        pending = ""
        for line in block.replace("\\\n", " ").replace("$(base64 -w0 pairs.jsonl)", "cGFpcnM=").splitlines():
            pending = f"{pending} {line}" if pending else line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # a quoted payload continues on the next line
                continue
            pending = ""
            if words[:1] == ["grpcurl"] and "-d" in words:
                commands.append((words[-1].replace("/", "."), words[words.index("-d") + 1]))
    return commands


def test_the_readme_documents_grpcurl_calls_for_every_rpc_of_every_service():
    pool = descriptor_pool.Default()
    documented = {method for method, _ in grpcurl_commands()}
    for service in SERVICES:
        for method in pool.FindServiceByName(f"embedforge.v1.{service}").methods:
            assert method.full_name in documented, f"README has no grpcurl call for {method.full_name}"


@pytest.mark.parametrize(
    "method,payload", grpcurl_commands(), ids=lambda value: value if "." in value and "{" not in value else ""
)
def test_each_documented_payload_parses_as_its_request_type(method, payload):
    if method.startswith("grpc.health"):
        return
    request_type = descriptor_pool.Default().FindMethodByName(method).input_type
    message = message_factory.GetMessageClass(request_type)()
    json_format.Parse(payload, message)  # raises on unknown fields or wrong enum names
    assert set(json_format.MessageToDict(message, preserving_proto_field_name=True)) == set(json.loads(payload))
