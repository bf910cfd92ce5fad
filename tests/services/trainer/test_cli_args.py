"""The trainer CLI's flags are generated from the dataclass configs: same defaults, no copies."""

import pytest

from libs.modeling.embedder import LoraSettings, ModelConfig
from libs.modeling.mining import MiningConfig
from libs.modeling.trainer import TrainConfig
from services.trainer import cli
from services.trainer.pipeline import MergeConfig, RunConfig


def test_run_flags_left_out_give_the_dataclass_defaults():
    config = cli.run_config(cli.parser().parse_args(["run", "--data", "x.jsonl", "--out", "runs/r1", "--model", "BASE"]))
    assert config == RunConfig(
        dataset_path="x.jsonl",
        run_dir="runs/r1",
        model=ModelConfig("BASE"),
        train=TrainConfig(output_dir="runs/r1"),
        mining=MiningConfig(),
        merge=MergeConfig(),
    )


def test_run_flags_reach_every_config():
    args = cli.parser().parse_args(
        [
            "run",
            "--data",
            "x.jsonl",
            "--out",
            "o",
            "--model",
            "BASE",
            "--lora",
            "--lora-rank",
            "4",
            "--bf16",
            "off",
            "--pooling",
            "cls",
            "--lr",
            "1e-3",
            "--temperature",
            "0.1",
            "--matryoshka-dims",
            "16,8",
            "--no-bucket-by-length",
            "--mine-negatives",
            "3",
            "--mine-range-end",
            "50",
            "--merge-weight",
            "0",
            "--merge-candidates",
            "1.0",
            "--merge-candidates",
            "0.5",
            "--eval",
            "a",
            "--eval",
            "b",
            "--corpus",
            "docs.jsonl",
            "--corpus-chunk-words",
            "30",
            "--instruction",
            "Find it",
        ]
    )
    config = cli.run_config(args)
    assert config.model == ModelConfig("BASE", pooling="cls", lora=LoraSettings(rank=4, alpha=8), bf16=False)
    assert (
        config.train.learning_rate,
        config.train.temperature,
        config.train.matryoshka_dims,
        config.train.bucket_by_length,
    ) == (1e-3, 0.1, (16, 8), False)
    assert config.train.default_instruction == config.mining.default_instruction == config.instruction == "Find it"
    assert (config.mining.negatives, config.mining.range_end, config.merge.weight, config.merge.candidates) == (
        3,
        50,
        0.0,
        (1.0, 0.5),
    )
    assert (config.eval_paths, config.corpus_path, config.corpus_chunk_words, config.corpus_whole_documents) == (
        ("a", "b"),
        "docs.jsonl",
        30,
        False,
    )


def test_help_shows_the_dataclass_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["run", "--help"])
    text = capsys.readouterr().out
    assert "--encoder-temperature ENCODER_TEMPERATURE" in text and "(default: 0.05)" in text and "--mine-negatives" in text


def test_run_needs_a_config_or_data_and_out():
    with pytest.raises(SystemExit):
        cli.run_config(cli.parser().parse_args(["run", "--model", "BASE"]))


def test_export_ranks_dev_against_the_corpus_given_like_the_service():
    args = cli.parser().parse_args(
        ["export", "--trained", "r/trained", "--out", "m", "--model", "BASE", "--merge-weight", "0", "--corpus", "chunks.jsonl"]
        + ["--corpus-whole-documents", "--dev-corpus-passages", "50", "--eval", "a", "--eval", "b"]
    )
    config = cli.export_config(args)
    assert (config.corpus_path, config.corpus_whole_documents, config.dev_corpus_passages) == ("chunks.jsonl", True, 50)
    assert config.run_dir == "r" and config.merge == MergeConfig(weight=0) and config.eval_paths == ("a", "b")
    assert (
        cli.export_config(cli.parser().parse_args(["export", "--trained", "t", "--out", "m", "--model", "B"])).corpus_path == ""
    )
