"""Saving and loading trained embedders, LoRA merge, LM-Cocktail merge, and the export folder.

The export folder is a sentence-transformers model (Transformer -> Pooling -> Normalize) whose
root is also a plain Hugging Face model folder, so both ``SentenceTransformer(path)`` and
``AutoModel.from_pretrained(path)`` load it. Its README.md is the model card: base model,
recipe settings, data provenance and the base-vs-tuned evaluation table.
"""

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from libs.evaluation.suite import EvalRow
from libs.modeling.embedder import Embedder, LoraSettings, ModelConfig

EMBEDDER_FILE = "embedder.json"
ST_POOLING = {"mean": "mean", "cls": "cls", "last_token": "lasttoken"}
# How a model card loads its own model: SentenceTransformer("org/name") or X.from_pretrained("org/name").
CARD_LOAD = re.compile(r"""(?:SentenceTransformer|from_pretrained)\(\s*["']([A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)["']""")


def public_model_id(base_model: str) -> str:
    """The public id of a model (e.g. sentence-transformers/all-MiniLM-L6-v2) rather than the folder
    it was loaded from: the id its own model card loads it by, else the folder's name."""
    folder = Path(base_model)
    if not folder.is_dir():
        return base_model  # already an id
    try:
        match = CARD_LOAD.search((folder / "README.md").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        match = None
    return match.group(1) if match else folder.name


def save_trained(embedder: Embedder, path: str | Path) -> None:
    """The fine-tuning stage's output: LoRA adapters (or full weights) plus the embedder settings."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = asdict(embedder.config) | {
        "pooling": embedder.pooling,
        "append_eos": embedder.append_eos,
        "gradient_checkpointing": False,
    }
    if embedder.has_lora:
        embedder.model.save_pretrained(path / "adapter")
    else:
        embedder.model.save_pretrained(path / "model")
        embedder.tokenizer.save_pretrained(path / "model")
    (path / EMBEDDER_FILE).write_text(json.dumps(config, indent=2))


def load_trained(path: str | Path) -> Embedder:
    from peft import PeftModel

    path = Path(path)
    raw = json.loads((path / EMBEDDER_FILE).read_text())
    lora = raw.pop("lora")
    if (path / "adapter").exists():
        base = Embedder(ModelConfig(**raw))
        model = PeftModel.from_pretrained(base.model, path / "adapter")
        return Embedder(ModelConfig(**raw, lora=LoraSettings(**lora)), model=model, tokenizer=base.tokenizer)
    tokenizer_source = path / "model"
    return Embedder(ModelConfig(**(raw | {"base_model": str(tokenizer_source)})))


@torch.no_grad()
def cocktail_merge(tuned: Embedder, base: Embedder, weight: float) -> Embedder:
    """LM-Cocktail (Xiao et al. 2023, arXiv 2311.13534): ``weight * tuned + (1 - weight) * base``,
    parameter by parameter, in place on ``tuned`` (LoRA must be merged first)."""
    if tuned.has_lora:
        raise ValueError("merge LoRA adapters before the weighted merge")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"merge weight must be in [0, 1], got {weight}")
    base_state = base.model.state_dict()
    for name, tensor in tuned.model.state_dict().items():
        if tensor.is_floating_point():
            tensor.copy_(weight * tensor + (1.0 - weight) * base_state[name].to(tensor.dtype))
    return tuned


@dataclass
class ModelCard:
    model_id: str
    base_model: str
    query_instruction: str = ""
    merge_weight: float = 1.0
    # Settings of the run (lr, batch, temperature, LoRA, ...), shown as a table.
    recipe: dict = field(default_factory=dict)
    # Where the training data came from (dataset path or topic, manifest, counts).
    provenance: dict = field(default_factory=dict)
    evals: list[EvalRow] = field(default_factory=list)

    def render(self, embedder: Embedder) -> str:
        lines = [
            "---",
            "library_name: sentence-transformers",
            "pipeline_tag: sentence-similarity",
            f"base_model: {self.base_model}",
            "tags: [embedforge, sentence-transformers, feature-extraction]",
            "---",
            f"# {self.model_id}",
            "",
            f"Fine-tuned from `{self.base_model}` by EmbedForge (contrastive InfoNCE with in-batch and hard negatives).",
            f"Pooling: {embedder.pooling}; dimensions: {embedder.dimensions}; max length: {embedder.config.max_length}; "
            f"LM-Cocktail weight of the fine-tuned model: {self.merge_weight:g}.",
            "",
            "## Usage",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            f'model = SentenceTransformer("{self.model_id}")',
            'queries = model.encode(["..."], prompt_name="query")  # documents: model.encode(docs)',
            "```",
            "",
            f"Query prompt: `{embedder.query_prompt(self.query_instruction)!r}` before each query; documents carry none."
            if self.query_instruction
            else "Queries and documents carry no instruction.",
        ]
        if embedder.append_eos:
            lines.append(f"Decoder model: append the EOS token (`{embedder.tokenizer.eos_token}`) to every text before encoding.")
        lines += [
            "",
            "## Evaluation (base vs fine-tuned, same run)",
            "",
            "| dataset | metric | base | tuned | delta ± standard error |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {e.dataset} | {e.metric} | {e.base:.4f} | {e.tuned:.4f} | {e.tuned - e.base:+.4f} ± {e.difference_se:.4f} |"
            for e in self.evals
        ]
        lines += ["", "## Training data provenance", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.provenance.items()]
        lines += ["", "## Recipe", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.recipe.items()]
        return "\n".join(lines) + "\n"


def export_model(embedder: Embedder, path: str | Path, card: ModelCard) -> Path:
    """Write a folder that SentenceTransformer(path) and AutoModel.from_pretrained(path) load."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    if embedder.has_lora:
        raise ValueError("merge LoRA adapters before exporting")
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    staging = path.with_name(path.name + ".hf")
    embedder.model.save_pretrained(staging)
    embedder.tokenizer.save_pretrained(staging)
    transformer = Transformer(str(staging), max_seq_length=embedder.config.max_length)
    prompts = {"query": embedder.query_prompt(card.query_instruction)} if card.query_instruction else {}
    model = SentenceTransformer(
        modules=[
            transformer,
            Pooling(embedder.dimensions, ST_POOLING[embedder.pooling], include_prompt=embedder.config.include_prompt),
            Normalize(),
        ],
        prompts=prompts,
    )
    model.save(str(path))
    shutil.rmtree(staging)
    (path / "README.md").write_text(card.render(embedder))
    (path / EMBEDDER_FILE).write_text(
        json.dumps(
            asdict(embedder.config)
            | {"base_model": str(path), "pooling": embedder.pooling, "append_eos": embedder.append_eos, "lora": None},
            indent=2,
        )
    )
    return path
