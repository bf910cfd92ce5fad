"""Separate hosts inside this machine: one network namespace per host on a private bridge.

Each host gets a veth into the bridge and an address in 10.231.0.0/24 (this machine only), an
``/etc/netns/<ns>/hosts`` naming every host (``ip netns exec`` mounts it over /etc/hosts, so
the chart's Service names resolve as cluster DNS would), and runs its processes as its own
unprivileged user. Creating namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
"""

import fcntl
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SUBNET = "10.231.0"
LOCK_FILE = "/tmp/embedforge-proof-network.lock"
BRIDGE = "efp-br"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _world_executable(path: Path) -> bool:
    """Whether any user may run ``path``: the file and every folder above it are o+x."""
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in [path, *path.parents])


def shared_interpreter() -> Path | None:
    """A Python of this minor version that unprivileged users can run (a venv under /root cannot)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys._base_executable, f"/usr/local/bin/{version}", f"/usr/bin/{version}"):
        real = Path(candidate).resolve()
        if real.is_file() and _world_executable(real):
            probe = subprocess.run([str(real), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
            if probe.stdout.strip() == str(tuple(sys.version_info[:2])):
                return real
    return None


def host_venv(parent: Path) -> Path:
    """A venv any host's user can run, on the shared interpreter, seeing this venv's packages
    (the image's /opt/venv). Returns its bin folder."""
    venv = parent / "venv"
    subprocess.run([str(shared_interpreter()), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "test-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


def namespaces_available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if shutil.which("ip") is None or shutil.which("setpriv") is None:
        return "iproute2 (ip) and util-linux (setpriv) are needed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shared_interpreter() is None:
        return f"no Python {sys.version_info.major}.{sys.version_info.minor} that unprivileged users can run"
    probe = "efp-probe"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"ip netns add failed: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Host:
    name: str
    address: str
    uid: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f"efp-{self.name}"

    def start(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
        """Run ``argv`` in this host's namespace as its user, with exactly ``env``."""
        command = [
            "ip",
            "netns",
            "exec",
            self.namespace,
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.uid}",
            "--clear-groups",
            "--",
            *argv,
        ]
        with open(log, "ab") as out:
            process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        result = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True, check=True)
        return [int(pid) for pid in result.stdout.split()]

    def kill(self) -> None:
        """SIGKILL every process in the namespace: the host is gone."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for process in self.processes:
            process.wait(timeout=30)
        self.processes.clear()

    def private_dir(self, parent: Path, name: str) -> Path:
        """A fresh directory only this host's user can read."""
        folder = parent / f"{self.name}-{name}"
        folder.mkdir()
        os.chown(folder, self.uid, self.uid)
        folder.chmod(0o700)
        return folder


class Network:
    """A bridge and one namespace per host; ``names`` maps DNS names to host names."""

    def __init__(self, hosts: list[str], names: dict[str, str], first_uid: int = 21001):
        self.hosts = {name: Host(name, f"{SUBNET}.{i + 2}", first_uid + i) for i, name in enumerate(hosts)}
        self.names = names

    def __enter__(self) -> "Network":
        # One such network at a time on this machine (the bridge, names and users are fixed):
        # a second test run waits here instead of tearing this one down.
        self._lock = open(LOCK_FILE, "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.down()  # leftovers of an aborted run
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        lines = ["127.0.0.1 localhost"] + [f"{self.hosts[host].address} {dns}" for dns, host in self.names.items()]
        for host in self.hosts.values():
            ns = host.namespace
            _ip("netns", "add", ns)
            _ip("link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", ns, "master", BRIDGE, "up")
            _ip("-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            hosts_file = Path("/etc/netns") / ns / "hosts"
            hosts_file.parent.mkdir(parents=True, exist_ok=True)
            hosts_file.write_text("\n".join(lines) + "\n")
        return self

    def __exit__(self, *exc) -> None:
        for host in self.hosts.values():
            try:
                host.kill()
            except subprocess.CalledProcessError:
                pass
        self.down()
        self._lock.close()

    def down(self) -> None:
        """Remove every trace of this network, also one an aborted run left: the hosts' processes
        (found by their users), namespaces, veths and the bridge."""
        uids = {host.uid for host in self.hosts.values()}
        leftovers = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in uids]
        for process in leftovers:
            process.kill()
        psutil.wait_procs(leftovers, timeout=30)
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
            subprocess.run(["ip", "link", "del", host.namespace], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / host.namespace, ignore_errors=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def wait_for_tcp(address: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {address}:{port} after {timeout_s:.0f}s") from None
            time.sleep(0.2)
