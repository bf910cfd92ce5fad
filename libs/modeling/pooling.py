"""Pooling of token states into one vector per text, and the query instruction format.

E5-mistral (arXiv 2401.00368): decoder LLMs append EOS and take its last-layer state
(last-token pooling); queries carry ``Instruct: {task}\\nQuery: {query}``, documents none.
Encoders (BERT-like) use mean or CLS pooling, and take the instruction as INSTRUCTOR and BGE
do: ``{task}: {query}``. The E5-mistral markers are words to a never-instructed encoder: in
front of all-MiniLM-L6-v2's queries they cost xquad-en 1.41 nDCG@10 where ``{task}: `` costs
0.68, and a model fine-tuned with each format keeps that difference (benchmarks/README.md).
Mean pooling can leave the prompt's tokens out (sentence-transformers' ``include_prompt=False``,
as INSTRUCTOR and NV-Embed do): the prompt still conditions every query token through
attention, but a long instruction no longer dominates the average of a short query. Prompts
travel beside the texts they prefix (as sentence-transformers' ``encode(prompt=...)``), never
parsed back out of a text.
"""

import torch

POOLING_MODES = ("mean", "cls", "last_token")


def query_prompt(instruction: str, pooling: str) -> str:
    """The text put before a query for a model with this ``pooling``: ``Instruct: {instruction}\\nQuery: ``
    for last-token pooling (decoder LLMs), ``{instruction}: `` for mean and CLS pooling (encoders);
    "" without an instruction."""
    if not instruction:
        return ""
    return f"Instruct: {instruction}\nQuery: " if pooling == "last_token" else f"{instruction}: "


def prompt_token_counts(tokenizer, prompts: list[str]) -> list[int]:
    """Leading tokens of each text that belong to its prompt (``prompts[i]``, "" for none),
    counted as sentence-transformers does: the prompt tokenized alone, less its last token."""
    counts: dict[str, int] = {"": 0}
    for prompt in set(prompts) - {""}:
        counts[prompt] = len(tokenizer(prompt)["input_ids"]) - 1
    return [counts[prompt] for prompt in prompts]


def without_prompts(attention_mask: torch.Tensor, prompt_tokens: list[int]) -> torch.Tensor:
    """``attention_mask`` with each row's first ``prompt_tokens`` real tokens zeroed (left or
    right padding): the mask mean pooling averages over when prompts are left out."""
    mask = attention_mask.clone()
    leading_pads = (attention_mask.cumsum(dim=-1) == 0).sum(dim=-1).tolist()
    for row, (start, count) in enumerate(zip(leading_pads, prompt_tokens)):
        mask[row, start : start + count] = 0
    return mask


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
