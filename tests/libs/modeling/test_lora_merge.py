"""Merging LoRA adapters into the weights keeps the embeddings; LM-Cocktail interpolates weights."""

import pytest
import torch

from libs.modeling.embedder import Embedder, LoraSettings, ModelConfig
from libs.modeling.export import cocktail_merge

TEXTS = ["alpha beta gamma", "the quick brown fox jumps", "retrieval augmented generation"]


def perturbed_lora(path: str) -> Embedder:
    torch.manual_seed(1)
    embedder = Embedder(ModelConfig(path, lora=LoraSettings(rank=4, alpha=8, dropout=0.0), bf16=False))
    with torch.no_grad():
        for name, parameter in embedder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.2)  # B starts at zero; make the adapter change something
    return embedder


@pytest.mark.parametrize("kind", ["bert", "qwen2"])
def test_merged_lora_gives_the_same_embeddings_as_the_adapter(tiny_models, kind):
    embedder = perturbed_lora(tiny_models[kind])
    with_adapter = embedder.encode(TEXTS)
    base = Embedder(ModelConfig(tiny_models[kind], bf16=False)).encode(TEXTS)
    assert not torch.allclose(with_adapter, base, atol=1e-3)
    merged = embedder.merged()
    assert not merged.has_lora
    assert torch.allclose(merged.encode(TEXTS), with_adapter, atol=1e-5)


def test_only_lora_parameters_are_trainable(tiny_models):
    embedder = perturbed_lora(tiny_models["bert"])
    trainable = [n for n, p in embedder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_cocktail_weight_one_keeps_tuned_and_zero_restores_base(tiny_models):
    base = Embedder(ModelConfig(tiny_models["bert"], bf16=False))
    tuned_embeddings = perturbed_lora(tiny_models["bert"]).merged().encode(TEXTS)
    assert torch.allclose(
        cocktail_merge(perturbed_lora(tiny_models["bert"]).merged(), base, 1.0).encode(TEXTS), tuned_embeddings, atol=1e-6
    )
    assert torch.allclose(
        cocktail_merge(perturbed_lora(tiny_models["bert"]).merged(), base, 0.0).encode(TEXTS), base.encode(TEXTS), atol=1e-6
    )
    halfway = cocktail_merge(perturbed_lora(tiny_models["bert"]).merged(), base, 0.5)
    name = "encoder.layer.0.attention.self.query.weight"
    tuned_weight = perturbed_lora(tiny_models["bert"]).merged().model.state_dict()[name]
    assert torch.allclose(halfway.model.state_dict()[name], (tuned_weight + base.model.state_dict()[name]) / 2, atol=1e-6)
