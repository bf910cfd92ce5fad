"""Base vs fine-tuned on the same data in the same run, over any mix of BEIR folders and STS files,
each difference with its standard error: whether a gain is more than which queries happened to be asked."""

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import ConstantInputWarning, spearmanr

from libs.evaluation.retrieval import RetrievalDataset, load_beir, query_metrics
from libs.evaluation.sts import StsDataset, load_sts, pair_similarities

log = logging.getLogger(__name__)
Encoder = Callable[[list[str], bool], torch.Tensor]


@dataclass(frozen=True)
class EvalRow:
    dataset: str
    metric: str
    base: float
    tuned: float
    # Standard error of tuned - base over the dataset's queries (or STS pairs), paired item by item.
    difference_se: float


def load_eval_set(path: str | Path) -> RetrievalDataset | StsDataset:
    """A BEIR folder (has corpus.jsonl) or an STS pair file / folder holding test.tsv."""
    path = Path(path)
    if (path / "corpus.jsonl").exists():
        return load_beir(path)
    if path.is_file() or (path / "test.tsv").exists():
        return load_sts(path)
    raise ValueError(f"{path}: neither a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) nor an STS pair file")


def paired_difference_se(base: np.ndarray, tuned: np.ndarray) -> float:
    """Standard error of the mean of ``tuned - base``, item by item (0 for a single item)."""
    difference = tuned - base
    return float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0


def bootstrap_spearman_difference_se(base: np.ndarray, tuned: np.ndarray, gold: np.ndarray, rounds: int = 500) -> float:
    """Standard error of Spearman(tuned) - Spearman(base) by the paired bootstrap over pairs
    (a correlation is no mean of per-pair terms); a fixed seed keeps reruns identical. A resample
    whose scores are all tied has no correlation and is skipped (only tiny sets have them)."""
    rng = np.random.default_rng(0)
    differences = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        for _ in range(rounds):
            sample = rng.integers(0, len(gold), len(gold))
            differences.append(spearmanr(tuned[sample], gold[sample]).statistic - spearmanr(base[sample], gold[sample]).statistic)
    defined = np.array(differences)[np.isfinite(differences)]
    return float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0


def compare_dataset(base: Encoder, tuned: Encoder, dataset: RetrievalDataset | StsDataset) -> list[EvalRow]:
    if isinstance(dataset, RetrievalDataset):
        before, after = query_metrics(base, dataset), query_metrics(tuned, dataset)
        return [
            EvalRow(
                dataset.name,
                metric,
                float(before[metric].mean()),
                float(after[metric].mean()),
                paired_difference_se(before[metric], after[metric]),
            )
            for metric in before
        ]
    gold = np.array(dataset.scores)
    before, after = pair_similarities(base, dataset), pair_similarities(tuned, dataset)
    return [
        EvalRow(
            dataset.name,
            "spearman",
            float(spearmanr(before, gold).statistic),
            float(spearmanr(after, gold).statistic),
            bootstrap_spearman_difference_se(before, after, gold),
        )
    ]


def compare(base: Encoder, tuned: Encoder, datasets: Sequence[RetrievalDataset | StsDataset]) -> list[EvalRow]:
    rows = []
    for dataset in datasets:
        dataset_rows = compare_dataset(base, tuned, dataset)
        log.info("evaluated", extra={"dataset": dataset.name, "rows": [asdict(r) for r in dataset_rows]})
        rows.extend(dataset_rows)
    return rows
