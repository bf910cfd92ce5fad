"""The contrastive fine-tuning loop: InfoNCE over in-batch + hard negatives, GradCache,
bf16 autocast, gradients summed across torchrun ranks, and resumable checkpoints.

Documents carry a key of their exact text; the loss (on every rank, over all ranks'
documents) masks each copy of a query's positive, so batches may share passages.

A checkpoint holds the trainable weights, optimizer, scheduler, data position (epoch,
batch) and RNG states; it is written atomically, so a run killed at any moment (SIGKILL)
restarts from the last one. Batches are a pure function of (seed, epoch) and negatives a
pure function of (seed, epoch, example), so a resumed run sees the same data.
"""

import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import get_linear_schedule_with_warmup

from libs.modeling.data import TrainExample, plan_batches, text_key
from libs.modeling.embedder import Embedder
from libs.modeling.losses import (
    all_reduce_gradients,
    gather_offsets,
    gather_with_local_grad,
    matryoshka_info_nce,
    positive_copy_mask,
)

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainConfig:
    output_dir: str
    # Global batch (all ranks together); with GradCache the effective contrastive batch.
    batch_size: int = 32
    negatives_per_query: int = 1
    epochs: int = 1
    # 0 = run the epochs; otherwise stop after this many optimizer steps.
    max_steps: int = 0
    # 0 = full_learning_rate, or lora_learning_rate when the model trains LoRA adapters.
    learning_rate: float = 0.0
    full_learning_rate: float = 2e-5
    # LoRA paper and E5-mistral: 1e-4.
    lora_learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # InfoNCE temperature; 0 = by the base model's family (temperature_choice): encoder_temperature
    # for encoders, decoder_temperature for decoder LLMs.
    temperature: float = 0.0
    # sentence-transformers' MultipleNegativesRankingLoss scale 20 = 1/0.05: what all-MiniLM-L6-v2
    # and the other sentence-transformers encoders were trained with.
    encoder_temperature: float = 0.05
    # E5-mistral (arXiv 2401.00368) and FlagEmbedding's LLM recipes: 0.02.
    decoder_temperature: float = 0.02
    matryoshka_dims: tuple[int, ...] = ()
    # > 0: GradCache with sub-batches of this many texts (fixed memory for any batch size).
    gradcache_chunk_size: int = 0
    # 0 = only at the end.
    checkpoint_every: int = 50
    seed: int = 42
    bucket_by_length: bool = True
    # Used for examples that carry no instruction of their own.
    default_instruction: str = ""


def temperature_choice(config: TrainConfig, is_decoder: bool) -> tuple[float, str]:
    """The InfoNCE temperature a run with ``config`` trains a model of this family with, and why."""
    if config.temperature > 0:
        return config.temperature, "set for this run"
    if is_decoder:
        return config.decoder_temperature, "default for decoder models (E5-mistral recipe, arXiv 2401.00368)"
    return (
        config.encoder_temperature,
        "default for encoder models (sentence-transformers MultipleNegativesRankingLoss scale 20 = 1/0.05, as the "
        "base encoder was trained)",
    )


def learning_rate_choice(config: TrainConfig, lora: bool) -> float:
    """The learning rate of a run with ``config`` (full fine-tuning or LoRA adapters)."""
    return config.learning_rate or (config.lora_learning_rate if lora else config.full_learning_rate)


def for_model(config: TrainConfig, embedder: Embedder) -> TrainConfig:
    """``config`` with its model-dependent zero values (temperature, learning rate) filled for ``embedder``."""
    return replace(
        config,
        temperature=temperature_choice(config, embedder.is_decoder)[0],
        learning_rate=learning_rate_choice(config, embedder.has_lora),
    )


@dataclass
class Batch:
    """Queries and documents; documents[i] is query i's positive, hard negatives follow.

    ``instructions[i]`` is query i's instruction ("" for none; all "" when not given), which the
    model turns into its query prompt. ``document_keys[j]`` is ``text_key(documents[j])`` (filled
    in when not given), so query i's positive key is ``document_keys[positive_index[i]]``.
    """

    queries: list[str]
    documents: list[str]
    document_keys: list[int] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.document_keys:
            self.document_keys = [text_key(d) for d in self.documents]
        if len(self.document_keys) != len(self.documents):
            raise ValueError("one document key per document")
        self.instructions = self.instructions or [""] * len(self.queries)
        if len(self.instructions) != len(self.queries):
            raise ValueError("one instruction per query")

    def query_prompts(self, embedder: Embedder) -> list[str]:
        return [embedder.query_prompt(instruction) for instruction in self.instructions]

    @property
    def positive_index(self) -> torch.Tensor:
        return torch.arange(len(self.queries))

    @property
    def keys(self) -> torch.Tensor:
        return torch.tensor(self.document_keys, dtype=torch.long)


@dataclass
class TrainResult:
    steps: int
    total_steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int = 0


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def collate(examples: Sequence[TrainExample], indices: Sequence[int], config: TrainConfig, epoch: int) -> Batch:
    queries, instructions, positives, negatives = [], [], [], []
    for i in indices:
        example = examples[i]
        queries.append(example.query)
        instructions.append(example.instruction or config.default_instruction)
        positives.append(example.positive)
        pool = list(example.negatives)
        rng = random.Random(f"{config.seed}:{epoch}:{i}")
        negatives.extend(rng.sample(pool, min(config.negatives_per_query, len(pool))))
    documents = positives + negatives
    return Batch(queries, documents, [text_key(d) for d in documents], instructions)


def contrastive_loss(
    queries: torch.Tensor,
    documents: torch.Tensor,
    positive_index: torch.Tensor,
    config: TrainConfig,
    document_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """The global loss over all ranks' rows (identical on every rank).

    ``document_keys`` (int64, one per local document) are gathered like the documents; every
    copy of a query's positive text, on any rank, is left out of its denominator.
    """
    doc_offset, _ = gather_offsets(documents.shape[0])
    all_q = gather_with_local_grad(queries)
    all_d = gather_with_local_grad(documents)
    all_pos = gather_with_local_grad(positive_index + doc_offset)
    mask = None
    if document_keys is not None:
        if document_keys.shape[0] != documents.shape[0]:
            raise ValueError(f"{document_keys.shape[0]} document keys for {documents.shape[0]} documents")
        mask = positive_copy_mask(gather_with_local_grad(document_keys.long()), all_pos)
    return matryoshka_info_nce(all_q, all_d, all_pos, config.temperature, config.matryoshka_dims, mask=mask)


def plain_backward(embedder: Embedder, batch: Batch, config: TrainConfig) -> float:
    with embedder.autocast():
        q = embedder.embed(batch.queries, batch.query_prompts(embedder))
        d = embedder.embed(batch.documents)
    loss = contrastive_loss(q, d, batch.positive_index, config, batch.keys)
    loss.backward()
    return loss.detach().item()


def gradcache_backward(embedder: Embedder, batch: Batch, config: TrainConfig) -> float:
    """GradCache (Gao et al. 2021, arXiv 2101.06983): embeddings without a graph, loss gradient
    w.r.t. the embeddings, then each sub-batch again with a graph, back-propagating its cached
    gradient. Dropout replays the same RNG state in both passes, so gradients equal the plain loss.
    """
    size = config.gradcache_chunk_size
    prompts = batch.query_prompts(embedder)
    q_starts, d_starts = range(0, len(batch.queries), size), range(0, len(batch.documents), size)
    q_chunks = [embedder.tokenize(batch.queries[i : i + size], prompts[i : i + size]) for i in q_starts]
    d_chunks = [embedder.tokenize(batch.documents[i : i + size]) for i in d_starts]
    inputs = q_chunks + d_chunks
    states, reps = [], []
    with torch.no_grad(), embedder.autocast():
        for features in inputs:
            states.append(torch.get_rng_state())
            reps.append(embedder(features))
    q = torch.cat(reps[: len(q_chunks)]).requires_grad_()
    d = torch.cat(reps[len(q_chunks) :]).requires_grad_()
    loss = contrastive_loss(q, d, batch.positive_index, config, batch.keys)
    loss.backward()
    grads = torch.cat([q.grad, d.grad]).split([len(features["input_ids"]) for features in inputs])
    with torch.random.fork_rng(devices=[]):
        for features, state, grad in zip(inputs, states, grads):
            torch.set_rng_state(state)
            with embedder.autocast():
                rep = embedder(features)
            (rep * grad).sum().backward()
    return loss.detach().item()


class Trainer:
    """Fine-tunes an embedder on examples; ``on_step(step, total_steps, loss)`` reports progress."""

    def __init__(self, embedder: Embedder, examples: Sequence[TrainExample], config: TrainConfig):
        self.embedder = embedder
        self.examples = examples
        self.config = config = for_model(config, embedder)
        self.rank, self.world_size = world()
        if config.batch_size % self.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be a multiple of the world size {self.world_size}")
        self.local_batch = config.batch_size // self.world_size
        self.parameters = [p for p in embedder.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.total_steps = self._count_steps()
        if self.total_steps == 0:
            raise ValueError(f"no training step possible with {len(examples)} examples and batch size {config.batch_size}")
        warmup = int(config.warmup_ratio * self.total_steps)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        self.checkpoint_path = Path(config.output_dir) / CHECKPOINT_FILE

    def _plan(self, epoch: int) -> list[list[int]]:
        return plan_batches(
            self.examples,
            self.config.batch_size,
            seed=self.config.seed + epoch,
            bucket_by_length=self.config.bucket_by_length,
            drop_last=self.world_size > 1,
        )

    def _count_steps(self) -> int:
        steps = sum(len([b for b in self._plan(e) if len(b) >= 2]) for e in range(self.config.epochs))
        return min(steps, self.config.max_steps) if self.config.max_steps else steps

    def train(
        self, on_step: Callable[[int, int, float], None] | None = None, on_checkpoint: Callable[[int, Path], None] | None = None
    ) -> TrainResult:
        """Train to the end, resuming from the checkpoint file if there is one; ``on_checkpoint(step,
        path)`` runs on rank 0 after each checkpoint is saved (e.g. to copy it to object storage)."""
        config = self.config
        result = TrainResult(steps=0, total_steps=self.total_steps)
        epoch, position = self._resume(result)
        self.embedder.train()
        step_fn = gradcache_backward if config.gradcache_chunk_size > 0 else plain_backward
        while result.steps < self.total_steps and epoch < config.epochs:
            batches = [b for b in self._plan(epoch) if len(b) >= 2]
            while position < len(batches) and result.steps < self.total_steps:
                local = batches[position][self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
                batch = collate(self.examples, local, config, epoch)
                self.optimizer.zero_grad(set_to_none=True)
                loss = step_fn(self.embedder, batch, config)
                all_reduce_gradients(self.parameters)
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.parameters, config.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                position += 1
                result.steps += 1
                result.losses.append((result.steps, loss))
                if on_step is not None:
                    on_step(result.steps, self.total_steps, loss)
                if config.checkpoint_every and result.steps % config.checkpoint_every == 0 and result.steps < self.total_steps:
                    self._save(result, epoch, position)
                    if on_checkpoint is not None and self.rank == 0:
                        on_checkpoint(result.steps, self.checkpoint_path)
            epoch, position = epoch + 1, 0
        return result

    def _save(self, result: TrainResult, epoch: int, position: int) -> None:
        if self.rank != 0:
            return
        state = {
            "weights": {n: p.detach() for n, p in self.embedder.named_parameters() if p.requires_grad},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": result.steps,
            "losses": result.losses,
            "epoch": epoch,
            "position": position,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, partial)
        os.replace(partial, self.checkpoint_path)
        log.info("checkpoint saved", extra={"step": result.steps, "path": str(self.checkpoint_path)})

    def _resume(self, result: TrainResult) -> tuple[int, int]:
        if not self.checkpoint_path.exists():
            return 0, 0
        state = torch.load(self.checkpoint_path, weights_only=False)
        missing = self.embedder.load_state_dict(state["weights"], strict=False).unexpected_keys
        if missing:
            raise ValueError(f"checkpoint {self.checkpoint_path} does not match the model: {missing[:3]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        result.steps = result.resumed_from = state["step"]
        result.losses = list(state["losses"])
        log.info("resumed from checkpoint", extra={"step": result.steps, "path": str(self.checkpoint_path)})
        return state["epoch"], state["position"]
