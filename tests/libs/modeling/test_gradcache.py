"""GradCache gives the same gradients as the plain loss on a small batch, also with copies of
positives among the documents (the false-negative mask applies to both paths)."""

import pytest
import torch

from libs.modeling.embedder import Embedder, ModelConfig
from libs.modeling.losses import positive_copy_mask
from libs.modeling.trainer import Batch, TrainConfig, contrastive_loss, gradcache_backward, plain_backward

BATCH = Batch(
    queries=[f"question number {i} about topic {i * 7}" for i in range(6)],
    documents=[f"passage {i} explains topic {i * 7} in some detail" for i in range(6)] + [f"distractor {i}" for i in range(3)],
)
# Six questions about three passages (shared positives); the hard negatives are other questions' positives.
SHARED = Batch(
    queries=[f"question number {i} about passage {i % 3}" for i in range(6)],
    documents=[f"passage {i % 3} explains topic {i % 3 * 7} in some detail" for i in range(6)]
    + [f"passage {(i + 1) % 3} explains topic {(i + 1) % 3 * 7} in some detail" for i in range(3)],
)


def gradients(embedder: Embedder) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in embedder.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("batch", [BATCH, SHARED], ids=["distinct", "shared-positives"])
def test_gradcache_gradients_match_the_plain_loss(tiny_models, batch):
    embedder = Embedder(ModelConfig(tiny_models["bert"], bf16=False))
    config = TrainConfig(output_dir="unused", temperature=0.05, matryoshka_dims=(16,))
    plain_loss = plain_backward(embedder, batch, config)
    plain = gradients(embedder)
    embedder.zero_grad(set_to_none=True)
    cached_loss = gradcache_backward(embedder, batch, TrainConfig(**{**config.__dict__, "gradcache_chunk_size": 2}))
    cached = gradients(embedder)
    assert abs(plain_loss - cached_loss) < 1e-5
    assert plain.keys() == cached.keys() and len(plain) > 10
    for name in plain:
        assert torch.allclose(plain[name], cached[name], atol=1e-6, rtol=1e-4), name


def test_the_shared_batch_masks_copies_of_each_positive():
    mask = positive_copy_mask(SHARED.keys, SHARED.positive_index)
    # Query 0 (passage 0): its copies are column 3 (query 3's positive) and column 8 (a negative of query 2).
    assert mask[0].nonzero().flatten().tolist() == [3, 8]
    # Passage 1 at column 1 stays a negative for query 0.
    assert not mask[0, 1]
    torch.manual_seed(0)
    q, d = torch.randn(6, 16), torch.randn(9, 16)
    config = TrainConfig(output_dir="unused", temperature=0.05)
    masked = contrastive_loss(q, d, SHARED.positive_index, config, SHARED.keys)
    assert not torch.isclose(masked, contrastive_loss(q, d, SHARED.positive_index, config))
    # Each row equals its loss with the copies of its positive removed (other repeats stay negatives).
    rows = []
    for i in range(6):
        keep = [j for j in range(9) if not mask[i, j]]
        rows.append(contrastive_loss(q[i : i + 1], d[keep], torch.tensor([keep.index(i)]), config))
    assert torch.isclose(masked, torch.stack(rows).mean(), rtol=1e-5)
