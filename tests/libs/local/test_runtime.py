"""The local runtime restarts a crashed service on its port, as Kubernetes would."""

import signal

from libs.grpc import wait_until_serving
from libs.local.runtime import LocalRuntime


def test_supervisor_restarts_a_killed_service_on_the_same_port(broker, tmp_path):
    runtime = LocalRuntime(tmp_path, services=("curator",), topic_prefix="supervise.")
    runtime.start_broker(broker)
    first = runtime.start_service("curator")
    runtime.wait_healthy("curator")
    runtime.supervise(interval_s=0.2)
    try:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        wait_until_serving(first.target, timeout_s=120, tls=runtime.credentials.client_tls(), token=runtime.credentials.token)
        assert runtime.restarts == {"curator": 1}
        assert runtime.processes["curator"].process.pid != first.process.pid
        assert runtime.processes["curator"].port == first.port
    finally:
        assert runtime.stop() == {"curator": 0}
    assert broker.process.poll() is None  # a broker the runtime was given is left running


def test_only_real_failures_fail_a_stop():
    codes = {"taskgen": 0, "examplegen": -signal.SIGTERM, "curator": 1, "trainer": -signal.SIGABRT, "embedder": -signal.SIGKILL}
    assert LocalRuntime.failures(codes) == {"curator": 1, "trainer": -signal.SIGABRT, "embedder": -signal.SIGKILL}
