"""Run the pipeline locally: broker, topics, the local generator (llama.cpp's OpenAI-compatible
server), and the five services as separate processes, each started with the same entry point
its container uses (``python -m services.NAME``), serving TLS with token auth from the
credentials under ``<run dir>/auth`` (libs.local.credentials)."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

from embedforge.v1 import messages_pb2 as pb
from libs.dataroots import is_uri
from libs.grpc import traced_channel, wait_until_serving
from libs.kafka import ensure_topics
from libs.local.broker import TansuBroker, free_port
from libs.local.credentials import ensure_credentials
from libs.local.llm_server import LlamaServer
from libs.settings import KafkaSettings

log = logging.getLogger(__name__)

SERVICES = ("taskgen", "examplegen", "curator", "trainer", "embedder")
STORAGE_SERVICES = ("trainer", "embedder")
DATA_SERVICES = ("taskgen", "examplegen", "trainer")  # take server paths from jobs (libs/dataroots.py)
LLM_SERVICES = ("taskgen", "examplegen")  # their default model is the local generator server
# With a generator server, which decodes on every core, the services that compete with it for
# the CPU run at a lower priority (nice), so the server's threads, which wait for each other at
# every step, are not preempted by them; the embedder's indexing also gets one intra-op thread.
CPU_CAPPED = {"embedder": "TORCH_THREADS"}
LOW_PRIORITY = ("curator", "trainer", "embedder")
LOW_PRIORITY_NICE = 10
REPO_ROOT = Path(__file__).resolve().parents[2]


def python_env() -> dict[str, str]:
    """The environment of a child Python process: repo and generated stubs importable, offline."""
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'gen'}",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def job_data_roots(spec: pb.JobSpec) -> tuple[Path | str, ...]:
    """The paths and object URIs a local job names (documents, eval sets, base model): local
    mode's data roots (a URI is read with this process's environment, e.g. AWS_* variables)."""
    named = [spec.corpus_path, *spec.eval_paths, spec.training.base_model]
    return tuple(path if is_uri(path) else Path(path) for path in named if path)


def env_prefix(service: str) -> str:
    """Each service reads settings with its own prefix, e.g. TASKGEN_GRPC_PORT."""
    return service.upper() + "_"


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


class LocalRuntime:
    """Broker + services on loopback.

    ``extra_env`` is passed to every service process; ``{PREFIX}`` in a name becomes the
    service's prefix, so ``{"{PREFIX}TELEMETRY__LOG_LEVEL": "DEBUG"}`` reaches all five.
    Trainer and embedder share the object storage at ``storage_uri`` (default ``file://<run_dir>/storage``).
    ``data_roots`` are the files and folders jobs may name (the local user's own, e.g. the job's
    documents and eval sets: see job_data_roots); none by default.
    With a generator server (:meth:`start_llm_server`), taskgen and examplegen get it as their
    default model (``LLM__MODEL=hosted_vllm/<name>``, ``LLM__API_BASE``), as the chart gives them vLLM.
    """

    def __init__(
        self,
        run_dir: Path,
        services: tuple[str, ...] = SERVICES,
        extra_env: dict[str, str] | None = None,
        topic_prefix: str = "",
        storage_uri: str = "",
        data_roots: tuple[Path | str, ...] = (),
    ):
        self.run_dir = run_dir
        self.data_roots = [root if isinstance(root, str) and is_uri(root) else str(Path(root).resolve()) for root in data_roots]
        self.credentials = ensure_credentials(run_dir)
        self.storage_uri = storage_uri or (run_dir / "storage").resolve().as_uri()
        self.services = services
        self.extra_env = extra_env or {}
        self.topic_prefix = topic_prefix
        self.broker: TansuBroker | None = None
        self.llm_server: LlamaServer | None = None
        self._owns_llm_server = False
        self.processes: dict[str, ServiceProcess] = {}
        self.restarts: dict[str, int] = {}
        self._owns_broker = False
        self._lock = threading.Lock()
        self._supervising = threading.Event()

    @property
    def kafka_settings(self) -> KafkaSettings:
        assert self.broker is not None
        return KafkaSettings(
            bootstrap_servers=self.broker.bootstrap,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            topic_prefix=self.topic_prefix,
        )

    def start_broker(self, broker: TansuBroker | None = None) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._owns_broker = broker is None
        self.broker = broker or TansuBroker(log_path=self.run_dir / "logs" / "broker.log").start()
        ensure_topics(self.kafka_settings)

    def start_llm_server(self, server: LlamaServer | None = None, model: str | None = None, threads: int = 0) -> LlamaServer:
        """Start the local generator server for ``model`` (default: the make run generator) on
        ``threads`` (0: every core), or use ``server`` (already started, left running by :meth:`stop`)."""
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._owns_llm_server = server is None
        if server is None:
            server = LlamaServer(
                **({"model": model} if model else {}), threads=threads, log_path=self.run_dir / "logs" / "llm.log"
            ).start()
        self.llm_server = server
        return server

    def service_env(self, name: str, port: int) -> dict[str, str]:
        prefix = env_prefix(name)
        kafka = self.kafka_settings
        env = {
            **python_env(),
            f"{prefix}GRPC_HOST": "127.0.0.1",
            f"{prefix}GRPC_PORT": str(port),
            f"{prefix}STATE_DIR": str(self.run_dir / "state" / name),
            f"{prefix}KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            f"{prefix}KAFKA__SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
            f"{prefix}KAFKA__HEARTBEAT_INTERVAL_MS": str(kafka.heartbeat_interval_ms),
            f"{prefix}KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            **self.credentials.service_env(prefix),
        }
        if name in STORAGE_SERVICES:  # models and run state: one object store shared by trainer and embedder
            env[f"{prefix}STORAGE__URI"] = self.storage_uri
        if name in DATA_SERVICES:
            env[f"{prefix}DATA__ROOTS"] = json.dumps(self.data_roots)
        if self.llm_server is not None and name in LLM_SERVICES:
            env[f"{prefix}LLM__MODEL"] = self.llm_server.model
            env[f"{prefix}LLM__API_BASE"] = self.llm_server.api_base
        if self.llm_server is not None and name in CPU_CAPPED:
            env[f"{prefix}{CPU_CAPPED[name]}"] = "1"
        env.update({k.replace("{PREFIX}", prefix): v for k, v in self.extra_env.items()})
        return env

    def start_service(self, name: str, port: int | None = None) -> ServiceProcess:
        port = port or free_port()
        log_path = self.run_dir / "logs" / f"{name}.log"
        (self.run_dir / "state" / name).mkdir(parents=True, exist_ok=True)
        niced = self.llm_server is not None and name in LOW_PRIORITY
        process = subprocess.Popen(
            (["nice", "-n", str(LOW_PRIORITY_NICE)] if niced else []) + [sys.executable, "-m", f"services.{name}"],
            cwd=REPO_ROOT,
            env=self.service_env(name, port),
            stdout=open(log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = ServiceProcess(name, port, process, log_path)
        return self.processes[name]

    def wait_healthy(self, name: str, timeout_s: float = 120.0) -> None:
        service = self.processes[name]
        deadline = time.monotonic() + timeout_s
        while True:
            if service.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {service.process.returncode}; see {service.log_path}")
            try:
                wait_until_serving(service.target, timeout_s=1.0, tls=self.credentials.client_tls(), token=self.credentials.token)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def channel(self, name: str) -> grpc.Channel:
        """A client channel to a running service: TLS with the local CA, the admin token."""
        return traced_channel(self.processes[name].target, self.credentials.client_tls(), self.credentials.token)

    def supervise(self, interval_s: float = 1.0) -> None:
        """Restart any service process that exits on its own, on the same port (as Kubernetes
        restarts a crashed container); runs in a background thread until :meth:`stop`."""

        def watch() -> None:
            while self._supervising.is_set():
                time.sleep(interval_s)
                with self._lock:
                    if not self._supervising.is_set():
                        return
                    for name, service in list(self.processes.items()):
                        if service.process.poll() is not None:
                            log.warning("%s exited with %s; restarting", name, service.process.returncode)
                            self.restarts[name] = self.restarts.get(name, 0) + 1
                            self.start_service(name, port=service.port)

        self._supervising.set()
        threading.Thread(target=watch, name="supervisor", daemon=True).start()

    def kill_service_and_children(self, name: str) -> None:
        """SIGKILL a service and every process it started at once, as when its pod or node goes away."""
        children = psutil.Process(self.processes[name].process.pid).children(recursive=True)
        self.stop_service(name, signal.SIGKILL)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(children, timeout=30)

    def stop_service(self, name: str, signum: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        with self._lock:
            process = self.processes[name].process
        if process.poll() is None:
            process.send_signal(signum)
        return self._reap(name, timeout_s)

    def _reap(self, name: str, timeout_s: float = 30.0) -> int:
        """Wait for a signalled service to exit (killing it after ``timeout_s``); forget it.

        Signalled once only: a second SIGTERM during interpreter shutdown, when Python has
        restored the default handlers, would kill a service that was exiting cleanly.
        """
        with self._lock:
            service = self.processes.pop(name)
        try:
            service.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
        return service.process.returncode

    @staticmethod
    def failures(codes: dict[str, int]) -> dict[str, int]:
        """The services whose stop was a failure: not 0 (drained), nor -SIGTERM (stopped by the
        default handler before the service installed its own, i.e. while still starting)."""
        return {name: code for name, code in codes.items() if code not in (0, -signal.SIGTERM)}

    def stop(self) -> dict[str, int]:
        """SIGTERM every service (they drain), then the generator server and the broker if this
        runtime started them; returns the services' exit codes."""
        self._supervising.clear()
        with self._lock:  # wait out a supervisor pass in progress
            pass
        for service in self.processes.values():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        codes = {name: self._reap(name) for name in list(self.processes)}
        if self.llm_server and self._owns_llm_server:
            self.llm_server.stop()
        if self.broker and self._owns_broker:
            self.broker.stop()
        return codes
