"""Run a training stage alone from files, or a whole run.

    python -m services.trainer.cli mine     --data train.jsonl --model BASE --corpus docs.jsonl --out mined.jsonl
    python -m services.trainer.cli train    --data mined.jsonl --model BASE --out runs/r1 [--lora-rank 16]
    torchrun --nproc_per_node 2 -m services.trainer.cli train ...      # same script, gloo on CPU
    python -m services.trainer.cli evaluate --model BASE --trained runs/r1/trained --eval ../shared/data/xquad-en
    python -m services.trainer.cli export   --model BASE --trained runs/r1/trained --out models/m1 [--merge-weight 0 --dev dev.jsonl]
    python -m services.trainer.cli run      --data x.jsonl --model BASE --out runs/r1 --eval ... [--config run.json]

Data files are FlagEmbedding JSONL: {"query", "pos": [...], "neg": [...], "prompt"?}.
"""

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from libs.evaluation.suite import compare, load_eval_set
from libs.modeling.data import read_examples, write_examples
from libs.modeling.embedder import Embedder, LoraSettings, ModelConfig
from libs.modeling.export import load_trained
from libs.modeling.mining import MiningConfig, mine_hard_negatives
from libs.modeling.trainer import TrainConfig
from services.trainer import pipeline
from services.trainer.pipeline import MergeConfig, RunConfig


def add_model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="base model folder (HF or sentence-transformers)")
    parser.add_argument("--pooling", default="", choices=["", "mean", "cls", "last_token"])
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lora-rank", type=int, default=0, help="0 = full fine-tuning")
    parser.add_argument("--lora-alpha", type=int, default=0, help="default 2 x rank")
    parser.add_argument("--lora-targets", default="", help="comma-separated module names; default per model family")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--padding-side", default="", choices=["", "left", "right"])
    parser.add_argument("--bf16", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--instruction", default="", help="query instruction for examples without one")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32, help="global batch (all ranks)")
    parser.add_argument("--negatives-per-query", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--temperature", type=float, default=0.02)
    parser.add_argument("--matryoshka-dims", default="", help="comma-separated, e.g. 256,128,64")
    parser.add_argument("--gradcache-chunk-size", type=int, default=0, help="> 0 enables GradCache")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-length-buckets", action="store_true")


def add_mining_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", default="", help="documents to mine from (JSONL or BEIR folder); default the positives pool")
    parser.add_argument("--corpus-chunk-words", type=int, default=0, help="mine from chunks of this many words (as generation cut them); 0 = whole documents")
    parser.add_argument("--mine-range", default="2-200", help="rank window start-end")
    parser.add_argument("--mine-negatives", type=int, default=7, help="0 disables mining")
    parser.add_argument("--positive-ratio", type=float, default=0.95)


def model_config(args) -> ModelConfig:
    lora = LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha or 2 * args.lora_rank, target_modules=tuple(t for t in args.lora_targets.split(",") if t)) if args.lora_rank > 0 else None
    bf16 = {"auto": None, "on": True, "off": False}[args.bf16]
    return ModelConfig(args.model, args.pooling, args.max_length, lora, args.gradient_checkpointing, args.padding_side, None, bf16)


def train_config(args) -> TrainConfig:
    return TrainConfig(
        output_dir=args.out, batch_size=args.batch_size, negatives_per_query=args.negatives_per_query, epochs=args.epochs, max_steps=args.max_steps,
        learning_rate=args.lr, warmup_ratio=args.warmup_ratio, temperature=args.temperature,
        matryoshka_dims=tuple(int(d) for d in args.matryoshka_dims.split(",") if d), gradcache_chunk_size=args.gradcache_chunk_size,
        checkpoint_every=args.checkpoint_every, seed=args.seed, bucket_by_length=not args.no_length_buckets, default_instruction=args.instruction,
    )


def mining_config(args) -> MiningConfig:
    start, _, end = args.mine_range.partition("-")
    return MiningConfig(range_start=int(start), range_end=int(end), negatives=args.mine_negatives, positive_ratio=args.positive_ratio, default_instruction=args.instruction)


def run_config(args) -> RunConfig:
    if getattr(args, "config", ""):
        return pipeline.load_run_config(args.config)
    return RunConfig(
        dataset_path=args.data, run_dir=args.out, model=model_config(args), train=train_config(args), mining=mining_config(args),
        merge=MergeConfig(weight=args.merge_weight), corpus_path=args.corpus, corpus_chunk_words=args.corpus_chunk_words, eval_paths=tuple(args.eval), dev_fraction=args.dev_fraction,
        instruction=args.instruction, model_id=args.model_id, export_dir=args.export_dir,
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
    examples = read_examples(args.data)
    base = Embedder(ModelConfig(args.model, args.pooling, args.max_length, padding_side=args.padding_side))
    corpus = pipeline.read_corpus(args.corpus, args.corpus_chunk_words) if args.corpus else []
    write_examples(args.out, mine_hard_negatives(base, examples, corpus, mining_config(args)))


def cmd_train(args) -> None:
    config = RunConfig(dataset_path=args.data, run_dir=args.out, model=model_config(args), train=train_config(args), instruction=args.instruction)
    pipeline.fine_tune(config, read_examples(args.data), printer(args.events))


def cmd_evaluate(args) -> None:
    base = Embedder(ModelConfig(args.model, max_length=args.max_length))
    tuned = load_trained(args.trained)
    base_encoder = pipeline.encoder_of(base, pipeline.base_query_format(args.model))
    rows = compare(base_encoder, pipeline.encoder_of(tuned, pipeline.tuned_query_format(args.instruction)), [load_eval_set(p) for p in args.eval])
    output = json.dumps([asdict(r) for r in rows], indent=2)
    print(output)
    if args.out:
        Path(args.out).write_text(output)


def cmd_export(args) -> None:
    config = RunConfig(
        dataset_path="", run_dir=str(Path(args.trained).parent), model=ModelConfig(args.model, max_length=args.max_length), train=TrainConfig(output_dir=""),
        merge=MergeConfig(weight=args.merge_weight), instruction=args.instruction, export_dir=args.out, model_id=args.model_id,
    )
    dev = read_examples(args.dev) if args.dev else []
    manifest_path = Path(args.trained).parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    pipeline.evaluate_and_export(config, load_trained(args.trained), dev, manifest, printer(args.events))


def cmd_run(args) -> None:
    pipeline.execute(run_config(args), printer(args.events))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m services.trainer.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)
    mine = sub.add_parser("mine", help="add mined hard negatives to a JSONL file")
    mine.add_argument("--data", required=True)
    mine.add_argument("--out", required=True)
    add_model_args(mine)
    add_mining_args(mine)
    train = sub.add_parser("train", help="fine-tune (resumes from OUT/checkpoint.pt); works under torchrun")
    train.add_argument("--data", required=True)
    train.add_argument("--out", required=True, help="run folder: checkpoint.pt and trained/")
    train.add_argument("--events", default="")
    add_model_args(train)
    add_train_args(train)
    evaluate = sub.add_parser("evaluate", help="base vs trained on BEIR folders / STS files, same run")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--trained", required=True)
    evaluate.add_argument("--eval", action="append", required=True)
    evaluate.add_argument("--instruction", default="")
    evaluate.add_argument("--max-length", type=int, default=256)
    evaluate.add_argument("--out", default="")
    export = sub.add_parser("export", help="merge LoRA (+ LM-Cocktail with the base) and write a sentence-transformers folder")
    export.add_argument("--model", required=True)
    export.add_argument("--trained", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--merge-weight", type=float, default=1.0, help="weight of the tuned model; 0 = choose on --dev")
    export.add_argument("--dev", default="")
    export.add_argument("--instruction", default="")
    export.add_argument("--model-id", default="")
    export.add_argument("--max-length", type=int, default=256)
    export.add_argument("--events", default="")
    run = sub.add_parser("run", help="snapshot, mine, train, evaluate, merge, export")
    run.add_argument("--config", default="", help="a RunConfig JSON (replaces the flags below)")
    run.add_argument("--data", default="")
    run.add_argument("--out", default="")
    run.add_argument("--events", default="")
    run.add_argument("--eval", action="append", default=[])
    run.add_argument("--dev-fraction", type=float, default=0.1)
    run.add_argument("--merge-weight", type=float, default=1.0)
    run.add_argument("--model-id", default="")
    run.add_argument("--export-dir", default="")
    add_model_args(run, required=False)
    add_train_args(run)
    add_mining_args(run)
    return root


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = parser().parse_args(argv)
    {"mine": cmd_mine, "train": cmd_train, "evaluate": cmd_evaluate, "export": cmd_export, "run": cmd_run}[args.command](args)


if __name__ == "__main__":
    main()
