"""Pooling of token states into one vector per text, and the query instruction format.

E5-mistral (arXiv 2401.00368): decoder LLMs append EOS and take its last-layer state
(last-token pooling); queries carry ``Instruct: {task}\\nQuery: {query}``, documents none.
Encoders (BERT-like) use mean or CLS pooling. Mean pooling can leave the instruction prompt's
tokens out (sentence-transformers' ``include_prompt=False``, as INSTRUCTOR and NV-Embed do):
the prompt still conditions every query token through attention, but a long instruction no
longer dominates the average of a short query.
"""

import torch

POOLING_MODES = ("mean", "cls", "last_token")


PROMPT_START = "Instruct: "
PROMPT_END = "\nQuery: "


def query_prompt(instruction: str) -> str:
    """The text put before a query: ``Instruct: {instruction}\\nQuery: ``."""
    return f"{PROMPT_START}{instruction}{PROMPT_END}"


def format_query(instruction: str, query: str) -> str:
    """The E5-mistral query format; an empty instruction leaves the query as it is."""
    return query_prompt(instruction) + query if instruction else query


def prompt_of(text: str) -> str:
    """The instruction prompt a formatted query starts with; "" for any other text."""
    if text.startswith(PROMPT_START):
        end = text.find(PROMPT_END)
        if end >= 0:
            return text[: end + len(PROMPT_END)]
    return ""


def prompt_token_counts(tokenizer, texts: list[str]) -> list[int]:
    """Leading tokens of each text that belong to its instruction prompt (0 for plain texts),
    counted as sentence-transformers does: the prompt tokenized alone, less its last token."""
    counts: dict[str, int] = {"": 0}
    for prompt in {prompt_of(t) for t in texts} - {""}:
        counts[prompt] = len(tokenizer(prompt)["input_ids"]) - 1
    return [counts[prompt_of(t)] for t in texts]


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
