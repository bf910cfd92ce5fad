"""One training run, stage by stage: snapshot -> mine negatives -> fine-tune -> evaluate
(base vs tuned, same run) -> merge (LoRA, LM-Cocktail) -> export with a model card.

With ``storage_uri`` set (the service always sets it) each checkpoint is copied to object
storage (libs.storage) under ``trainer/runs/<run_id>/`` and the exported model is uploaded to
``models/<model_id>/`` with its manifest: a trainer that lost its disk resumes the run from the
last stored checkpoint, and embedders load the model from storage, never from this disk.

Each stage is also a CLI command (services/trainer/cli.py). A run reports progress as JSON
lines through ``report`` (the service tails them from the run's events file).
"""

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import get_type_hints

import numpy as np
import torch
import torch.distributed as dist

from libs.corpus import DEFAULT_CHUNK_WORDS, chunk_document, read_documents
from libs.evaluation.retrieval import RetrievalDataset, dataset_from_pairs, query_metrics
from libs.evaluation.suite import compare, load_eval_set, paired_difference_se
from libs.modeling.data import TrainExample, read_examples, split_train_dev, write_examples
from libs.modeling.embedder import Embedder, ModelConfig, sentence_transformers_query_prompt
from libs.modeling.export import ModelCard, cocktail_merge, export_model, public_model_id, save_trained
from libs.modeling.mining import MiningConfig, mine_hard_negatives, nearest_passages
from libs.modeling.trainer import CHECKPOINT_FILE, Trainer, TrainConfig, learning_rate_choice, temperature_choice
from libs.storage import Storage

log = logging.getLogger(__name__)
Report = Callable[[dict], None]
# Texts to vectors; queries (is_query) get the model's query prompt.
Encoder = Callable[[list[str], bool], torch.Tensor]


@dataclass
class MergeConfig:
    # Weight of the fine-tuned model in the LM-Cocktail merge; 0 = choose on the dev split.
    weight: float = 1.0
    candidates: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    # Fewer dev queries than this keep the best mean: their standard error is too rough for the
    # one-standard-error walk, which then always reaches the last candidate (see merge_weight_choice).
    min_dev_queries: int = 30


@dataclass
class RunConfig:
    """Everything a run needs, as files and typed settings (FlagEmbedding style)."""

    dataset_path: str
    run_dir: str
    model: ModelConfig
    train: TrainConfig
    mining: MiningConfig = field(default_factory=MiningConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    # Documents to mine negatives from (JSONL with "text" [and "title"]); empty = the positives pool.
    corpus_path: str = ""
    # Mine from chunks of this many words (libs.corpus.chunk_document, as corpus-grounded
    # generation cuts them, so negatives are the same kind of text as the positives); 0 =
    # libs.corpus.DEFAULT_CHUNK_WORDS (200), as in JobSpec.corpus_chunk_words.
    corpus_chunk_words: int = 0
    # Mine whole documents (``title text``) instead of chunks: a corpus the queries were not written
    # from, or a job's chunks as the service writes them (one per line, the text alone, as the positives).
    corpus_whole_documents: bool = False
    eval_paths: tuple[str, ...] = ()
    dev_fraction: float = 0.1
    # Passages of the mining corpus the dev queries are also ranked against (the base model's nearest
    # to the dev queries when the corpus has more): without them the dev split ranks a few hundred
    # unlike passages, which every model gets right, and cannot choose a merge weight.
    dev_corpus_passages: int = 2000
    # Instruction for queries that carry none (and the exported model's query prompt).
    instruction: str = ""
    model_id: str = ""
    export_dir: str = ""
    provenance: dict = field(default_factory=dict)
    # Object storage root (libs.storage URI) for checkpoints and the exported model; empty = local only.
    storage_uri: str = ""


MINED_FILE = "train.mined.jsonl"
# Training examples the round-trip filter left out (the trainer publishes them as rejected, reason round_trip).
ROUND_TRIP_FILE = "round_trip.rejected.jsonl"


def run_key(run_id: str) -> str:
    """Where a run's state lives in object storage."""
    return f"trainer/runs/{run_id}"


def relocate(config: RunConfig, run_dir: str) -> RunConfig:
    """The config of a run restored into another folder: paths inside the old run folder move along."""
    old = config.run_dir.rstrip("/")

    def moved(path: str) -> str:
        return run_dir + path[len(old) :] if path == old or path.startswith(old + "/") else path

    config.dataset_path, config.run_dir, config.export_dir = moved(config.dataset_path), run_dir, moved(config.export_dir)
    config.corpus_path = moved(config.corpus_path)
    config.train.output_dir = moved(config.train.output_dir)
    return config


def store_checkpoint(config: RunConfig, step: int) -> None:
    """Copy the checkpoint (and the negatives it trains with) to storage, point the run's
    checkpoint.json at it, then drop every other stored checkpoint, including one left behind
    by a trainer that died between writing the pointer and deleting its predecessor."""
    storage = Storage(config.storage_uri)
    key = run_key(Path(config.run_dir).name)
    name = f"{step:08d}"
    stored = storage.put_folder(Path(config.run_dir), f"{key}/checkpoints/{name}", [CHECKPOINT_FILE, MINED_FILE])
    storage.write_json(f"{key}/checkpoint.json", {"step": step, "uri": stored.uri, "digest": stored.digest})
    for older in storage.list(f"{key}/checkpoints"):
        if older != name:
            storage.delete(f"{key}/checkpoints/{older}")


def from_dict(cls, raw: dict):
    """Build a (nested) dataclass from a JSON object; unknown keys are an error."""
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown settings {sorted(unknown)}")
    values = {}
    for key, value in raw.items():
        hint = hints[key]
        target = next((t for t in getattr(hint, "__args__", ()) if is_dataclass(t)), hint)
        if is_dataclass(target) and isinstance(value, dict):
            value = from_dict(target, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def load_run_config(path: str | Path) -> RunConfig:
    return from_dict(RunConfig, json.loads(Path(path).read_text()))


def save_run_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(asdict(config), indent=2, ensure_ascii=False))


def read_corpus(path: str | Path, chunk_words: int = 0, whole_documents: bool = False) -> list[str]:
    """Mining candidates from the job's documents (any layout libs.corpus reads): the texts of
    their ``chunk_words`` chunks (0 = DEFAULT_CHUNK_WORDS, as JobSpec), or each whole document as
    ``title text``."""
    if whole_documents:
        return [f"{doc.title} {doc.text}".strip() for doc in read_documents(path)]
    return [chunk.text for doc in read_documents(path) for chunk in chunk_document(doc, chunk_words or DEFAULT_CHUNK_WORDS)]


def init_distributed() -> tuple[int, int]:
    """Join the torchrun group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world_size) if world_size > 1 else (0, 1)


def snapshot(config: RunConfig) -> tuple[list[TrainExample], list[TrainExample], dict]:
    """Split the dataset into train/dev files in the run folder and describe exactly what was used."""
    run_dir = Path(config.run_dir)
    examples = read_examples(config.dataset_path)
    train, dev = split_train_dev(examples, config.dev_fraction, seed=config.train.seed)
    write_examples(run_dir / "train.jsonl", train)
    write_examples(run_dir / "dev.jsonl", dev)
    manifest = {
        "dataset_path": str(config.dataset_path),
        "examples": len(examples),
        "train_examples": len(train),
        "dev_examples": len(dev),
        "train_content_hashes": [e.content_hash for e in train],
        "dev_content_hashes": [e.content_hash for e in dev],
        **config.provenance,
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return train, dev, manifest


def mine(config: RunConfig, train: list[TrainExample]) -> list[TrainExample]:
    if config.mining.negatives <= 0:
        return train
    corpus = (
        read_corpus(config.corpus_path, config.corpus_chunk_words, config.corpus_whole_documents) if config.corpus_path else []
    )
    mining = MiningConfig(
        **{**asdict(config.mining), "default_instruction": config.mining.default_instruction or config.instruction}
    )
    base = Embedder(ModelConfig(**{**asdict(config.model), "lora": None, "gradient_checkpointing": False}))
    mined = mine_hard_negatives(base, train, corpus, mining)
    if not mined:
        k = mining.round_trip_k
        raise ValueError(f"the round-trip filter (top {k}) left none of {len(train)} training examples: raise k (0 = off)")
    kept = {e.content_hash for e in mined}
    write_examples(Path(config.run_dir) / ROUND_TRIP_FILE, [e for e in train if e.content_hash not in kept])
    return mined


def fine_tune(config: RunConfig, train: list[TrainExample], report: Report) -> Embedder:
    """Train (resuming from the run folder's checkpoint if there is one) and save the result."""
    rank, world_size = init_distributed()
    torch.manual_seed(config.train.seed)
    embedder = Embedder(config.model)
    # A small dataset trains with every example in one batch rather than not at all.
    batch_size = max(world_size, min(config.train.batch_size, len(train) // world_size * world_size))
    if batch_size != config.train.batch_size:
        log.warning("batch size lowered to the dataset size", extra={"requested": config.train.batch_size, "used": batch_size})
    train_config = TrainConfig(
        **{
            **asdict(config.train),
            "batch_size": batch_size,
            "output_dir": config.run_dir,
            "default_instruction": config.train.default_instruction or config.instruction,
        }
    )
    trainer = Trainer(embedder, train, train_config)
    started = time.perf_counter()

    def on_step(step: int, total: int, loss: float) -> None:
        if rank == 0:
            report({"state": "training", "step": step, "total_steps": total, "loss": round(loss, 6)})

    result = trainer.train(on_step, (lambda step, _path: store_checkpoint(config, step)) if config.storage_uri else None)
    if rank == 0:
        save_trained(embedder, Path(config.run_dir) / "trained")
        report(
            {
                "state": "training",
                "trained_s": round(time.perf_counter() - started, 2),
                "steps": result.steps,
                "resumed_from": result.resumed_from,
            }
        )
    return embedder


def dev_dataset(dev: list[TrainExample], config: RunConfig, base: Embedder):
    """The synthetic dev split as a ranking task: each dev query looks for its positive among
    every passage of the snapshot (dev and train positives and negatives; the train split is
    read from the run folder) and the ``dev_corpus_passages`` passages of the mining corpus that
    the ``base`` model ranks nearest to the dev queries, not only among the few dev positives: a
    random sample of a large corpus is mostly passages no model confuses, which leaves every
    merge weight at the same dev score."""
    train_file = Path(config.run_dir) / "train.jsonl"
    train = read_examples(train_file) if train_file.exists() else []
    pool = [n for e in dev for n in e.negatives] + [t for e in train for t in (e.positive, *e.negatives)]
    if config.corpus_path and config.dev_corpus_passages > 0:
        corpus = read_corpus(config.corpus_path, config.corpus_chunk_words, config.corpus_whole_documents)
        own_prompt = sentence_transformers_query_prompt(config.model.base_model)
        pool += nearest_passages(base, [own_prompt + e.query for e in dev], corpus, config.dev_corpus_passages)
    return dataset_from_pairs("dev", [(e.query, e.positive) for e in dev], pool)


def tuned_encoder(embedder: Embedder, instruction: str, dev: list[TrainExample]) -> Encoder:
    """The tuned model as it is exported: each query after its prompt, of its own instruction for a
    dev query that has one, of the run's ``instruction`` for the others (BEIR queries)."""
    own = {e.query: e.instruction for e in dev if e.instruction}

    def encode(texts: list[str], is_query: bool) -> torch.Tensor:
        if not is_query:
            return embedder.encode(texts)
        return embedder.encode(texts, prompts=[embedder.query_prompt(own.get(t, instruction)) for t in texts])

    return encode


def base_encoder(embedder: Embedder, base_model: str) -> Encoder:
    """The base model as its own card uses it, the anchor a user compares against: its declared
    query prompt (none for all-MiniLM-L6-v2) in front of each query, without the run's instruction."""
    own_prompt = sentence_transformers_query_prompt(base_model)

    def encode(texts: list[str], is_query: bool) -> torch.Tensor:
        return embedder.encode([own_prompt + t for t in texts] if is_query else texts)

    return encode


def merge_weight_choice(scores: dict[float, np.ndarray], min_queries: int) -> float:
    """Breiman's one-standard-error rule over each weight's per-query dev nDCG@10: from the best mean
    toward the base, the last weight before the first that falls below the best by more than one
    standard error of their paired per-query difference. The most base-like weight the dev split
    cannot tell from the best, without jumping over a worse weight to a lucky one: a few dozen
    synthetic dev queries, most ranking their positive first at every weight, separate neighbouring
    weights by one or two queries.

    With fewer than ``min_queries`` dev queries the best mean is kept: a handful of queries resolve
    no difference, so the walk would always end at the last candidate, and that default costs most
    where fine-tuning gains most (cmrc2018-dev: 16 dev queries, 0.5 chosen, 3.6 nDCG@10 below
    weight 1.0 on the real queries), while a weight of 1.0 where tuning gains nothing costs a few
    tenths (xquad-en)."""
    best = max(scores, key=lambda weight: (scores[weight].mean(), weight))
    if len(scores[best]) < min_queries:
        return best
    chosen = best
    for weight in sorted((w for w in scores if w < best), reverse=True):
        loss = scores[best] - scores[weight]
        # One query's loss is exactly one standard error: within, whatever the rounding.
        if loss.mean() > paired_difference_se(scores[weight], scores[best]) + 1e-9:
            break
        chosen = weight
    return chosen


def choose_merge_weight(
    tuned: Embedder, base: Embedder, dataset: RetrievalDataset | None, config: RunConfig, dev: list[TrainExample], report: Report
) -> float:
    """Fixed weight, or the weight ``merge_weight_choice`` picks from each candidate's per-query dev nDCG@10."""
    if config.merge.weight > 0 or dataset is None:
        return config.merge.weight or 1.0
    tuned_state = {k: v.clone() for k, v in tuned.model.state_dict().items()}
    encode = tuned_encoder(tuned, config.instruction, dev)  # encodes with tuned's weights of the moment
    scores = {}
    for weight in config.merge.candidates:
        tuned.model.load_state_dict(tuned_state)
        cocktail_merge(tuned, base, weight)
        scores[weight] = query_metrics(encode, dataset)["ndcg@10"]
    tuned.model.load_state_dict(tuned_state)
    chosen = merge_weight_choice(scores, config.merge.min_dev_queries)
    means = {str(weight): round(float(s.mean()), 4) for weight, s in scores.items()}
    report({"state": "exporting", "merge_scores": means, "merge_weight": chosen})
    return chosen


def evaluate_and_export(config: RunConfig, tuned: Embedder, dev: list[TrainExample], manifest: dict, report: Report) -> dict:
    report({"state": "exporting"})
    base = Embedder(ModelConfig(**{**asdict(config.model), "lora": None, "gradient_checkpointing": False}))
    merged = tuned.merged()
    dev_set = dev_dataset(dev, config, base) if dev else None
    weight = choose_merge_weight(merged, base, dev_set, config, dev, report)
    if weight < 1.0:
        cocktail_merge(merged, base, weight)
    report({"state": "evaluating"})
    datasets = ([dev_set] if dev_set else []) + [load_eval_set(p) for p in config.eval_paths]
    rows = compare(
        base_encoder(base, config.model.base_model),
        tuned_encoder(merged, config.instruction, dev),
        datasets,
    )
    evals = [asdict(r) for r in rows]
    report({"state": "evaluating", "evals": evals})
    model_id = config.model_id or Path(config.run_dir).name
    export_dir = Path(config.export_dir or Path(config.run_dir) / "model")
    recipe = {
        "pooling": merged.pooling,
        "lora": asdict(config.model.lora) if config.model.lora else "full fine-tuning",
        "batch_size": config.train.batch_size,
        "learning_rate": learning_rate_choice(config.train, config.model.lora is not None),
        "temperature": "{:g} ({})".format(*temperature_choice(config.train, merged.is_decoder)),
        "epochs": config.train.epochs,
        "max_steps": config.train.max_steps,
        "negatives_per_query": config.train.negatives_per_query,
        "mining": asdict(config.mining),
        "matryoshka_dims": list(config.train.matryoshka_dims),
    }
    provenance = {k: v for k, v in manifest.items() if not k.endswith("content_hashes")} | {
        "manifest": str(Path(config.run_dir) / "manifest.json")
    }
    base_id = public_model_id(str(config.model.base_model))
    card = ModelCard(model_id, base_id, config.instruction, weight, recipe, provenance, rows)
    export_model(merged, export_dir, card)
    stored = Storage(config.storage_uri).put_folder(export_dir, f"models/{model_id}") if config.storage_uri else None
    done = {
        "state": "succeeded",
        "model_id": model_id,
        "model_path": str(export_dir),
        "dimensions": merged.dimensions,
        "pooling": merged.pooling,
        "max_length": config.model.max_length,
        "merge_weight": weight,
        "evals": evals,
        "model_uri": stored.uri if stored else "",
        "manifest_digest": stored.digest if stored else "",
    }
    report(done)
    return done


def execute(config: RunConfig, report: Report) -> dict:
    """The whole run in this process (rank 0 evaluates and exports under torchrun)."""
    rank, world_size = init_distributed()
    run_dir = Path(config.run_dir)
    mined_path = run_dir / MINED_FILE
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        train, dev, manifest = snapshot(config)
        report({"state": "mining", "train_examples": len(train), "dev_examples": len(dev)})
        if not mined_path.exists():  # a resumed run keeps the negatives it trained with
            write_examples(mined_path, mine(config, train))
    if world_size > 1:
        dist.barrier()
    tuned = fine_tune(config, read_examples(mined_path), report)
    if rank != 0:
        return {}
    return evaluate_and_export(
        config, tuned, read_examples(run_dir / "dev.jsonl"), json.loads((run_dir / "manifest.json").read_text()), report
    )
