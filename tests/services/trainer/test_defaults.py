"""Defaults live only in the dataclass configs: the service fills a TrainingSpec's zero values from
them (or from the trainer's settings), and the temperature follows the base model's family."""

from pathlib import Path

import pytest

from embedforge.v1 import messages_pb2 as pb
from libs.modeling.embedder import Embedder, LoraSettings, ModelConfig
from libs.modeling.mining import MiningConfig
from tests.tiny import build_tiny_model
from libs.modeling.trainer import TrainConfig, Trainer, learning_rate_choice, temperature_choice
from services.trainer.pipeline import MergeConfig, RunConfig
from services.trainer.service import run_config
from services.trainer.settings import TrainerSettings


def config_of(spec: pb.TrainingSpec, tmp_path: Path, **settings) -> RunConfig:
    return run_config(
        TrainerSettings(state_dir=str(tmp_path), **settings),
        spec,
        tmp_path / "run",
        tmp_path / "data.jsonl",
        [],
        "",
        "Find it",
        base_model="BASE",
    )


def test_an_empty_training_spec_gets_the_dataclass_defaults(tmp_path):
    config = config_of(pb.TrainingSpec(), tmp_path)
    assert config.train == TrainConfig(output_dir=str(tmp_path / "run"))
    assert config.model == ModelConfig("BASE")
    assert config.mining == MiningConfig()
    assert config.dev_fraction == RunConfig.dev_fraction
    assert config.merge.weight == 0  # TrainingSpec.merge_weight 0 = choose on the dev split
    assert config.train.temperature == 0  # resolved by the model's family when training starts


def test_settings_change_the_service_defaults_and_a_spec_overrides_both(tmp_path):
    settings = dict(
        batch_size=16, learning_rate_full=3e-5, learning_rate_lora=2e-4, checkpoint_every=7, dev_fraction=0.2, mine_negatives=3
    )
    config = config_of(pb.TrainingSpec(use_lora=True, hard_negatives_per_query=5), tmp_path, **settings)
    assert (config.train.batch_size, config.train.checkpoint_every, config.dev_fraction) == (16, 7, 0.2)
    assert learning_rate_choice(config.train, lora=True) == 2e-4 and learning_rate_choice(config.train, lora=False) == 3e-5
    assert config.model.lora == LoraSettings(rank=16, alpha=32)
    assert config.mining.negatives == 5  # at least the negatives a query trains with

    spec = pb.TrainingSpec(
        batch_size=8,
        epochs=3,
        max_steps=9,
        learning_rate=1e-3,
        temperature=0.1,
        max_length=64,
        pooling="cls",
        use_lora=True,
        lora_rank=4,
        merge_weight=0.7,
        dev_fraction=0.3,
        matryoshka_dims=[16, 8],
    )
    config = config_of(spec, tmp_path, **settings)
    train = config.train
    assert (train.batch_size, train.epochs, train.max_steps, train.learning_rate, train.temperature, train.matryoshka_dims) == (
        8,
        3,
        9,
        1e-3,
        0.1,
        (16, 8),
    )
    assert (config.model.max_length, config.model.pooling, config.model.lora) == (64, "cls", LoraSettings(rank=4, alpha=8))
    assert config.merge == MergeConfig(weight=0.7) and config.dev_fraction == 0.3


def test_settings_defaults_are_the_dataclass_defaults():
    settings = TrainerSettings()
    train = TrainConfig(output_dir="")
    assert (settings.batch_size, settings.checkpoint_every) == (train.batch_size, train.checkpoint_every)
    assert (settings.learning_rate_full, settings.learning_rate_lora) == (train.full_learning_rate, train.lora_learning_rate)
    assert settings.mine_negatives == MiningConfig().negatives and settings.dev_fraction == RunConfig.dev_fraction


@pytest.mark.parametrize(("kind", "expected"), [("bert", 0.05), ("llama", 0.02)])
def test_the_temperature_default_follows_the_model_family(tmp_path, make_examples, kind, expected):
    embedder = Embedder(ModelConfig(build_tiny_model(kind, tmp_path / kind), bf16=False))
    trainer = Trainer(embedder, make_examples(8), TrainConfig(output_dir=str(tmp_path), batch_size=4))
    assert trainer.config.temperature == expected and trainer.config.learning_rate == 2e-5
    temperature, why = temperature_choice(TrainConfig(output_dir=""), embedder.is_decoder)
    assert temperature == expected and ("encoder" if kind == "bert" else "decoder") in why
    assert temperature_choice(TrainConfig(output_dir="", temperature=0.3), embedder.is_decoder) == (0.3, "set for this run")


def test_zero_corpus_chunk_words_means_the_jobspec_default_everywhere(tmp_path):
    from libs.corpus import DEFAULT_CHUNK_WORDS
    from services.trainer.pipeline import read_corpus

    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"title": "T", "text": "' + " ".join(f"w{i}" for i in range(DEFAULT_CHUNK_WORDS * 2)) + '"}\n')
    assert len(read_corpus(docs)) == len(read_corpus(docs, DEFAULT_CHUNK_WORDS)) == 2
    assert read_corpus(docs, whole_documents=True) == ["T " + " ".join(f"w{i}" for i in range(DEFAULT_CHUNK_WORDS * 2))]
    assert RunConfig.corpus_chunk_words == 0 and not RunConfig.corpus_whole_documents


def test_the_service_mines_each_line_of_its_corpus_file_as_one_candidate(tmp_path):
    """The service's corpus is the job's chunks (one per line, text alone) or StartRun's documents, never cut again."""
    docs = tmp_path / "chunks.jsonl"
    docs.write_text('{"_id": "c1", "text": "' + " ".join(f"w{i}" for i in range(300)) + '"}\n')
    config = run_config(TrainerSettings(state_dir=str(tmp_path)), pb.TrainingSpec(), tmp_path / "r", docs, [], str(docs), "")
    assert config.corpus_whole_documents
    assert read_corpus_of(config) == [" ".join(f"w{i}" for i in range(300))]


def read_corpus_of(config: RunConfig) -> list[str]:
    from services.trainer.pipeline import read_corpus

    return read_corpus(config.corpus_path, config.corpus_chunk_words, config.corpus_whole_documents)
