"""Contrastive loss: InfoNCE over in-batch and hard negatives, optionally Matryoshka.

InfoNCE (van den Oord et al. 2018; E5-mistral arXiv 2401.00368 eq. 2): for query q_i with
positive d+_i, ``-log exp(cos(q_i, d+_i)/t) / sum_j exp(cos(q_i, d_j)/t)`` where the d_j are
every document of the batch: all positives (in-batch negatives) and all hard negatives.
Matryoshka (Kusupati et al. 2022): the same loss on the first k dimensions, averaged over k.

Use::

    q = embedder.embed(queries)                    # [B, D]
    d = embedder.embed(documents)                  # [N, D], positives and negatives
    loss = info_nce(q, d, positive_index, temperature=0.02)
"""

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F


def info_nce(queries: torch.Tensor, documents: torch.Tensor, positive_index: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE; ``positive_index[i]`` is the row of ``documents`` that is query i's positive."""
    q = F.normalize(queries.float(), dim=-1)
    d = F.normalize(documents.float(), dim=-1)
    scores = q @ d.T / temperature
    return F.cross_entropy(scores, positive_index)


def matryoshka_info_nce(
    queries: torch.Tensor, documents: torch.Tensor, positive_index: torch.Tensor, temperature: float, dims: Sequence[int] = ()
) -> torch.Tensor:
    """InfoNCE averaged over the full width and each truncated width in ``dims``."""
    widths = sorted({queries.shape[-1], *(d for d in dims if 0 < d < queries.shape[-1])}, reverse=True)
    losses = [info_nce(queries[:, :w], documents[:, :w], positive_index, temperature) for w in widths]
    return torch.stack(losses).mean()


def gather_with_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' rows concatenated in rank order; gradients flow into this rank's rows only.

    Every rank then computes the same global loss; summing parameter gradients across ranks
    (see ``all_reduce_gradients``) gives exactly the single-process gradient.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], dtype=torch.long))
    pieces = [torch.empty((int(s), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device) for s in sizes]
    dist.all_gather(pieces, tensor.detach().contiguous())
    pieces[dist.get_rank()] = tensor
    return torch.cat(pieces)


def gather_offsets(count: int) -> tuple[int, int]:
    """(rows before this rank, total rows) when each rank contributes ``count`` rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 0, count
    counts = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([count], dtype=torch.long))
    values = [int(c) for c in counts]
    return sum(values[: dist.get_rank()]), sum(values)


def all_reduce_gradients(parameters) -> None:
    """Sum gradients across ranks (each rank holds the gradient through its own rows)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
