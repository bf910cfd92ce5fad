"""Bounded property-based fuzz of every RPC of every service (tests/fuzzing.py), against the five
service processes as local mode runs them (TLS, an admin token, a real broker).

Generation is pointed at a closed port (no LLM is needed to test the API edge): a fuzzed job
that passes validation fails its LLM calls quickly instead of loading a model.
FUZZ_EXAMPLES sets the examples per RPC (benchmarks/security.py runs >= 20,000 cases in all).
"""

import os
import tempfile
import time
from pathlib import Path

from libs.local.runtime import SERVICES, LocalRuntime
from tests.fuzzing import SERVICE_DESCRIPTORS, FuzzReport, fuzz_all, new_canary, touched_outside

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
NO_LLM = {
    f"{service}_LLM__{name}": value
    for service in ("TASKGEN", "EXAMPLEGEN")
    for name, value in (("MODEL", "openai/fuzz"), ("API_BASE", "http://127.0.0.1:9/v1"), ("ATTEMPTS", "1"))
}


def test_every_rpc_answers_fuzzed_requests_deliberately_and_touches_nothing_outside_its_state(broker, tmp_path):
    runtime = LocalRuntime(tmp_path / "run", topic_prefix="fuzz.", extra_env=NO_LLM)
    runtime.start_broker(broker)
    for name in SERVICES:
        runtime.start_service(name)
    try:
        for name in SERVICES:
            runtime.wait_healthy(name, timeout_s=300)
        since, canary, report = time.time(), new_canary(), FuzzReport()
        fuzz_all({name: runtime.channel(name) for name in SERVICES}, EXAMPLES, canary, report)
        touched = touched_outside([tmp_path], canary, since, watched=[REPO], searched=[Path(tempfile.gettempdir())])
    finally:
        runtime.stop()
    methods = sum(len(service.methods) for service in SERVICE_DESCRIPTORS.values())
    assert len(report.per_method) == methods, f"RPCs never called: {report.per_method}"
    assert report.failures == [], f"{len(report.failures)} UNKNOWN/INTERNAL of {report.cases}: {report.failures[:5]}"
    assert report.hangs == [], f"{len(report.hangs)} calls past their deadline: {report.hangs[:5]}"
    assert touched == [], f"touched outside the state dirs: {touched[:10]}"
    assert report.codes["INVALID_ARGUMENT"] > 0 and report.codes["OK"] + report.codes["NOT_FOUND"] > 0, report.codes
