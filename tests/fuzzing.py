"""Property-based fuzzing of every RPC of every service (hypothesis), against running servers.

Requests are built from the protos' descriptors: every field gets random and boundary values
(empty, huge, unicode, NUL, control characters, path-like strings that name a canary folder,
negative and extreme numbers, unknown enum numbers, long repeated fields, nested messages).
Each call has a deadline; its status code is recorded. A server must answer every request with
a deliberate status: UNKNOWN or INTERNAL (an unexpected exception) and a deadline exceeded on a
unary call (a hang) are failures. Shared by tests/security/test_fuzz.py (bounded, in make test)
and benchmarks/security.py (>= 20,000 cases).
"""

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from embedforge.v1 import curator_pb2, embedder_pb2, examplegen_pb2, taskgen_pb2, trainer_pb2

SERVICE_DESCRIPTORS: dict[str, ServiceDescriptor] = {
    "taskgen": taskgen_pb2.DESCRIPTOR.services_by_name["TaskgenService"],
    "examplegen": examplegen_pb2.DESCRIPTOR.services_by_name["ExamplegenService"],
    "curator": curator_pb2.DESCRIPTOR.services_by_name["CuratorService"],
    "trainer": trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
    "embedder": embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"],
}
FAILURE_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def hostile_strings(canary: str) -> st.SearchStrategy[str]:
    """Strings a hostile or careless client sends; path-like ones name the canary folder."""
    paths = [
        f"/tmp/{canary}/x",
        f"../../{canary}",
        f"../../../../tmp/{canary}/y",
        f"{canary}/../../../etc/passwd",
        "/etc/passwd",
        "/etc/shadow",
        "/dev/zero",
        "/proc/self/environ",
        f"file:///tmp/{canary}",
        f"s3://{canary}/x",
        f"./{canary}",
        f"{canary}\x00.txt",
        "~/.ssh/id_rsa",
        "C:\\Windows\\win.ini",
        f"/tmp/{canary}/" + "a/" * 300,
    ]
    boundary = [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\n",
        "\t\r",
        "%s%n",
        "{}",
        "null",
        "🦆" * 10,
        "\u202e",
        "é" * 70,
        "a" * 63,
        "a" * 64,
        "a" * 65,
        "a" * 256,
    ]
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(paths + boundary),
        st.builds(lambda n, c: c * n, st.sampled_from([1_000, 70_000, 1_100_000]), st.sampled_from(["x", "é", "\x00", "🦆"])),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
    )


@dataclass
class FuzzRequests:
    """Hypothesis strategies for request messages, built from their descriptors."""

    canary: str
    max_depth: int = 3

    def message(self, descriptor, depth: int = 0) -> st.SearchStrategy:
        cls = message_factory.GetMessageClass(descriptor)
        fields = {
            f.name: self.field(f, depth)
            for f in descriptor.fields
            if depth < self.max_depth or f.type != FieldDescriptor.TYPE_MESSAGE
        }
        optional = {name: st.one_of(st.none(), strategy) for name, strategy in fields.items()}
        return st.fixed_dictionaries({}, optional=optional).map(lambda values: self._build(cls, values))

    @staticmethod
    def _build(cls, values: dict):
        message = cls()
        for name, value in values.items():
            if value is None:
                continue
            target = getattr(message, name)
            if isinstance(value, list):
                target.extend(value)
            elif isinstance(value, dict):
                for key, item in value.items():
                    if hasattr(item, "SerializeToString"):
                        target[key].CopyFrom(item)
                    else:
                        target[key] = item
            elif hasattr(value, "SerializeToString"):
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    def field(self, descriptor: FieldDescriptor, depth: int) -> st.SearchStrategy:
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            key = self.scalar(descriptor.message_type.fields_by_name["key"], depth)
            value = self.scalar(descriptor.message_type.fields_by_name["value"], depth)
            return st.dictionaries(key, value, max_size=4)
        single = self.scalar(descriptor, depth)
        if not descriptor.is_repeated:
            return single
        if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            return st.lists(single, max_size=4)
        short = st.text(max_size=8) if descriptor.type == FieldDescriptor.TYPE_STRING else single
        return st.one_of(st.lists(single, max_size=4), st.lists(short, min_size=200, max_size=2_000))  # too many items

    def scalar(self, descriptor: FieldDescriptor, depth: int) -> st.SearchStrategy:
        kind = descriptor.type
        if kind == FieldDescriptor.TYPE_STRING:
            return hostile_strings(self.canary)
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.one_of(st.binary(max_size=64), st.just(b"\x00" * 100_000))
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return st.one_of(
                st.floats(allow_nan=True, allow_infinity=True, width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64),
                st.sampled_from([0.0, -1.0, 1e-9, 1e30]),
            )
        if kind == FieldDescriptor.TYPE_ENUM:
            return st.integers(-3, 40)  # valid numbers and unknown ones (open enums keep them)
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self.message(descriptor.message_type, depth + 1)
        low, high = INT_BOUNDS[kind]
        return st.one_of(
            st.integers(low, high), st.sampled_from([v for v in (0, 1, -1, low, high, 2**31 - 1, 10**9) if low <= v <= high])
        )


@dataclass
class FuzzReport:
    cases: int = 0
    codes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    per_method: Counter = field(default_factory=Counter)

    def record(self, method: str, code: grpc.StatusCode, request, detail: str = "") -> None:
        self.cases += 1
        self.per_method[method] += 1
        self.codes[code.name] += 1
        shown = f"{method}: {code.name} {detail[:200]!r} for {str(request)[:300]!r}"
        if code in FAILURE_CODES:
            self.failures.append(shown)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self.hangs.append(shown)


def call(
    channel: grpc.Channel, service: ServiceDescriptor, method: MethodDescriptor, request, deadline_s: float
) -> tuple[grpc.StatusCode, str]:
    """One call of any shape; a server stream is read to its end or for at most ``deadline_s``."""
    path = f"/{service.full_name}/{method.name}"
    output = message_factory.GetMessageClass(method.output_type)
    serialize, deserialize = (lambda m: m.SerializeToString()), output.FromString
    try:
        if method.client_streaming:
            requests = iter(request)
            if method.server_streaming:
                for _ in channel.stream_stream(path, serialize, deserialize)(requests, timeout=deadline_s):
                    pass
            else:
                channel.stream_unary(path, serialize, deserialize)(requests, timeout=deadline_s)
        elif method.server_streaming:
            stream = channel.unary_stream(path, serialize, deserialize)(request, timeout=deadline_s)
            try:
                for _ in stream:
                    pass
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # a watch that is still open answered in time
                    return grpc.StatusCode.OK, "stream open at the deadline"
                raise
        else:
            channel.unary_unary(path, serialize, deserialize)(request, timeout=deadline_s)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def fuzz_method(
    channel: grpc.Channel,
    service: ServiceDescriptor,
    method: MethodDescriptor,
    report: FuzzReport,
    requests: FuzzRequests,
    examples: int,
    deadline_s: float = 15.0,
    random_seed: int = 0,
) -> None:
    """``examples`` hypothesis-generated requests to one RPC; outcomes go to ``report``."""
    strategy = requests.message(method.input_type)
    if method.client_streaming:
        strategy = st.lists(strategy, max_size=3)
    name = f"{service.name}/{method.name}"

    @seed(random_seed)
    @settings(
        max_examples=examples, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    @given(strategy)
    def one_case(request) -> None:
        code, detail = call(channel, service, method, request, deadline_s)
        report.record(name, code, request, detail)

    one_case()


def fuzz_all(channels: dict[str, grpc.Channel], examples_per_method: int, canary: str, report: FuzzReport) -> None:
    requests = FuzzRequests(canary)
    for service_name, service in SERVICE_DESCRIPTORS.items():
        for method in service.methods:
            fuzz_method(channels[service_name], service, method, report, requests, examples_per_method)


def new_canary() -> str:
    return f"fuzzcanary{uuid.uuid4().hex[:10]}"


def _walk(root: Path, allowed: list[Path]) -> Iterator[Path]:
    skip = {".git", ".venv", "gen", "__pycache__", ".pytest_cache", ".cache", ".hypothesis"}
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        subfolders[:] = [s for s in subfolders if s not in skip and (here / s).resolve() not in allowed]
        yield from (here / name for name in subfolders + files)


def touched_outside(allowed: list[Path], canary: str, since: float, watched: list[Path], searched: list[Path]) -> list[str]:
    """What the fuzzed servers touched where they must not: under ``watched`` (quiet folders such
    as the repository) any file changed after ``since`` or naming the canary; under ``searched``
    (busy folders such as /tmp) any path naming the canary; the ``allowed`` folders (the
    services' state dirs) excepted."""
    allowed = [a.resolve() for a in allowed]
    touched = []
    for root in watched:
        touched += [str(p) for p in _walk(root, allowed) if canary in p.name or (p.is_file() and p.lstat().st_mtime > since)]
    for root in searched:
        touched += [str(p) for p in _walk(root, allowed) if canary in p.name]
    return touched
