"""`make run`: start the local pipeline (broker, generator server, five services), run a job
end to end, and print its report; with --continuous keep everything up until Ctrl-C for more jobs.

Usage: python -m libs.local run [--job JOB.yaml] [--generator NAME] [--generator-threads N] [--continuous] [--run-dir .run]
       python -m libs.local topics --bootstrap-servers HOST:PORT [--topic-prefix P] [--partitions N]

``topics`` creates every topic of libs/topics.py that is missing on a broker (services never
create topics; in a cluster the chart's Job or Strimzi does).
"""

import argparse
import json
import signal
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from libs.jobspec import load_job_spec
from libs.kafka import ensure_topics
from libs.local.pipeline import progress_bars, run_job
from libs.local.report import write_report
from libs.local.llm_server import DEFAULT_MODEL
from libs.local.runtime import REPO_ROOT, SERVICES, LocalRuntime, job_data_roots
from libs.settings import KafkaSettings

console = Console()
DEMO_JOB = REPO_ROOT / "examples" / "demo" / "job.yaml"


def start(runtime: LocalRuntime, generator: str = DEFAULT_MODEL, generator_threads: int = 0) -> None:
    started = time.monotonic()
    with progress_bars(console) as progress:
        step = progress.add_task("broker + topics", total=1)
        runtime.start_broker()
        progress.update(step, completed=1)
        step = progress.add_task(f"generator server ({generator})", total=1)
        runtime.start_llm_server(model=generator, threads=generator_threads)
        progress.update(step, completed=1)
        step = progress.add_task("services healthy", total=len(SERVICES))
        for name in SERVICES:
            runtime.start_service(name)
        for name in SERVICES:
            runtime.wait_healthy(name)
            progress.advance(step)
    runtime.supervise()
    endpoints = {name: proc.target for name, proc in runtime.processes.items()} | {
        "kafka": runtime.broker.bootstrap,
        "llm": runtime.llm_server.api_base,
    }
    (runtime.run_dir / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")  # for examples/client.py
    table = Table(title=f"EmbedForge local runtime (up in {time.monotonic() - started:.1f}s)")
    for column in ("service", "pid", "endpoint", "health", "log"):
        table.add_column(column)
    table.add_row(
        "broker (tansu)",
        str(runtime.broker.process.pid),
        runtime.broker.bootstrap,
        "listening",
        str(runtime.run_dir / "logs" / "broker.log"),
    )
    server = runtime.llm_server
    table.add_row(
        f"generator (llama.cpp, {server.model})", str(server.process.pid), server.api_base, "serving", str(server.log_path)
    )
    for name, proc in runtime.processes.items():
        table.add_row(name, str(proc.process.pid), proc.target, "SERVING", str(proc.log_path))
    console.print(table)
    console.print(runtime.credentials.usage(runtime.processes["taskgen"].target))


def run(args: argparse.Namespace) -> int:
    spec = load_job_spec(args.job)
    runtime = LocalRuntime(Path(args.run_dir), data_roots=job_data_roots(spec))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    codes: dict[str, int] = {}
    try:
        start(runtime, args.generator, args.generator_threads)
        console.print(f"Submitting job [bold]{spec.name or args.job}[/bold] ({args.job})")
        with progress_bars(console) as progress:
            report = run_job(runtime, spec, progress)
        paths = write_report(report, Path(args.run_dir) / "reports" / report["job"]["job_id"])
        console.print(Markdown(paths["markdown"].read_text()))
        console.print(f"Report: {paths['markdown']}, {paths['json']}, {paths['loss_curve']}")
        if args.continuous:
            console.print(
                f"Services keep running; submit more jobs to taskgen at {runtime.processes['taskgen'].target}. Ctrl-C stops."
            )
            stop.wait()
    except KeyboardInterrupt:
        console.print("Interrupted; stopping.")
    finally:
        codes = runtime.stop()
        console.print("stopped: " + ", ".join(f"{name}={code}" for name, code in codes.items()))
    failures = runtime.failures(codes)
    if failures:
        console.print("[red]failed to stop cleanly:[/red] " + ", ".join(f"{name} ({code})" for name, code in failures.items()))
    return 1 if failures else 0


def create_topics(args: argparse.Namespace) -> int:
    settings = KafkaSettings(bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix)
    created = ensure_topics(settings, partitions=args.partitions, replication_factor=args.replication_factor)
    console.print(f"created {len(created)} topics on {args.bootstrap_servers}" + "".join(f"\n  {name}" for name in created))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m libs.local")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run a job through the local pipeline")
    run_parser.add_argument("--job", default=str(DEMO_JOB), help="job spec YAML (default: the demo job)")
    run_parser.add_argument(
        "--generator", default=DEFAULT_MODEL, help="local generator model served by llama.cpp (default: %(default)s)"
    )
    run_parser.add_argument(
        "--generator-threads",
        type=int,
        default=0,
        help="threads of the generator server (default 0: every core; on a machine shared with other busy processes 1 "
        "can be faster, see benchmarks/README.md)",
    )
    run_parser.add_argument("--continuous", action="store_true", help="keep services running after the job until Ctrl-C")
    run_parser.add_argument("--run-dir", default=".run", help="logs, service state and reports")
    run_parser.set_defaults(command_fn=run)
    topics_parser = sub.add_parser("topics", help="create the missing topics of libs/topics.py on a broker")
    topics_parser.add_argument("--bootstrap-servers", required=True, help="host:port[,host:port...]")
    topics_parser.add_argument("--topic-prefix", default="", help="prepended to every topic name")
    topics_parser.add_argument(
        "--partitions", type=int, default=None, help="one partition count for every topic (default: each topic's own)"
    )
    topics_parser.add_argument("--replication-factor", type=int, default=1)
    topics_parser.set_defaults(command_fn=create_topics)
    args = parser.parse_args()
    raise SystemExit(args.command_fn(args))


if __name__ == "__main__":
    main()
