"""Generate the corpus-grounded training queries of the training benchmark (cached, resumable).

The `make run` path for a user's documents, driven directly: examplegen's ExampleWriter
writes one query per chunk with the default generator (Qwen2.5-Coder-0.5B on local mode's
llama.cpp server, corpus_query template conditioned on the task description), and the curator's Validator keeps or rejects
each answer (copy-of-title / copy-of-sentence filter, echo filter, language check).
Each evaluation corpus is used ALONE: only its documents, never its test questions.

Output: benchmarks/data/training_queries.jsonl, one line per generated query:
{"corpus", "doc_id", "query", "instruction", "accepted", "reason"}. Document texts are NOT
stored (they belong to the evaluation set); the benchmark joins doc_id back to ../shared/data.

    PYTHONPATH=.:gen .venv/bin/python benchmarks/training_queries.py [--limit N]
"""

import argparse
import json
import logging
import random
import time
from pathlib import Path

from rich.progress import Progress

from embedforge.v1 import messages_pb2 as pb
from libs.settings import LlmSettings
from services.curator.settings import ValidationSettings
from services.curator.validation import Rejection, Validator
from libs.local.llm_server import LlamaServer
from services.examplegen.generation import ExampleWriter, GenerationStats
from services.examplegen.settings import ExamplegenSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUTPUT = ROOT / "benchmarks" / "data" / "training_queries.jsonl"
# What a user would say about these documents (written from the corpus description, not its questions).
CORPORA = {
    "cmrc2018-dev": ("zh", "Given a question in Chinese, retrieve Chinese Wikipedia passages that answer it"),
    "xquad-en": ("en", "Given a question, retrieve Wikipedia paragraphs that answer it"),
}


def documents(corpus: str) -> list[dict]:
    with open(DATA / corpus / "corpus.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def main() -> None:
    with LlamaServer() as server:
        generate(server)


def generate(server: LlamaServer) -> None:
    generator = server.model
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="documents per corpus (0 = all)")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    done = set()
    if OUTPUT.exists():
        done = {(r["corpus"], r["doc_id"]) for r in map(json.loads, OUTPUT.read_text().splitlines())}
    llm = LlmSettings(model=generator, api_base=server.api_base, timeout_s=3600.0, attempts=2)
    writer = ExampleWriter(ExamplegenSettings(llm=llm, concurrency=args.batch), GenerationStats())
    validator = Validator(ValidationSettings())
    todo_by_corpus = {}
    for corpus, (language, task) in CORPORA.items():
        docs = documents(corpus)
        random.Random(0).shuffle(docs)  # a partial cache is a random sample, not the first articles
        todo = todo_by_corpus.setdefault(corpus, [])
        for doc in docs[: args.limit or None]:
            if (corpus, doc["_id"]) in done:
                continue
            chunk = pb.CorpusChunk(
                chunk_id=f"{corpus}:{doc['_id']}",
                job_id=f"bench-{corpus}",
                doc_id=doc["_id"],
                title=doc.get("title", ""),
                text=doc["text"],
                task_description=task,
                num_queries=1,
                generator_model=generator,
                languages=[pb.LanguageWeight(language=language, weight=1.0)],
                seed=7,
            )
            todo.extend((corpus, doc["_id"], plan) for plan in writer.plan_chunk(chunk))
    # Interleave the corpora in proportion to their size, so every prefix covers both.
    todo = sorted(
        (item for items in todo_by_corpus.values() for item in items),
        key=lambda item: todo_by_corpus[item[0]].index(item) / len(todo_by_corpus[item[0]]),
    )
    started, failures = time.perf_counter(), 0
    with Progress() as progress, open(OUTPUT, "a", encoding="utf-8") as out:
        bar = progress.add_task("generating queries", total=len(todo))
        for start in range(0, len(todo), args.batch):
            batch = todo[start : start + args.batch]
            raws = {}
            writer.write([plan for _, _, plan in batch], lambda raw: raws.__setitem__(raw.example_id, raw))
            for corpus, doc_id, plan in batch:
                raw = raws[plan.raw.example_id]
                if raw.error:  # not cached: a later run retries it
                    failures += 1
                    continue
                row = {
                    "corpus": corpus,
                    "doc_id": doc_id,
                    "query": "",
                    "instruction": raw.task_description,
                    "accepted": False,
                    "reason": "",
                }
                try:
                    curated = validator.curate(raw)
                    row.update(query=curated.query, accepted=True)
                except Rejection as rejection:
                    row.update(reason=rejection.reason, query=raw.raw_output[:300])
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            progress.advance(bar, len(batch))
    writer.close()
    print(json.dumps({"planned": len(todo), "failed_not_cached": failures, "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
