"""End-to-end benchmark: `make run` on the demo job, timed from the command to its exit.

    .venv/bin/python benchmarks/e2e.py [--job examples/demo/job.yaml]

Runs `make run JOB=...` exactly as a user does (venv and stubs already built, so the time is
the local runtime's start-up, the job through every service, and the report), then reads the
report it wrote. The anchor is the base model: the report's dev-split nDCG@10 of the base
model and of the tuned model come from the same run. Writes benchmarks/results/e2e.json:
make_run_seconds (goal <= 300 on a 2-core laptop), dev_ndcg10_base, dev_ndcg10_tuned (goal
tuned > base), the stage timings and the data counts.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "e2e.json"
REPORTS = ROOT / ".run" / "reports"


def newest_report(after: float) -> dict:
    reports = [p for p in REPORTS.glob("*/report.json") if p.stat().st_mtime >= after]
    if not reports:
        raise SystemExit(f"make run wrote no report under {REPORTS}")
    return json.loads(max(reports, key=lambda p: p.stat().st_mtime).read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", default="examples/demo/job.yaml")
    parser.add_argument(
        "--make-arg", action="append", default=[], help="extra make argument, e.g. -o .venv/.installed (a venv built elsewhere)"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    started_wall = time.time()
    started = time.perf_counter()
    completed = subprocess.run(["make", *args.make_arg, "run", f"JOB={args.job}"], cwd=ROOT)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"make run failed with exit code {completed.returncode}")
    report = newest_report(started_wall)
    dev = {e["metric"]: e for e in report["evaluation"] if e["dataset"] == "dev"}
    results = {
        "make_run_seconds": round(seconds, 1),
        "dev_ndcg10_base": round(dev["ndcg@10"]["base"], 4),
        "dev_ndcg10_tuned": round(dev["ndcg@10"]["tuned"], 4),
        "goals": {"make_run_seconds": "<= 300", "dev_ndcg10_tuned": "> dev_ndcg10_base"},
        "job": args.job,
        "generator_model": report["job"]["generator_model"],
        "stage_seconds": {k: round(v, 1) for k, v in report["timings"].items()},
        "data": {
            "tasks": report["job"].get("tasks"),
            "documents": report["job"]["documents"],
            "generated": report["generation"]["succeeded"],
            "generation_failures": report["generation"]["failed"],
            "accepted": report["curation"]["accepted"],
            "rejected": report["curation"]["rejected"],
            "rejected_by_reason": report["curation"]["rejected_by_reason"],
        },
        "training": {k: report["training"][k] for k in ("steps", "train_examples", "dev_examples")},
        "evaluation": report["evaluation"],
        "index": report["index"],
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m_before": round(load_before, 2),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: results[k] for k in ("make_run_seconds", "dev_ndcg10_base", "dev_ndcg10_tuned")}))


if __name__ == "__main__":
    main()
