"""A Hugging Face model plus pooling as one text embedder, for training and encoding.

Encoders (BERT-like) pool with mean or CLS; decoder LLMs get EOS appended and pool the
last token (E5-mistral, arXiv 2401.00368). Either can be fine-tuned in full or through
LoRA adapters (peft). Decoders receive position ids computed from the attention mask,
so an embedding is the same with left and right padding.
"""

import json
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from libs.modeling.loading import load_pretrained
from libs.modeling.pooling import POOLING_MODES, pool, prompt_token_counts, query_prompt, without_prompts

log = logging.getLogger(__name__)

DECODER_MODEL_TYPES = {"llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2"}
DEFAULT_LORA_TARGETS = {
    "bert": ("query", "key", "value", "dense"),
    "decoder": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


def bf16_supported() -> bool:
    """True where bf16 matmuls are fast: a CUDA GPU, or a CPU with AVX-512 BF16 / AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class LoraSettings:
    rank: int = 16
    # 0 = 2 x rank.
    alpha: int = 0
    dropout: float = 0.05
    # Empty: the attention (and MLP) projections of the model's family.
    target_modules: tuple[str, ...] = ()

    def __post_init__(self):
        self.alpha = self.alpha or 2 * self.rank


@dataclass
class ModelConfig:
    base_model: str
    # "" = the base folder's sentence-transformers pooling, last_token for decoders, else mean.
    pooling: str = field(default="", metadata={"choices": ("", "mean", "cls", "last_token")})
    max_length: int = 256
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False
    # "" = the tokenizer's own padding side.
    padding_side: str = field(default="", metadata={"choices": ("", "left", "right")})
    # None = append EOS for decoders only.
    append_eos: bool | None = None
    # None = bf16 autocast where the hardware supports it.
    bf16: bool | None = None
    # Mean pooling also averages the query instruction prompt's tokens (sentence-transformers'
    # include_prompt); off, the prompt only conditions the query tokens through attention.
    include_prompt: bool = False


def is_decoder_config(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return config.model_type in DECODER_MODEL_TYPES or any(a.endswith("ForCausalLM") for a in archs)


def sentence_transformers_modules(path: str) -> list[dict]:
    """The module list (modules.json) of a sentence-transformers folder ([] if it has none)."""
    try:
        return json.loads((Path(path) / "modules.json").read_text())
    except (OSError, ValueError):
        return []


def sentence_transformers_pooling_config(path: str) -> dict:
    """The config of a sentence-transformers folder's Pooling module ({} if it has none)."""
    for module in sentence_transformers_modules(path):
        if module.get("type", "").endswith("Pooling"):
            return json.loads((Path(path) / module["path"] / "config.json").read_text())
    return {}


def sentence_transformers_query_prompt(path: str) -> str:
    """The query prompt a sentence-transformers folder declares (e.g. "query: " for E5), or ""."""
    try:
        config = json.loads((Path(path) / "config_sentence_transformers.json").read_text())
    except (OSError, ValueError):
        return ""
    return str((config.get("prompts") or {}).get("query", ""))


def sentence_transformers_pooling(path: str) -> str | None:
    """The pooling a sentence-transformers folder declares, in our names, if it has one."""
    return pooling_mode_of(sentence_transformers_pooling_config(path))


def pooling_mode_of(cfg: dict) -> str | None:
    """Our name for the mode a sentence-transformers Pooling config selects (None if none)."""
    mode = cfg.get("pooling_mode")
    if mode in ("mean", "cls", "lasttoken"):
        return "last_token" if mode == "lasttoken" else mode
    for key, name in (
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
        ("pooling_mode_lasttoken", "last_token"),
    ):
        if cfg.get(key):
            return name
    return None


class Embedder(torch.nn.Module):
    """Tokenize, run the transformer, pool; ``forward`` returns unnormalized float32 vectors."""

    def __init__(self, config: ModelConfig, model=None, tokenizer=None):
        super().__init__()
        self.config = config
        hf_config = model.config if model is not None else AutoConfig.from_pretrained(config.base_model)
        self.is_decoder = is_decoder_config(hf_config)
        self.pooling = (
            config.pooling or sentence_transformers_pooling(config.base_model) or ("last_token" if self.is_decoder else "mean")
        )
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {self.pooling!r}; expected one of {POOLING_MODES}")
        self.append_eos = self.is_decoder if config.append_eos is None else config.append_eos
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(config.base_model)
        if config.padding_side:
            self.tokenizer.padding_side = config.padding_side
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.append_eos and self.tokenizer.eos_token_id is None:
            raise ValueError(f"{config.base_model}: the tokenizer has no EOS token to append")
        self.model = model if model is not None else load_pretrained(AutoModel, config.base_model)
        self.use_bf16 = bf16_supported() if config.bf16 is None else config.bf16
        if config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.lora is not None and not hasattr(self.model, "peft_config"):
            self.model = self._with_lora(self.model, config.lora)

    def _with_lora(self, model, lora: LoraSettings):
        from peft import LoraConfig, get_peft_model

        targets = lora.target_modules or DEFAULT_LORA_TARGETS["decoder" if self.is_decoder else "bert"]
        peft_config = LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(targets), bias="none"
        )
        return get_peft_model(model, peft_config)

    @property
    def dimensions(self) -> int:
        return int(self.base_config.hidden_size)

    @property
    def base_config(self):
        return self.model.config

    @property
    def has_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def autocast(self):
        return (
            torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16)
            if self.use_bf16
            else nullcontext()
        )

    def query_prompt(self, instruction: str) -> str:
        """The prompt this model's queries carry for ``instruction`` (libs.modeling.pooling.query_prompt)."""
        return query_prompt(instruction, self.pooling)

    def tokenize(self, texts: list[str], prompts: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """Model inputs of ``prompts[i] + texts[i]`` (no prompts: the texts alone); with mean pooling
        that leaves prompts out, also ``pool_mask``."""
        max_length = self.config.max_length
        if prompts:
            if len(prompts) != len(texts):
                raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts")
            texts = [prompt + text for prompt, text in zip(prompts, texts)]
        if not self.append_eos:
            features = dict(self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        else:
            encoded = self.tokenizer(texts, truncation=True, max_length=max_length - 1, padding=False)
            eos = self.tokenizer.eos_token_id
            ids = [x if x and x[-1] == eos else x + [eos] for x in encoded["input_ids"]]
            features = dict(
                self.tokenizer.pad(
                    [{"input_ids": x, "attention_mask": [1] * len(x)} for x in ids], padding=True, return_tensors="pt"
                )
            )
        if prompts and self.pooling == "mean" and not self.config.include_prompt:
            prompt_tokens = prompt_token_counts(self.tokenizer, list(prompts))
            if any(prompt_tokens):
                features["pool_mask"] = without_prompts(features["attention_mask"], prompt_tokens)
        return features

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        pool_mask = inputs.pop("pool_mask", inputs["attention_mask"])
        if self.is_decoder:
            inputs["position_ids"] = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.model(**inputs).last_hidden_state
        return pool(self.pooling, hidden, pool_mask).float()

    def embed(self, texts: list[str], prompts: Sequence[str] = ()) -> torch.Tensor:
        return self(self.tokenize(texts, prompts))

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, normalize: bool = True, prompts: Sequence[str] = ()) -> torch.Tensor:
        """Embeddings of many texts (each after its prompt, if given) in eval mode (longest first,
        to pad little), in input order."""
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = torch.empty(len(texts), self.dimensions)
        try:
            with self.autocast():
                for start in range(0, len(order), batch_size):
                    chunk = order[start : start + batch_size]
                    chunk_prompts = [prompts[i] for i in chunk] if prompts else ()
                    vectors = self.embed([texts[i] for i in chunk], chunk_prompts).float().cpu()
                    out[chunk] = torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors
        finally:
            self.train(was_training)
        return out

    def encode_queries(self, queries: list[str], instruction: str, batch_size: int = 64) -> torch.Tensor:
        return self.encode(queries, batch_size=batch_size, prompts=[self.query_prompt(instruction)] * len(queries))

    def merged(self) -> "Embedder":
        """LoRA folded into the base weights (no adapters left); this embedder's model is consumed."""
        if not self.has_lora:
            return self
        config = replace(self.config, pooling=self.pooling, append_eos=self.append_eos, lora=None, gradient_checkpointing=False)
        return Embedder(config, model=self.model.merge_and_unload(), tokenizer=self.tokenizer)
