"""Run a training stage alone from files, or a whole run.

    python -m services.trainer.cli mine     --data train.jsonl --model BASE --corpus docs.jsonl --out mined.jsonl
    python -m services.trainer.cli train    --data mined.jsonl --model BASE --out runs/r1 [--lora --lora-rank 16]
    torchrun --nproc_per_node 2 -m services.trainer.cli train ...      # same script, gloo on CPU
    python -m services.trainer.cli evaluate --model BASE --trained runs/r1/trained --eval ../shared/data/xquad-en
    python -m services.trainer.cli export   --model BASE --trained runs/r1/trained --out models/m1 \
        [--merge-weight 0 --dev dev.jsonl [--corpus chunks.jsonl --corpus-whole-documents]] [--eval ...]
    python -m services.trainer.cli run      --data x.jsonl --model BASE --out runs/r1 --eval ... [--config run.json]

Data files are FlagEmbedding JSONL: {"query", "pos": [...], "neg": [...], "prompt"?}.
The flags are generated from the stage configs (libs.cliargs): TrainConfig, ModelConfig,
LoraSettings (--lora-*), MiningConfig (--mine-*), MergeConfig (--merge-*) and RunConfig; their
dataclass fields hold the defaults.
"""

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from libs.cliargs import add_dataclass_args, dataclass_from_args
from libs.evaluation.suite import compare, load_eval_set
from libs.modeling.data import read_examples, write_examples
from libs.modeling.embedder import Embedder, LoraSettings, ModelConfig
from libs.modeling.export import load_trained
from libs.modeling.mining import MiningConfig, mine_hard_negatives
from libs.modeling.trainer import TrainConfig
from services.trainer import pipeline
from services.trainer.pipeline import MergeConfig, RunConfig

RUN_NAMES = {"dataset_path": ["--data"], "run_dir": ["--out"], "corpus_path": ["--corpus"], "eval_paths": ["--eval"]}


def add_model_args(parser: argparse.ArgumentParser, required: bool = True, only=None) -> None:
    add_dataclass_args(
        parser, ModelConfig, only=only, names={"base_model": ["--model"]}, optional=() if required else ("base_model",)
    )
    if only is None:
        parser.add_argument(
            "--lora", dest="use_lora", action="store_true", help="train LoRA adapters (--lora-*) instead of every weight"
        )
        add_dataclass_args(parser, LoraSettings, "lora_")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    add_dataclass_args(
        parser, TrainConfig, skip=("output_dir", "default_instruction"), names={"learning_rate": ["--learning-rate", "--lr"]}
    )


def add_mining_args(parser: argparse.ArgumentParser) -> None:
    add_dataclass_args(parser, MiningConfig, "mine_", skip=("default_instruction",))


def model_config(args, lora: bool = True) -> ModelConfig:
    return dataclass_from_args(
        ModelConfig, args, lora=dataclass_from_args(LoraSettings, args, "lora_") if lora and args.use_lora else None
    )


def train_config(args) -> TrainConfig:
    return dataclass_from_args(TrainConfig, args, output_dir=args.run_dir, default_instruction=args.instruction)


def mining_config(args) -> MiningConfig:
    return dataclass_from_args(MiningConfig, args, "mine_", default_instruction=args.instruction)


def run_config(args) -> RunConfig:
    if getattr(args, "config", ""):
        return pipeline.load_run_config(args.config)
    if not (args.dataset_path and args.run_dir):
        raise SystemExit("run needs --config, or --data and --out")
    return dataclass_from_args(
        RunConfig,
        args,
        model=model_config(args),
        train=train_config(args),
        mining=mining_config(args),
        merge=dataclass_from_args(MergeConfig, args, "merge_"),
    )


def printer(events_path: str):
    """Report progress as JSON lines on stdout and, if given, appended to an events file."""
    handle = open(events_path, "a", encoding="utf-8") if events_path else None

    def report(event: dict) -> None:
        line = json.dumps(event, ensure_ascii=False)
        print(line, flush=True)
        if handle:
            handle.write(line + "\n")
            handle.flush()

    return report


def cmd_mine(args) -> None:
    examples = read_examples(args.dataset_path)
    base = Embedder(model_config(args, lora=False))
    corpus = (
        pipeline.read_corpus(args.corpus_path, args.corpus_chunk_words, args.corpus_whole_documents) if args.corpus_path else []
    )
    write_examples(args.out, mine_hard_negatives(base, examples, corpus, mining_config(args)))


def cmd_train(args) -> None:
    config = RunConfig(
        dataset_path=args.dataset_path,
        run_dir=args.run_dir,
        model=model_config(args),
        train=train_config(args),
        instruction=args.instruction,
    )
    pipeline.fine_tune(config, read_examples(args.dataset_path), printer(args.events))


def cmd_evaluate(args) -> None:
    base = Embedder(model_config(args, lora=False))
    tuned = load_trained(args.trained)
    rows = compare(
        pipeline.base_encoder(base, args.base_model),
        pipeline.tuned_encoder(tuned, args.instruction, []),
        [load_eval_set(p) for p in args.eval],
    )
    output = json.dumps([asdict(r) for r in rows], indent=2)
    print(output)
    if args.out:
        Path(args.out).write_text(output)


def export_config(args) -> RunConfig:
    return dataclass_from_args(
        RunConfig,
        args,
        dataset_path="",
        run_dir=str(Path(args.trained).parent),
        model=model_config(args, lora=False),
        train=TrainConfig(output_dir=""),
        merge=dataclass_from_args(MergeConfig, args, "merge_"),
        export_dir=args.out,
    )


def cmd_export(args) -> None:
    config = export_config(args)
    dev = read_examples(args.dev) if args.dev else []
    manifest_path = Path(args.trained).parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    pipeline.evaluate_and_export(config, load_trained(args.trained), dev, manifest, printer(args.events))


def cmd_run(args) -> None:
    pipeline.execute(run_config(args), printer(args.events))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m services.trainer.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = root.add_subparsers(dest="command", required=True)
    mine = sub.add_parser("mine", help="add mined hard negatives to a JSONL file")
    mine.add_argument("--out", required=True)
    add_dataclass_args(
        mine,
        RunConfig,
        only=("dataset_path", "corpus_path", "corpus_chunk_words", "corpus_whole_documents", "instruction"),
        names=RUN_NAMES,
    )
    add_model_args(mine)
    add_mining_args(mine)
    train = sub.add_parser("train", help="fine-tune (resumes from OUT/checkpoint.pt); works under torchrun")
    add_dataclass_args(train, RunConfig, only=("dataset_path", "run_dir", "instruction"), names=RUN_NAMES)
    train.add_argument("--events", default="")
    add_model_args(train)
    add_train_args(train)
    evaluate = sub.add_parser("evaluate", help="base vs trained on BEIR folders / STS files, same run")
    evaluate.add_argument("--trained", required=True)
    evaluate.add_argument("--eval", action="append", required=True)
    evaluate.add_argument("--out", default="")
    add_dataclass_args(evaluate, RunConfig, only=("instruction",))
    add_model_args(evaluate, only=("base_model", "max_length"))
    export = sub.add_parser("export", help="merge LoRA (+ LM-Cocktail with the base) and write a sentence-transformers folder")
    export.add_argument("--trained", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--dev", default="", help="dev examples to choose the merge weight on (--merge-weight 0)")
    export.add_argument("--events", default="")
    add_dataclass_args(
        export,
        RunConfig,
        only=(
            "instruction",
            "model_id",
            "corpus_path",
            "corpus_chunk_words",
            "corpus_whole_documents",
            "dev_corpus_passages",
            "eval_paths",
        ),
        names=RUN_NAMES,
    )
    add_model_args(export, only=("base_model", "max_length"))
    add_dataclass_args(export, MergeConfig, "merge_")
    run = sub.add_parser("run", help="snapshot, mine, train, evaluate, merge, export")
    run.add_argument("--config", default="", help="a RunConfig JSON (replaces the flags below)")
    run.add_argument("--events", default="")
    add_dataclass_args(run, RunConfig, names=RUN_NAMES, optional=("dataset_path", "run_dir"))
    add_model_args(run, required=False)
    add_train_args(run)
    add_mining_args(run)
    add_dataclass_args(run, MergeConfig, "merge_")
    return root


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = parser().parse_args(argv)
    {"mine": cmd_mine, "train": cmd_train, "evaluate": cmd_evaluate, "export": cmd_export, "run": cmd_run}[args.command](args)


if __name__ == "__main__":
    main()
