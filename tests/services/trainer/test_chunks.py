"""The trainer's store of each job's corpus chunks (services.trainer.store.ChunkStore): in
object storage, so a trainer restarted with an empty disk still mines from them."""

import json

import pytest

from embedforge.v1 import messages_pb2 as pb
from libs.storage import Storage
from services.trainer.store import ChunkStore


def chunk(job_id: str, index: int, text: str = "") -> pb.CorpusChunk:
    text = text or f"Passage {index} of {job_id}."
    return pb.CorpusChunk(chunk_id=f"{job_id}-c{index}", job_id=job_id, doc_id="d", text=text, chunk_index=index, chunk_count=3)


def test_a_restarted_trainer_writes_each_of_the_jobs_chunks_once(tmp_path):
    storage = Storage((tmp_path / "storage").as_uri())
    ChunkStore(storage).add_batch([(0, 0, chunk("a", 0)), (0, 1, chunk("a", 1)), (0, 2, chunk("b", 0))])
    ChunkStore(storage).add_batch([(1, 5, chunk("a", 1)), (1, 6, chunk("a", 2))])  # a redelivery, then a new chunk
    restarted = ChunkStore(Storage((tmp_path / "storage").as_uri()))
    assert restarted.write_corpus("a", tmp_path / "run" / "corpus.jsonl") == 3
    rows = [json.loads(line) for line in (tmp_path / "run" / "corpus.jsonl").read_text().splitlines()]
    assert rows == [{"_id": f"a-c{i}", "text": f"Passage {i} of a."} for i in range(3)]
    assert restarted.write_corpus("none", tmp_path / "none.jsonl") == 0 and not (tmp_path / "none.jsonl").exists()


def test_a_chunk_without_job_id_or_text_is_refused(tmp_path):
    store = ChunkStore(Storage((tmp_path / "storage").as_uri()))
    with pytest.raises(ValueError, match="job id"):
        store.add_batch([(0, 0, pb.CorpusChunk(chunk_id="c", text="t"))])
    with pytest.raises(ValueError, match="text"):
        store.add_batch([(0, 0, pb.CorpusChunk(chunk_id="c", job_id="a", text=" "))])


def test_a_restored_run_mines_from_the_chunks_file_in_its_new_folder():
    from libs.modeling.embedder import ModelConfig
    from libs.modeling.trainer import TrainConfig
    from services.trainer.pipeline import RunConfig, relocate

    old, new = "/old/runs/r1", "/new/runs/r1"

    def config(corpus_path: str) -> RunConfig:
        model, train = ModelConfig("base"), TrainConfig(output_dir=old)
        return RunConfig(dataset_path="d", run_dir=old, model=model, train=train, corpus_path=corpus_path)

    assert relocate(config(f"{old}/corpus_chunks.jsonl"), new).corpus_path == f"{new}/corpus_chunks.jsonl"
    assert relocate(config("/data/corpus"), new).corpus_path == "/data/corpus"  # StartRun's own corpus stays where it is
