"""GradCache gives the same gradients as the plain loss on a small batch."""

import torch

from libs.modeling.embedder import Embedder, ModelConfig
from libs.modeling.trainer import Batch, TrainConfig, gradcache_backward, plain_backward

BATCH = Batch(
    queries=[f"question number {i} about topic {i * 7}" for i in range(6)],
    documents=[f"passage {i} explains topic {i * 7} in some detail" for i in range(6)] + [f"distractor {i}" for i in range(3)],
)


def gradients(embedder: Embedder) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in embedder.named_parameters() if p.grad is not None}


def test_gradcache_gradients_match_the_plain_loss(tiny_models):
    embedder = Embedder(ModelConfig(tiny_models["bert"], bf16=False))
    config = TrainConfig(output_dir="unused", temperature=0.05, matryoshka_dims=(16,))
    plain_loss = plain_backward(embedder, BATCH, config)
    plain = gradients(embedder)
    embedder.zero_grad(set_to_none=True)
    cached_loss = gradcache_backward(embedder, BATCH, TrainConfig(**{**config.__dict__, "gradcache_chunk_size": 2}))
    cached = gradients(embedder)
    assert abs(plain_loss - cached_loss) < 1e-5
    assert plain.keys() == cached.keys() and len(plain) > 10
    for name in plain:
        assert torch.allclose(plain[name], cached[name], atol=1e-6, rtol=1e-4), name
