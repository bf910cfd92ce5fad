"""Generation benchmark: the local provider's dynamic batching, its dtype, and how often the
`make run` default generator (Qwen2.5-Coder-0.5B-Instruct) returns schema-valid retrieval
examples with and without JSON-schema-constrained decoding.

    PYTHONPATH=.:gen LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 \
        .venv/bin/python benchmarks/generation.py [--examples 100] [--model qwen2.5-coder-0.5b-instruct]

Writes benchmarks/results/generation.json:
- batching_speedup: completion tokens/s with 16 concurrent requests (dynamically batched
  into one generate) / tokens/s of the same 16 requests sent one at a time; same model,
  prompts, token limit, greedy decoding.
- dtype_tokens_per_s: batched tokens/s in bfloat16 vs float32 (the engine default is the
  faster one).
- json_valid_rate_constrained / _unconstrained: share of N retrieval-example generations
  (template services/examplegen/templates/retrieval.yaml, sampled attributes, English,
  num_words fixed to 50 to bound CPU time, the answer budget examplegen gives that prompt;
  constrained calls get the per-call schema examplegen sends, with its document length caps)
  whose text parses as JSON and satisfies the template's schema; `_unconstrained_lenient` also accepts JSON found inside code fences or
  prose (what a forgiving parser would recover).
"""

import argparse
import json
import os
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from embedforge.v1 import messages_pb2 as pb
from libs.llm import LlmError, complete
from libs.llm.local import LocalEngine, LocalRequest, get_engine
from libs.llm.parsing import parse_json_object
from libs.llm.templates import load_templates
from services.examplegen.sampling import LanguageSampler, rng_for, sample_attributes, template_variables

RESULTS = Path(__file__).with_name("results") / "generation.json"
TEMPLATES = Path(__file__).resolve().parents[1] / "services" / "examplegen" / "templates"
TASKS = [
    "Retrieve clinical guidelines that answer a nurse's question about medication dosing",
    "Given a tenant's question, retrieve court rulings on residential lease disputes",
    "Find product manuals that explain how to fix a reported appliance fault",
    "Retrieve scientific abstracts that support or refute a claim about climate",
]
BATCH_PROMPTS = [f"In one sentence, explain {topic}." for topic in (
    "photosynthesis", "inflation", "a hash table", "plate tectonics", "vaccination", "compound interest", "TCP handshakes", "the water cycle",
    "gradient descent", "supply and demand", "black holes", "DNS", "the immune system", "recursion", "tides", "public-key cryptography",
)]
console = Console()


def tokens_per_s(model: str, prompts: list[str], max_tokens: int, concurrent: bool) -> tuple[float, int, float]:
    def ask(prompt: str):
        return complete(model, [{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0, timeout_s=3600, attempts=1)

    started = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(prompts)) as pool:
            answers = list(pool.map(ask, prompts))
    else:
        answers = [ask(p) for p in prompts]
    elapsed = time.perf_counter() - started
    tokens = sum(a.usage.completion_tokens for a in answers)
    return tokens / elapsed, tokens, elapsed


def batched_engine_tokens_per_s(engine: LocalEngine, prompts: list[str], max_tokens: int) -> float:
    requests = [LocalRequest([{"role": "user", "content": p}], max_tokens, 0.0) for p in prompts]
    started = time.perf_counter()
    results = engine._run(requests)
    return sum(r.completion_tokens for r in results) / (time.perf_counter() - started)


def json_validity(model: str, count: int, constrained: bool, progress: Progress, concurrency: int) -> dict:
    template = load_templates(TEMPLATES)["retrieval"]
    languages = LanguageSampler([pb.LanguageWeight(language="en", weight=1)])
    schema = template.json_schema
    task = progress.add_task(f"retrieval examples ({'constrained' if constrained else 'unconstrained'})", total=count)
    strict = lenient = truncated = 0
    lock = threading.Lock()

    def one(index: int) -> None:
        nonlocal strict, lenient, truncated
        attributes = sample_attributes(template, rng_for("bench", index), languages)
        attributes["num_words"] = "50"
        messages = template.render(task=TASKS[index % len(TASKS)], **template_variables(attributes))
        finish_reason = ""
        try:
            answer = complete(
                model,
                messages,
                json_schema=template.schema_for(attributes) if constrained else None,
                max_tokens=template.answer_budget(attributes),
                temperature=0.8,
                timeout_s=7200,
                attempts=1,
                validate=False,
            )
            text, finish_reason = answer.text, answer.finish_reason
        except LlmError:
            text = ""
        ok_strict = ok_lenient = False
        try:
            jsonschema.validate(json.loads(text), schema)
            ok_strict = True
        except (json.JSONDecodeError, jsonschema.ValidationError):
            pass
        recovered = parse_json_object(text)
        if recovered is not None:
            try:
                jsonschema.validate(recovered, schema)
                ok_lenient = True
            except jsonschema.ValidationError:
                pass
        with lock:
            strict += ok_strict
            lenient += ok_lenient
            truncated += finish_reason == "length"
        progress.advance(task)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    return {"strict": strict / count, "lenient": lenient / count, "truncated": truncated / count}


def save(results: dict) -> None:
    """Merge into the results file after each part, so parts can run separately."""
    merged = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    merged.update(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")


def batching_part(model: str, engine: LocalEngine, max_tokens: int) -> None:
    console.print("[bold]dynamic batching[/]: 16 requests one at a time, then concurrently")
    sequential, seq_tokens, seq_s = tokens_per_s(model, BATCH_PROMPTS, max_tokens, concurrent=False)
    batched, batch_tokens, batch_s = tokens_per_s(model, BATCH_PROMPTS, max_tokens, concurrent=True)
    results = {
        "batching": {
            "model": model,
            "requests": len(BATCH_PROMPTS),
            "max_tokens": max_tokens,
            "sequential_tokens_per_s": round(sequential, 2),
            "sequential_tokens": seq_tokens,
            "sequential_s": round(seq_s, 1),
            "batched_tokens_per_s": round(batched, 2),
            "batched_tokens": batch_tokens,
            "batched_s": round(batch_s, 1),
            "batch_sizes": engine.batch_sizes[-3:],
        },
        "batching_speedup": round(batched / sequential, 2),
    }
    save(results)
    console.print(results)


def dtype_part(name: str, engine: LocalEngine, max_tokens: int) -> None:
    console.print("[bold]dtype[/]: one batched generate of the 16 prompts per dtype")
    other_dtype = "float32" if engine.dtype == torch.bfloat16 else "bfloat16"
    other = LocalEngine(name, dtype=other_dtype)
    results = {
        "dtype_tokens_per_s": {
            str(engine.dtype).replace("torch.", ""): round(batched_engine_tokens_per_s(engine, BATCH_PROMPTS, max_tokens), 2),
            other_dtype: round(batched_engine_tokens_per_s(other, BATCH_PROMPTS, max_tokens), 2),
        }
    }
    save(results)
    console.print(results)


def json_part(model: str, engine: LocalEngine, examples: int, batch: int, constrained: bool, unconstrained: bool) -> None:
    engine.max_batch = batch
    with Progress(console=console) as progress:
        if constrained:
            rates = json_validity(model, examples, True, progress, batch)
            save({"json_examples": examples, "json_batch": batch, "json_valid_rate_constrained": rates["strict"], "json_truncated_rate_constrained": rates["truncated"]})
        if unconstrained:
            rates = json_validity(model, examples, False, progress, batch)
            save({"json_valid_rate_unconstrained": rates["strict"], "json_valid_rate_unconstrained_lenient": rates["lenient"], "json_truncated_rate_unconstrained": rates["truncated"]})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="local model name (the make run default)")
    parser.add_argument("--parts", default="batching,dtype,json", help="comma-separated: batching, dtype, json (= json_constrained + json_unconstrained)")
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--json-batch", type=int, default=50, help="rows per batched generate in the JSON part")
    parser.add_argument("--batch-tokens", type=int, default=48)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    model = f"local/{args.model}"
    engine = get_engine(args.model)
    save({"model": model, "dtype": str(engine.dtype).replace("torch.", ""), "torch_threads": torch.get_num_threads(), "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}})
    complete(model, [{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0.0)  # warm-up
    if "batching" in parts:
        batching_part(model, engine, args.batch_tokens)
    if "dtype" in parts:
        dtype_part(args.model, engine, args.batch_tokens)
    if parts & {"json", "json_constrained", "json_unconstrained"}:
        json_part(model, engine, args.examples, args.json_batch, bool(parts & {"json", "json_constrained"}), bool(parts & {"json", "json_unconstrained"}))
    results = json.loads(RESULTS.read_text())
    table = Table(title="generation benchmark")
    table.add_column("figure")
    table.add_column("value")
    for key in ("batching_speedup", "dtype_tokens_per_s", "json_valid_rate_constrained", "json_valid_rate_unconstrained", "json_valid_rate_unconstrained_lenient"):
        table.add_row(key, json.dumps(results.get(key)))
    console.print(table)


if __name__ == "__main__":
    main()
