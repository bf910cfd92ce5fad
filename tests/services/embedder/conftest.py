"""Embedder fixtures: the real all-MiniLM-L6-v2 folder, a tiny random BERT folder (CLS pooling,
32 dimensions) to swap to, servicers over embedded Qdrant, and a real gRPC server on loopback."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import embedder_pb2_grpc as api_grpc
from embedforge.v1 import messages_pb2 as pb
from libs.grpc import GrpcServer, GrpcService, traced_channel
from libs.storage import service_storage
from services.embedder.engine import EmbeddingModel, spec_from_folder
from services.embedder.service import EmbedderServicer, default_model_path
from services.embedder.settings import EmbedderSettings, QdrantSettings
from services.embedder.vectorstore import VectorStore, connect


@pytest.fixture(scope="session")
def minilm_path() -> str:
    return default_model_path()


@pytest.fixture(scope="session")
def minilm(minilm_path) -> EmbeddingModel:
    return EmbeddingModel(spec_from_folder(minilm_path, model_id="minilm"), batch_tokens=4096)


def save_tiny_bert(folder: Path, tokenizer_path: str, pooling: str = "cls", seed: int = 0) -> Path:
    """A 2-layer random BERT saved as a sentence-transformers folder (no Normalize module)."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
            }
        )
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    return folder


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, minilm_path) -> str:
    return str(save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_path))


@pytest.fixture
def publish_tiny(tiny_model_path):
    """Upload the tiny model to a replica's object storage as the trainer does; returns its ModelReady."""

    def publish(settings: EmbedderSettings, **fields) -> pb.ModelReady:
        stored = service_storage(settings).put_folder(Path(tiny_model_path), "models/tiny")
        return pb.ModelReady(model_id="tiny", uri=stored.uri, manifest_digest=stored.digest, **fields)

    return publish


@pytest.fixture
def settings(tmp_path) -> EmbedderSettings:
    return EmbedderSettings(
        state_dir=str(tmp_path / "state"),
        grpc_host="127.0.0.1",
        grpc_port=0,
        max_texts=64,
        max_text_chars=2000,
        max_request_chars=20000,
    )


def new_servicer(settings: EmbedderSettings, model: EmbeddingModel) -> EmbedderServicer:
    """A servicer over the embedded Qdrant store of ``settings.state_dir``, serving a loaded model."""
    state = Path(settings.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    return EmbedderServicer(settings, VectorStore(connect(QdrantSettings(), str(state))), model, state / "model.json")


@pytest.fixture
def make_servicer():
    return new_servicer


@pytest.fixture
def servicer(settings, minilm):
    serving = new_servicer(settings, minilm)
    yield serving
    serving.close()


@pytest.fixture
def stub(servicer):
    """A client of the servicer behind a real gRPC server on a loopback port."""
    server = GrpcServer(
        [GrpcService.generated(api_grpc, api, "EmbedderService", servicer)],
        "127.0.0.1",
        0,
    )
    server.start()
    channel = traced_channel(f"127.0.0.1:{server.port}")
    yield api_grpc.EmbedderServiceStub(channel)
    channel.close()
    server.stop(1)
