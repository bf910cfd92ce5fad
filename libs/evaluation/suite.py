"""Base vs fine-tuned on the same data in the same run, over any mix of BEIR folders and STS files."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from libs.evaluation.retrieval import RetrievalDataset, evaluate_retrieval, load_beir
from libs.evaluation.sts import StsDataset, evaluate_sts, load_sts

log = logging.getLogger(__name__)
Encoder = Callable[[list[str], bool], torch.Tensor]


@dataclass(frozen=True)
class EvalRow:
    dataset: str
    metric: str
    base: float
    tuned: float


def load_eval_set(path: str | Path) -> RetrievalDataset | StsDataset:
    """A BEIR folder (has corpus.jsonl) or an STS pair file / folder holding test.tsv."""
    path = Path(path)
    if (path / "corpus.jsonl").exists():
        return load_beir(path)
    if path.is_file() or (path / "test.tsv").exists():
        return load_sts(path)
    raise ValueError(f"{path}: neither a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) nor an STS pair file")


def evaluate(encode: Encoder, dataset: RetrievalDataset | StsDataset) -> dict[str, float]:
    if isinstance(dataset, RetrievalDataset):
        return evaluate_retrieval(encode, dataset)
    return evaluate_sts(encode, dataset)


def compare(base: Encoder, tuned: Encoder, datasets: Sequence[RetrievalDataset | StsDataset]) -> list[EvalRow]:
    rows = []
    for dataset in datasets:
        before, after = evaluate(base, dataset), evaluate(tuned, dataset)
        rows.extend(EvalRow(dataset.name, metric, before[metric], after[metric]) for metric in before)
        log.info("evaluated", extra={"dataset": dataset.name, "base": before, "tuned": after})
    return rows
