"""Training examples as plain JSONL (FlagEmbedding format), the train/dev split, and the
batch plan: length-bucketed batches in which no query appears twice.

FlagEmbedding format, one object per line: ``{"query": str, "pos": [str], "neg": [str]}``
with an optional ``"prompt"`` (the query instruction) and ``"content_hash"``.

A document text that appears twice in a batch (several questions about one passage, or a
hard negative that is another example's positive) is handled by the loss, not the plan:
documents carry a ``text_key`` and the loss masks every copy of a query's own positive
(see ``libs.modeling.losses``). A small corpus therefore still fills its batches. The plan
only keeps one query text out of a batch twice: two identical queries with different
positives would make each other's positive a false negative the text mask cannot see.
"""

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def text_key(text: str) -> int:
    """Stable non-negative 63-bit key of an exact text (fits int64); equal texts, equal keys."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") & 0x7FFF_FFFF_FFFF_FFFF


def content_hash(query: str, positive: str) -> str:
    """Stable id of an example: sha256 of the whitespace/case-normalized query and positive."""
    normalized = " ".join(query.lower().split()) + "\x1f" + " ".join(positive.lower().split())
    return hashlib.sha256(normalized.encode()).hexdigest()


@dataclass(frozen=True)
class TrainExample:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction: str = ""
    content_hash: str = field(default="")

    def __post_init__(self):
        if not self.query.strip() or not self.positive.strip():
            raise ValueError("an example needs a non-empty query and positive")
        if not self.content_hash:
            object.__setattr__(self, "content_hash", content_hash(self.query, self.positive))

    def texts(self) -> tuple[str, ...]:
        return (self.query, self.positive, *self.negatives)

    def to_json(self) -> dict:
        row = {"query": self.query, "pos": [self.positive], "neg": list(self.negatives), "content_hash": self.content_hash}
        if self.instruction:
            row["prompt"] = self.instruction
        return row

    @classmethod
    def from_json(cls, row: dict) -> "TrainExample":
        positives = row.get("pos") or []
        if not isinstance(positives, list) or not positives:
            raise ValueError("'pos' must be a non-empty list of strings")
        return cls(
            query=str(row.get("query", "")),
            positive=str(positives[0]),
            negatives=tuple(str(n) for n in row.get("neg") or () if str(n).strip() and n != positives[0]),
            instruction=str(row.get("prompt", "") or ""),
            content_hash=str(row.get("content_hash", "") or ""),
        )


def read_examples(path: str | Path) -> list[TrainExample]:
    """Read a FlagEmbedding JSONL file; a malformed line raises ValueError naming the line."""
    examples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                examples.append(TrainExample.from_json(json.loads(line)))
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{number}: not a training example: {exc}") from exc
    return examples


def write_examples(path: str | Path, examples: Iterable[TrainExample]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")


def split_train_dev(
    examples: Sequence[TrainExample], dev_fraction: float, seed: int = 0
) -> tuple[list[TrainExample], list[TrainExample]]:
    """Deterministic split by content hash, so an example stays on its side as data grows.

    Examples sharing a positive stay on one side (no passage leaks from train into dev). A
    non-zero fraction of a small set that would leave dev empty still holds out the positive
    with the lowest hash, so base vs tuned is always measured on held-out data.
    """
    buckets = [int(hashlib.sha256(f"{seed}:{e.positive}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for e in examples]
    cutoff = dev_fraction
    if dev_fraction > 0 and len(set(buckets)) > 1 and min(buckets) >= dev_fraction:
        cutoff = min(buckets) + 1e-12
    train = [e for e, b in zip(examples, buckets) if b >= cutoff]
    dev = [e for e, b in zip(examples, buckets) if b < cutoff]
    return train, dev


def plan_batches(
    examples: Sequence[TrainExample], batch_size: int, seed: int, bucket_by_length: bool = True, drop_last: bool = False
) -> list[list[int]]:
    """Batches of example indices for one epoch: shuffled, optionally length-bucketed, no query twice.

    An example whose query text is already in the batch is deferred to a later batch; shared
    positives and negatives are allowed (the loss masks copies of a query's positive).
    Length bucketing sorts windows of 16 batches by query+positive length, so a batch pads little;
    the batch order is shuffled again afterwards.
    """
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    if bucket_by_length:
        window = batch_size * 16
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lambda i: len(examples[i].query) + len(examples[i].positive))
        ]
    batches: list[list[int]] = []
    pending = order
    while pending:
        batch, seen, deferred = [], set(), []
        for position, i in enumerate(pending):
            if len(batch) == batch_size:
                deferred.extend(pending[position:])
                break
            query = examples[i].query
            if query in seen:
                deferred.append(i)
            else:
                batch.append(i)
                seen.add(query)
        batches.append(batch)
        pending = deferred
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches
