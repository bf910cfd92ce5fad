"""Pooling of token states into one vector per text, and the query instruction format.

E5-mistral (arXiv 2401.00368): decoder LLMs append EOS and take its last-layer state
(last-token pooling); queries carry ``Instruct: {task}\\nQuery: {query}``, documents none.
Encoders (BERT-like) use mean or CLS pooling.
"""

import torch

POOLING_MODES = ("mean", "cls", "last_token")


def format_query(instruction: str, query: str) -> str:
    """The E5-mistral query format; an empty instruction leaves the query as it is."""
    return f"Instruct: {instruction}\nQuery: {query}" if instruction else query


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0]


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """State of each sequence's last real token, correct for left and right padding."""
    if bool(attention_mask[:, -1].all()):  # left padding (or no padding): last column is real
        return hidden[:, -1]
    last = attention_mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def pool(mode: str, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    if mode == "mean":
        return mean_pool(hidden, attention_mask)
    if mode == "cls":
        return cls_pool(hidden, attention_mask)
    if mode == "last_token":
        return last_token_pool(hidden, attention_mask)
    raise ValueError(f"unknown pooling {mode!r}; expected one of {POOLING_MODES}")
