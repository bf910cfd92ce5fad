"""Security benchmark: what the gRPC auth layer refuses, and what TLS + token auth cost.

- ``unauthenticated_calls_accepted``: the five services as processes (LocalRuntime: TLS and
  token auth, as in a cluster). Every RPC of every service is called without a token, with an
  unknown token, and with the token of each role the method does not allow (libs/auth.py); a
  call counts as accepted unless it is refused with UNAUTHENTICATED or PERMISSION_DENIED.
  Expected 0. The roles a method allows call it too: ``authorized_calls_refused`` counts those
  refused (expected 0; they get the service's own answer to an empty request).
- ``embed_p50_overhead_tls_auth``: Embed p50 latency (one query per request, one client at a
  time) against two gRPC servers over the same embedder servicer in this process, one
  plaintext and one with TLS + a bearer token, requests interleaved in blocks so both see the
  same machine; the ratio TLS+auth / plaintext (goal <= 1.10).

- ``fuzz_*`` and ``files_touched_outside_state``: the property-based fuzz of tests/fuzzing.py
  (the one tests/services/test_fuzz.py runs, bounded) at full size: every RPC of every service
  gets ``--fuzz-examples`` hypothesis-generated requests (default 1,200 each: > 20,000 cases)
  against the five services as processes; counts of UNKNOWN/INTERNAL answers, calls past their
  deadline and paths touched outside the services' state dirs (all expected 0).

Other keys of benchmarks/results/security.json are kept.

    PYTHONPATH=.:gen .venv/bin/python benchmarks/security.py [--only auth|embed|fuzz]
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ruff: noqa: E402 - the environment above must be set before these imports
import argparse
import importlib
import json
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.message_factory import GetMessageClass
from rich.console import Console

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import embedder_pb2_grpc as api_grpc
from libs.auth import RELOAD_CHECK_S, Role, allowed_roles
from libs.certs import new_ca, new_certificate
from libs.grpc import GrpcServer, GrpcService, traced_channel
from libs.local.runtime import SERVICES, LocalRuntime
from libs.settings import AuthSettings, TlsSettings
from services.embedder.service import build_servicer
from services.embedder.settings import EmbedderSettings
from tests.fuzzing import FuzzReport, fuzz_all, new_canary, touched_outside
from tests.services.test_fuzz import NO_LLM

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "security.json"
QUERIES = ROOT.parent / "shared" / "data" / "xquad-en" / "queries.jsonl"
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
console = Console()


def rpc_methods(service: str):
    """(full method name, descriptor) of every RPC of a service's API."""
    module = importlib.import_module(f"embedforge.v1.{service}_pb2")
    for descriptor in module.DESCRIPTOR.services_by_name.values():
        for method in descriptor.methods:
            yield f"/{descriptor.full_name}/{method.name}", method


def call(channel: grpc.Channel, name: str, method) -> grpc.StatusCode:
    """One call with an empty request (a stream of one for client streams); its status code."""
    request_type, response_type = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
    kind = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    stub = kind[(method.client_streaming, method.server_streaming)](
        name, request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString
    )
    request = iter([request_type()]) if method.client_streaming else request_type()
    try:
        response = stub(request, timeout=10)
        if method.server_streaming:
            for _ in response:
                pass
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def auth_matrix(run_dir: Path) -> dict:
    runtime = LocalRuntime(run_dir, topic_prefix="security.")
    tokens = {role: f"bench-{role.value}-{os.urandom(12).hex()}" for role in Role}
    try:
        runtime.start_broker()
        for name in SERVICES:
            runtime.start_service(name)
        for name in SERVICES:
            runtime.wait_healthy(name, timeout_s=300)
        with open(runtime.credentials.tokens_file, "a") as file:  # more clients: the services pick them up without a restart
            file.writelines(f"bench-{role.value} {role.value} {token}\n" for role, token in tokens.items())
        time.sleep(RELOAD_CHECK_S + 0.5)
        tls = runtime.credentials.client_tls()
        accepted, refused_allowed, calls, per_rpc = 0, 0, 0, {}
        for service in SERVICES:
            target = runtime.processes[service].target
            for name, method in rpc_methods(service):
                allowed = allowed_roles(name)
                attempts = {
                    "no token": traced_channel(target, tls),
                    "unknown token": traced_channel(target, tls, "unknown-" + os.urandom(16).hex()),
                }
                attempts |= {
                    f"{role.value} token": traced_channel(target, tls, tokens[role]) for role in Role if role not in allowed
                }
                codes = {label: call(channel, name, method) for label, channel in attempts.items()}
                allowed_codes = {
                    role.value: call(traced_channel(target, tls, tokens[role]), name, method) for role in sorted(allowed)
                }
                accepted += sum(code not in REFUSED for code in codes.values())
                refused_allowed += sum(code in REFUSED for code in allowed_codes.values())
                calls += len(codes) + len(allowed_codes)
                per_rpc[name] = {
                    "refused": {k: v.name for k, v in codes.items()},
                    "allowed": {k: v.name for k, v in allowed_codes.items()},
                }
                console.log(f"{name}: {', '.join(f'{k}={v.name}' for k, v in codes.items())}")
    finally:
        runtime.stop()
    return {
        "unauthenticated_calls_accepted": accepted,
        "authorized_calls_refused": refused_allowed,
        "auth_calls": calls,
        "auth_calls_by_rpc": per_rpc,
    }


def embed_overhead(workdir: Path, requests: int, block: int) -> dict:
    ca = new_ca("bench CA")
    (workdir / "ca.crt").write_bytes(ca.cert_pem)
    new_certificate(ca, "bench", ["127.0.0.1"]).write(workdir / "tls.crt", workdir / "tls.key")
    token = os.urandom(24).hex()
    (workdir / "tokens").write_text(f"bench search {token}\n")
    server_tls = TlsSettings(
        enabled=True, cert_file=str(workdir / "tls.crt"), key_file=str(workdir / "tls.key"), ca_file=str(workdir / "ca.crt")
    )
    client_tls = TlsSettings(enabled=True, ca_file=str(workdir / "ca.crt"), cert_file="", key_file="")

    servicer = build_servicer(EmbedderSettings(state_dir=str(workdir / "state"), grpc_host="127.0.0.1", grpc_port=0))
    service = [GrpcService.generated(api_grpc, api, "EmbedderService", servicer)]
    servers = {
        "plaintext": GrpcServer(service, "127.0.0.1", 0),
        "tls_auth": GrpcServer(
            service, "127.0.0.1", 0, tls=server_tls, auth=AuthSettings(enabled=True, tokens_file=str(workdir / "tokens"))
        ),
    }
    for server in servers.values():
        server.start()
    stubs = {
        "plaintext": api_grpc.EmbedderServiceStub(traced_channel(f"127.0.0.1:{servers['plaintext'].port}")),
        "tls_auth": api_grpc.EmbedderServiceStub(traced_channel(f"127.0.0.1:{servers['tls_auth'].port}", client_tls, token)),
    }
    queries = [json.loads(line)["text"] for line in open(QUERIES, encoding="utf-8")]
    latencies: dict[str, list[float]] = {name: [] for name in stubs}
    try:
        for stub in stubs.values():  # warm-up: connections, TLS session, model
            for query in queries[:50]:
                stub.Embed(api.EmbedRequest(texts=[query], kind=api.INPUT_KIND_QUERY))
        for start in range(0, requests, block):
            for name, stub in stubs.items():
                for i in range(start, min(start + block, requests)):
                    request = api.EmbedRequest(texts=[queries[i % len(queries)]], kind=api.INPUT_KIND_QUERY)
                    began = time.perf_counter()
                    stub.Embed(request)
                    latencies[name].append(time.perf_counter() - began)
    finally:
        for server in servers.values():
            server.stop(1)
        servicer.close()
    p50 = {name: float(np.percentile(np.array(values) * 1000, 50)) for name, values in latencies.items()}
    p99 = {name: float(np.percentile(np.array(values) * 1000, 99)) for name, values in latencies.items()}
    return {
        "embed_p50_ms": {name: round(value, 3) for name, value in p50.items()},
        "embed_p99_ms": {name: round(value, 3) for name, value in p99.items()},
        "embed_p50_overhead_tls_auth": round(p50["tls_auth"] / p50["plaintext"], 3),
        "embed_requests_per_variant": requests,
    }


def fuzz(run_dir: Path, examples_per_rpc: int) -> dict:
    runtime = LocalRuntime(run_dir, topic_prefix="fuzz.", extra_env=NO_LLM)
    runtime.start_broker()
    for name in SERVICES:
        runtime.start_service(name)
    started = time.monotonic()
    try:
        for name in SERVICES:
            runtime.wait_healthy(name, timeout_s=300)
        since, canary, report = time.time(), new_canary(), FuzzReport()
        started = time.monotonic()
        fuzz_all({name: runtime.channel(name) for name in SERVICES}, examples_per_rpc, canary, report)
        seconds = time.monotonic() - started
        touched = touched_outside([run_dir], canary, since, watched=[ROOT], searched=[Path(tempfile.gettempdir())])
    finally:
        runtime.stop()
    return {
        "fuzz_cases": report.cases,
        "fuzz_internal_or_unknown": len(report.failures),
        "fuzz_hangs": len(report.hangs),
        "files_touched_outside_state": len(touched),
        "fuzz_rpcs": len(report.per_method),
        "fuzz_examples_per_rpc": examples_per_rpc,
        "fuzz_status_codes": dict(report.codes.most_common()),
        "fuzz_seconds": round(seconds, 1),
        "fuzz_failures_first": (report.failures + report.hangs + touched)[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="Embed requests per variant")
    parser.add_argument("--block", type=int, default=50, help="requests per variant before switching to the other")
    parser.add_argument("--fuzz-examples", type=int, default=1200, help="fuzzed requests per RPC")
    parser.add_argument("--only", choices=("auth", "embed", "fuzz"), help="run one part (default: all)")
    args = parser.parse_args()
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="security-bench-") as tmp:
        if args.only in (None, "auth"):
            result.update(auth_matrix(Path(tmp) / "run"))
        if args.only in (None, "embed"):
            result.update(embed_overhead(Path(tmp), args.requests, args.block))
        if args.only in (None, "fuzz"):
            result.update(fuzz(Path(tmp) / "fuzz", args.fuzz_examples))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    console.print({k: v for k, v in result.items() if k != "auth_calls_by_rpc"})


if __name__ == "__main__":
    main()
