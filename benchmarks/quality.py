"""Quality benchmark (issue 17): custom models vs their base on corpora nobody here trained on.

    PYTHONPATH=.:gen LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality.py \
        [--queries dbpedia-entity-subset=600] [--queries xquad-en=600] [--queries cmrc2018-dev=300] [--only xquad-en] [--out PATH]

For each retrieval corpus of ../shared/data a new user's job, corpus only: a one-line domain, the
corpus's documents (``corpus.jsonl``), ``corpus_queries`` queries to write, no task and no example
queries (taskgen drafts the task), the training recipe of benchmarks/training.py ``quality``. The
jobs go through the local runtime exactly as ``make run JOB=...`` runs them (libs/local: real
broker, local generator server, the five services; one runtime for all jobs). The trainer
evaluates base vs tuned in the same run on the corpus's own queries and qrels, which no stage ever
sees (generation reads only the documents), and on sickr and stsb-zh (Spearman). Accept/reject
counts by reason are read back from forge.examples.rejected (the curator's reasons and the
trainer's ``round_trip``). Writes ``--out`` (default benchmarks/results/quality.json) with the
issue's goals, after each corpus; an ``--only`` run replaces its corpora's figures there and keeps
the others'. Generation runs 13-17 queries/min on a 2-vCPU AVX2 machine (about 50 with AVX-512
BF16), and each job also trains, evaluates and indexes: the dbpedia job at its default size took
72 minutes on the AVX2 machine.
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from kafka import KafkaConsumer
from rich.console import Console

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.jobspec import job_spec_from_dict
from libs.kafka import physical_name
from libs.local.__main__ import start
from libs.local.llm_server import DEFAULT_MODEL
from libs.local.pipeline import progress_bars, run_job
from libs.local.runtime import LocalRuntime, job_data_roots
from training import DATA, eval_row, pick

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality.json"
WORK = Path("/tmp/embedforge-bench-quality")  # the runtime's logs, state and reports (kept for reading)
STS = ("sickr", "stsb-zh")
# What a new user would type as the domain of each corpus, and the queries to write for it.
CORPORA = {
    "dbpedia-entity-subset": {
        "key": "dbpedia",
        "domain": "An encyclopedia of entities: people, places, organisations, works, events and things, a short abstract each.",
        "languages": {"en": 1.0},
        "queries": 600,
    },
    "xquad-en": {
        "key": "xquad",
        "domain": "Wikipedia paragraphs on many subjects: sports, science, history, geography, economics and culture.",
        "languages": {"en": 1.0},
        "queries": 600,
    },
    "cmrc2018-dev": {
        "key": "cmrc",
        "domain": "中文维基百科的段落：人物、历史、地理、科学、文化、体育和娱乐。",
        "languages": {"zh": 1.0},
        "queries": 300,
    },
}
# benchmarks/training.py quality's recipe, as a job's TrainingSpec; the merge weight is chosen on the dev split.
TRAINING = {
    "epochs": 3,
    "batch_size": 32,
    "learning_rate": 2e-5,
    "temperature": 0.05,
    "hard_negatives_per_query": 1,
    "max_length": 256,
    "use_lora": False,
    "dev_fraction": 0.1,
}
GOALS = {
    "dbpedia_ndcg10_tuned": ">= dbpedia_ndcg10_base + 2.0",
    "xquad_ndcg10_tuned": ">= xquad_ndcg10_base",
    "cmrc_ndcg10_tuned": ">= cmrc_ndcg10_base + 20",
    "sts_spearman_drop": "< 1 (sickr and stsb-zh, every tuned model)",
}


def job_spec(corpus: str, queries: int) -> pb.JobSpec:
    corpus_info = CORPORA[corpus]
    return job_spec_from_dict(
        {
            "name": f"quality-{corpus_info['key']}",
            "domain": corpus_info["domain"],
            "languages": corpus_info["languages"],
            "corpus_path": str(DATA / corpus),
            "corpus_queries": queries,
            "eval_paths": [str(DATA / corpus), *(str(DATA / sts) for sts in STS)],
            "collection": f"quality-{corpus_info['key']}",
            "seed": 17,
            "training": TRAINING,
        }
    )


def job_rejections(runtime: LocalRuntime, job_id: str, quiet_s: float = 5.0) -> dict[str, pb.RejectedExample]:
    """The job's rejections on forge.examples.rejected, the last one of each key."""
    settings = runtime.kafka_settings
    topic = physical_name(settings, topics.EXAMPLES_REJECTED)
    consumer = KafkaConsumer(topic, **settings.client_kwargs(), auto_offset_reset="earliest", group_id=None)
    rejections: dict[str, pb.RejectedExample] = {}
    last = time.monotonic()
    while time.monotonic() - last < quiet_s:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                reject = pb.RejectedExample.FromString(record.value)
                if reject.job_id == job_id:
                    rejections[topics.rejected_key(reject)] = reject
            last = time.monotonic() if records else last
    consumer.close()
    return rejections


def rejected_query(reject: pb.RejectedExample) -> str:
    """The query of a rejected example: the curator rejects RawExamples, the trainer's round trip JSON examples."""
    payload = reject.original_payload
    return json.loads(payload)["query"] if payload.startswith(b"{") else pb.RawExample.FromString(payload).query


def rejection_figures(rejections: dict[str, pb.RejectedExample], samples: int = 4) -> dict:
    """Rejections counted by reason, and the first few of each reason (query and detail: what was rejected)."""
    by_reason: dict[str, list[str]] = {}
    for reject in rejections.values():
        by_reason.setdefault(reject.reason, []).append(f"{rejected_query(reject)[:120]!r}: {reject.detail[:160]}")
    ranked = sorted(by_reason.items(), key=lambda item: -len(item[1]))
    return {
        "rejected_by_reason": {reason: len(details) for reason, details in ranked},
        "rejected_samples": {reason: details[:samples] for reason, details in ranked},
    }


def merge_choice(run_id: str) -> dict:
    """The LM-Cocktail dev scores and chosen weight, from the trainer's events file of the run."""
    events = WORK / "state" / "trainer" / "trainer" / "runs" / run_id / "events.jsonl"
    choice: dict = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if "merge_scores" in event:
            choice = {"merge_scores": event["merge_scores"], "merge_weight": event["merge_weight"]}
    return choice


def corpus_figures(corpus: str, queries: int, report: dict, rejections: dict[str, pb.RejectedExample]) -> dict:
    key, evals = CORPORA[corpus]["key"], report["evaluation"]
    figures = dict(zip((f"{key}_ndcg10_base", f"{key}_ndcg10_tuned"), pick(evals, corpus, "ndcg@10")))
    # The gain's standard error over the corpus's queries (paired): how far it is from noise.
    figures[f"{key}_ndcg10_difference_se"] = round(100 * eval_row(evals, corpus, "ndcg@10")["difference_se"], 2)
    figures |= dict(zip((f"{key}_dev_ndcg10_base", f"{key}_dev_ndcg10_tuned"), pick(evals, "dev", "ndcg@10")))
    for sts in STS:
        figures |= dict(zip((f"{sts}_spearman_base", f"{sts}_spearman_tuned_{key}_model"), pick(evals, sts, "spearman")))
    figures[f"{key}_data"] = {
        "task": report["job"]["task"],
        "queries_requested": queries,
        "generated": report["generation"]["succeeded"],
        "generation_failures": report["generation"]["failed"],
        "accepted_by_curator": report["curation"]["accepted"],
        **rejection_figures(rejections),
        "train_examples": report["training"]["train_examples"],
        "dev_examples": report["training"]["dev_examples"],
        **merge_choice(report["training"]["run_id"]),
        "seconds": {k: round(v, 1) for k, v in report["timings"].items()},
    }
    return figures


def goals_met(figures: dict) -> dict[str, bool]:
    met = {}
    for key, margin in (("dbpedia", 2.0), ("xquad", 0.0), ("cmrc", 20.0)):
        if f"{key}_ndcg10_base" in figures:
            met[f"{key}_ndcg10_tuned"] = figures[f"{key}_ndcg10_tuned"] >= figures[f"{key}_ndcg10_base"] + margin
    tuned = [(sts, value) for sts in STS for name, value in figures.items() if name.startswith(f"{sts}_spearman_tuned_")]
    drops = [figures[f"{sts}_spearman_base"] - value for sts, value in tuned]
    if drops:
        met["sts_spearman_drop"] = max(drops) < 1.0
    return met


def corpus_keys(figures: dict, corpus: str) -> list[str]:
    """The figures one corpus's job produced (its nDCG, data and its model's STS scores)."""
    key = CORPORA[corpus]["key"]
    return [name for name in figures if name.startswith(f"{key}_") or name.endswith(f"_tuned_{key}_model")]


def earlier_figures(out: Path, corpora: list[str]) -> dict:
    """From an existing results file, the figures of the corpora this run does not measure (an --only
    run replaces its corpora and keeps the others)."""
    if not out.is_file():
        return {}
    earlier = json.loads(out.read_text())
    kept = {name: earlier[name] for corpus in CORPORA if corpus not in corpora for name in corpus_keys(earlier, corpus)}
    return kept | ({f"{sts}_spearman_base": earlier[f"{sts}_spearman_base"] for sts in STS} if kept else {})


def write_results(out: Path, measured: dict, generator: str, started: float) -> dict:
    """The results file from what was measured so far, with the goals judged on it."""
    figures = dict(measured)
    for sts in STS:
        tuned = [v for k, v in figures.items() if k.startswith(f"{sts}_spearman_tuned_") and k.endswith("_model")]
        if tuned:
            figures[f"{sts}_spearman_tuned"] = min(tuned)
    figures["goals"] = GOALS
    figures["goals_met"] = goals_met(figures)
    figures["setup"] = (
        f"corpus-only jobs through the local runtime (make run's path), generator {generator}, queries per corpus in "
        "<corpus>_data.queries_requested; all-MiniLM-L6-v2 full fine-tuning, batch 32, lr 2e-5, 3 epochs, temperature "
        "0.05, 1 mined hard negative, max length 256, LM-Cocktail weight chosen on the synthetic dev split; task drafted "
        "by taskgen; nDCG@10 and Spearman x 100"
    )
    figures["machine"] = {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}
    figures["last_run_s"] = round(time.monotonic() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    defaults = ", ".join(f"{c}={i['queries']}" for c, i in CORPORA.items())
    parser.add_argument("--queries", action="append", default=[], metavar="CORPUS=N", help=f"queries to write ({defaults})")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(CORPORA),
        help="run only these corpora (default: all); the other corpora's figures in --out stay",
    )
    parser.add_argument("--generator", default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (a reduced run: write it elsewhere)")
    args = parser.parse_args()
    sizes = {corpus: info["queries"] for corpus, info in CORPORA.items()}
    sizes |= {corpus: int(count) for corpus, count in (item.split("=", 1) for item in args.queries)}
    corpora = args.only or list(CORPORA)
    specs = {corpus: job_spec(corpus, sizes[corpus]) for corpus in corpora}
    roots = tuple(dict.fromkeys(root for spec in specs.values() for root in job_data_roots(spec)))
    console = Console()
    figures = earlier_figures(args.out, corpora)
    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    runtime = LocalRuntime(WORK, data_roots=roots)
    try:
        start(runtime, args.generator)
        for corpus, spec in specs.items():
            console.print(f"[bold]{corpus}[/bold]: {spec.corpus_queries} corpus queries")
            with progress_bars(console) as progress:
                report = run_job(runtime, spec, progress, stall_timeout_s=900)
            figures |= corpus_figures(corpus, spec.corpus_queries, report, job_rejections(runtime, report["job"]["job_id"]))
            console.print(json.dumps({k: v for k, v in figures.items() if not k.endswith("_data")}))
            # After each corpus: a cut run keeps what it measured.
            write_results(args.out, figures, args.generator, started)
    finally:
        figures["service_exit_codes"] = runtime.stop()
    results = write_results(args.out, figures, args.generator, started)
    console.print(json.dumps({"goals_met": results["goals_met"]}))


if __name__ == "__main__":
    main()
