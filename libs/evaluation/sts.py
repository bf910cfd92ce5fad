"""STS evaluation: Spearman correlation of cosine similarity with gold scores.

An STS pair file is a TSV with a header ``sentence1, sentence2, score``.
"""

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class StsDataset:
    name: str
    pairs: list[tuple[str, str]]
    scores: list[float]


def load_sts(path: str | Path) -> StsDataset:
    path = Path(path)
    file = path / "test.tsv" if path.is_dir() else path
    pairs, scores = [], []
    with open(file, encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            pairs.append((row["sentence1"], row["sentence2"]))
            scores.append(float(row["score"]))
    return StsDataset(path.name if path.is_dir() else path.stem, pairs, scores)


def pair_similarities(encode: Callable[[list[str], bool], torch.Tensor], dataset: StsDataset) -> np.ndarray:
    """cos(s1, s2) of each pair, in the dataset's order."""
    texts = sorted({t for pair in dataset.pairs for t in pair})
    vectors = encode(texts, False)
    index = {t: i for i, t in enumerate(texts)}
    left = vectors[[index[a] for a, _ in dataset.pairs]]
    right = vectors[[index[b] for _, b in dataset.pairs]]
    return (left * right).sum(-1).float().numpy()
