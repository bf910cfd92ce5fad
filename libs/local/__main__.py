"""`make run`: start the local pipeline (broker + five services), show it healthy, stop cleanly.

Usage: python -m libs.local run [--continuous] [--run-dir .run]
"""

import argparse
import signal
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from libs.local.runtime import SERVICES, LocalRuntime

console = Console()


def run(args: argparse.Namespace) -> int:
    runtime = LocalRuntime(Path(args.run_dir))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console) as progress:
            step = progress.add_task("broker + topics", total=1)
            runtime.start_broker()
            progress.update(step, completed=1)
            step = progress.add_task("services healthy", total=len(SERVICES))
            for name in SERVICES:
                runtime.start_service(name)
            for name in SERVICES:
                runtime.wait_healthy(name)
                progress.advance(step)
        table = Table(title=f"EmbedForge local runtime (up in {time.monotonic() - started:.1f}s)")
        for column in ("service", "pid", "gRPC", "health", "log"):
            table.add_column(column)
        table.add_row("broker (tansu)", str(runtime.broker.process.pid), runtime.broker.bootstrap, "listening", str(runtime.run_dir / "logs" / "broker.log"))
        for name, proc in runtime.processes.items():
            table.add_row(name, str(proc.process.pid), proc.target, "SERVING", str(proc.log_path))
        console.print(table)
        if args.continuous:
            console.print("Running until Ctrl-C.")
            stop.wait()
    finally:
        codes = runtime.stop()
        console.print("stopped: " + ", ".join(f"{name}={code}" for name, code in codes.items()))
    return 0 if all(code == 0 for code in codes.values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m libs.local")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start the local pipeline")
    run_parser.add_argument("--continuous", action="store_true", help="keep services running until Ctrl-C")
    run_parser.add_argument("--job", help="job spec YAML to submit")
    run_parser.add_argument("--run-dir", default=".run", help="logs and service state")
    args = parser.parse_args()
    raise SystemExit(run(args))


if __name__ == "__main__":
    main()
