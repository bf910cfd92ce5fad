"""Contrastive loss: InfoNCE over in-batch and hard negatives, optionally Matryoshka.

InfoNCE (van den Oord et al. 2018; E5-mistral arXiv 2401.00368 eq. 2): for query q_i with
positive d+_i, ``-log exp(cos(q_i, d+_i)/t) / sum_j exp(cos(q_i, d_j)/t)`` where the d_j are
every document of the batch: all positives (in-batch negatives) and all hard negatives.
Matryoshka (Kusupati et al. 2022): the same loss on the first k dimensions, averaged over k.

False negatives: an optional boolean ``mask`` [B, N] (True = exclude) drops columns from a
query's denominator (their logit becomes -inf). ``positive_copy_mask`` builds it from
per-document text keys: for query i, every document other than its positive column whose
text equals its positive's text is a copy of the positive, not a negative. A document that
is another query's positive (a different text) stays an in-batch negative. Without a mask
the loss is the plain InfoNCE above.

Use::

    q = embedder.embed(queries)                    # [B, D]
    d = embedder.embed(documents)                  # [N, D], positives and negatives
    mask = positive_copy_mask(document_keys, positive_index)
    loss = info_nce(q, d, positive_index, temperature=0.02, mask=mask)
"""

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor,
    documents: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean InfoNCE; ``positive_index[i]`` is the row of ``documents`` that is query i's positive.

    ``mask`` [B, N], True = leave document j out of query i's denominator; a query's own
    positive column is never left out.
    """
    q = F.normalize(queries.float(), dim=-1)
    d = F.normalize(documents.float(), dim=-1)
    scores = q @ d.T / temperature
    positive_index = positive_index.to(scores.device)
    if mask is not None:
        mask = mask.to(device=scores.device, dtype=torch.bool)
        own = torch.zeros_like(mask).scatter_(1, positive_index[:, None], True)
        scores = scores.masked_fill(mask & ~own, float("-inf"))
    return F.cross_entropy(scores, positive_index)


def matryoshka_info_nce(
    queries: torch.Tensor,
    documents: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: float,
    dims: Sequence[int] = (),
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE averaged over the full width and each truncated width in ``dims``."""
    widths = sorted({queries.shape[-1], *(d for d in dims if 0 < d < queries.shape[-1])}, reverse=True)
    losses = [info_nce(queries[:, :w], documents[:, :w], positive_index, temperature, mask) for w in widths]
    return torch.stack(losses).mean()


def positive_copy_mask(document_keys: torch.Tensor, positive_index: torch.Tensor) -> torch.Tensor | None:
    """[B, N] True where document j is a copy of query i's positive text (not its positive column).

    ``document_keys`` [N] holds one int64 key per document text (``libs.modeling.data.text_key``);
    None when no query has a copy of its positive among the documents.
    """
    positive_index = positive_index.to(document_keys.device)
    columns = torch.arange(document_keys.shape[0], device=document_keys.device)
    mask = (document_keys[positive_index][:, None] == document_keys[None, :]) & (columns[None, :] != positive_index[:, None])
    return mask if bool(mask.any()) else None


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
