"""Bulk-load documents from files into Qdrant, or publish them to forge.documents.

    python -m services.embedder.ingest PATH [--collection NAME] [--publish]

PATH is whatever libs.corpus reads: a JSONL file (``_id``/``id``, ``text``, optional ``title``
and ``metadata``), a BEIR folder or its ``corpus.jsonl``, or a folder of .txt/.md files. Settings come from the
same EMBEDDER_* environment as the service: without ``--publish`` the documents are indexed
directly with the model the service would serve (its recorded model, else EMBEDDER_MODEL_PATH)
into EMBEDDER_QDRANT_URL or the embedded store under EMBEDDER_STATE_DIR (which only one
process may open: while the service runs in embedded mode, use ``--publish``).
"""

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from embedforge.v1 import messages_pb2 as pb
from libs import corpus, topics
from libs.kafka import ProtoProducer
from services.embedder.engine import EmbeddingModel
from services.embedder.indexing import Indexer, IndexStats
from services.embedder.service import contextualizer, startup_spec
from services.embedder.settings import EmbedderSettings
from services.embedder.sparse import Bm25
from services.embedder.vectorstore import VectorStore, connect


def read_documents(path: Path, collection: str = "") -> Iterator[pb.Document]:
    """The documents under ``path`` (see libs.corpus) as forge.documents messages."""
    for source in corpus.read_documents(path):
        yield pb.Document(
            doc_id=source.doc_id, collection=collection, title=source.title, text=source.text, metadata=source.metadata
        )


def count_documents(path: Path) -> int:
    return sum(1 for _ in corpus.read_documents(path))


def batches(documents: Iterator[pb.Document], size: int) -> Iterator[list[pb.Document]]:
    batch: list[pb.Document] = []
    for document in documents:
        batch.append(document)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def open_store(settings: EmbedderSettings) -> VectorStore:
    try:
        return VectorStore(connect(settings.qdrant, settings.state_dir))
    except RuntimeError as exc:
        raise SystemExit(
            f"cannot open the embedded Qdrant store under {settings.state_dir} ({exc}); is the embedder service "
            "running? use --publish"
        ) from exc


def direct_indexer(settings: EmbedderSettings, store: VectorStore) -> Indexer:
    """An indexer that embeds in this process (no batcher: one caller)."""
    return Indexer(
        store,
        embed=lambda model, texts: model.encode(model.tokenize(texts)),
        bm25=Bm25(settings.bm25_k1, settings.bm25_b, settings.bm25_avg_length),
        upsert_batch=settings.upsert_batch,
        contextualize=contextualizer(settings),
    )


def ingest(path: Path, collection: str, settings: EmbedderSettings, batch_size: int, publish: bool) -> IndexStats:
    total = count_documents(path)
    stats = IndexStats()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task("publishing" if publish else "indexing", total=total)
        if publish:
            producer = ProtoProducer(settings.kafka, client_id="embedder-ingest")
            for document in read_documents(path, collection):
                producer.send(topics.DOCUMENTS, document.doc_id, document)
                stats.documents += 1
                progress.advance(task)
            producer.flush()
            producer.close()
            return stats
        store = open_store(settings)
        try:
            Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
            model = EmbeddingModel(
                startup_spec(settings, Path(settings.state_dir) / "model.json"),
                dtype=settings.dtype,
                batch_tokens=settings.batch_tokens,
            )
            indexer = direct_indexer(settings, store)
            for batch in batches(read_documents(path, collection), batch_size):
                stats.add(indexer.apply(batch, model, collection or settings.collection))
                progress.advance(task, len(batch))
        finally:
            store.close()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.embedder.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="JSONL file, BEIR folder or corpus.jsonl, or folder of .txt/.md files")
    parser.add_argument("--collection", default="", help="target collection (alias); default EMBEDDER_COLLECTION")
    parser.add_argument("--publish", action="store_true", help="send to the forge.documents topic instead of indexing here")
    parser.add_argument("--batch", type=int, default=256, help="documents per indexing step")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = EmbedderSettings()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    stats = ingest(args.path, args.collection, settings, args.batch, args.publish)
    verb = "published" if args.publish else "indexed"
    print(json.dumps({verb: stats.documents, "chunks": stats.chunks, "collection": args.collection or settings.collection}))


if __name__ == "__main__":
    main()
