"""Start-up and shutdown shared by every service process.

A service's ``__main__`` builds its domain objects and hands them to :func:`run_service`:
telemetry, the gRPC server (health + reflection), consumer threads, SIGTERM handling and
a graceful drain all happen here, once.
"""

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from libs.grpc import GrpcServer, GrpcService
from libs import topics
from libs.kafka import ConsumerLoop, MissingTopicsError, ProtoProducer, require_topics
from libs.settings import ServiceSettings, UnknownSettingError, load_settings
from libs.telemetry import setup_telemetry, shutdown_telemetry

log = logging.getLogger(__name__)


@dataclass
class ServiceParts:
    """What a service runs: gRPC services, consumer loops, and hooks: ``on_stop`` as soon as a
    stop is requested (interrupt long work, e.g. a generate in flight), ``on_shutdown`` after
    the consumers have stopped (release resources)."""

    grpc_services: list[GrpcService]
    consumers: Sequence[ConsumerLoop] = ()
    producer: ProtoProducer | None = None
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)


def run_service(name: str, settings: ServiceSettings, build: Callable[[ServiceSettings], ServiceParts]) -> int:
    """Run until SIGTERM/SIGINT or a consumer crash; returns the process exit code."""
    setup_telemetry(name, settings.telemetry)
    stop = threading.Event()
    crashed = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    parts = build(settings)
    server = GrpcServer(
        parts.grpc_services,
        settings.grpc_host,
        settings.grpc_port,
        settings.grpc_max_workers,
        tls=settings.tls,
        auth=settings.auth,
        health_port=settings.grpc_health_port,
    )
    server.start()

    def consume(loop: ConsumerLoop) -> None:
        try:
            loop.run(stop)
        except Exception:  # noqa: BLE001 - a dead consumer must take the process down
            log.exception("consumer crashed", extra={"group": loop.group_id})
            crashed.set()
            stop.set()

    threads = [threading.Thread(target=consume, args=(c,), name=f"consumer-{c.group_id}", daemon=True) for c in parts.consumers]
    for thread in threads:
        thread.start()
    server.set_serving(True)
    log.info(
        "service started",
        extra={"grpc_port": server.port, "tls": settings.tls.enabled, "auth": settings.auth.enabled, "consumers": len(threads)},
    )

    stop.wait()
    log.info("draining")
    for hook in parts.on_stop:
        hook()
    server.stop(settings.shutdown_grace_s)
    for thread in threads:
        thread.join(timeout=settings.shutdown_grace_s)
    for hook in parts.on_shutdown:
        hook()
    if parts.producer is not None:
        parts.producer.flush(timeout_s=settings.shutdown_grace_s)
        parts.producer.close()
    log.info("stopped", extra={"exit_code": 1 if crashed.is_set() else 0})
    shutdown_telemetry()
    return 1 if crashed.is_set() else 0


def main(name: str, settings_class: type[ServiceSettings], build: Callable[[ServiceSettings], ServiceParts]) -> None:
    """Entry point of a service process; exits 2 when its environment holds an unknown setting
    or a topic it uses (libs/topics.py) does not exist: services never create topics.

    Once drained, the process ends at once (os._exit) instead of in interpreter finalization:
    every resource was released by then, and what may still run (a worker blocked in an LLM call,
    joined at exit; a Kafka client's daemon IO thread logging to stderr while the interpreter tears
    down, which aborts the process with SIGABRT) must not turn a clean stop into a hang or a crash."""
    try:
        settings = load_settings(settings_class)
        require_topics(settings.kafka, topics.SERVICES[name].uses)
    except (UnknownSettingError, MissingTopicsError) as exc:
        print(f"{name}: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    code = run_service(name, settings, build)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
