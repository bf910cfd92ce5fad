"""Curator throughput: validation + exact + MinHash dedup, in-process on one core and end to
end through the real broker.

Workload (seeded, synthetic, no evaluation data): BENCH_EXAMPLES raw examples (default 20,000)
over the seven templates and five languages, 80% valid (a fifth of them with repairable
glitches: code fences, prose, trailing commas, single quotes), 10% near-duplicates of earlier
valid ones (two words changed), 10% invalid (broken JSON, missing key, leakage, wrong
language, too short, generation error, query = positive, instruction echo). Each answer is
read into the RawExample's typed fields by examplegen's own code first, as examplegen
publishes it (timed apart: answers_parsed_per_s; the curator no longer parses).

The core runs batches of BENCH_BATCH records (default 100, the consumer's max_poll_records),
as the validate and dedup stages get them from a poll.

Anchor, side by side on the same examples: the straightforward implementation of the same
checks: langid.classify for language, datasketch MinHash.update_batch (SHA-1 per shingle)
for signatures (query half and positive half). Everything else (checks, LSH index) is shared.
A third core run is the curator with language identification through langid's public API only
(LanguageIdentifier.classify per probe, the same probe length and recent-probe memory): what the
detector's use of langid's model arrays buys.

    PYTHONPATH=.:gen .venv/bin/python benchmarks/curator.py
"""

import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import langid  # noqa: E402
import numpy as np  # noqa: E402
from datasketch import MinHash  # noqa: E402
from langid.langid import LanguageIdentifier, model  # noqa: E402
from rich.progress import Progress  # noqa: E402

from embedforge.v1 import messages_pb2 as pb  # noqa: E402
from libs import topics  # noqa: E402
from libs.kafka import ProtoProducer  # noqa: E402
from libs.local.broker import TansuBroker  # noqa: E402
from libs.llm.templates import load_templates  # noqa: E402
from libs.local.runtime import LocalRuntime  # noqa: E402
from services.curator.dedup import SCHEME, DedupIndex, MinHasher, Signature  # noqa: E402
from services.curator.language import LanguageDetector  # noqa: E402
from services.curator.settings import DedupSettings, ValidationSettings  # noqa: E402
from services.curator.validation import Rejection, Validator  # noqa: E402
from services.examplegen.answers import read_answer, set_requests  # noqa: E402
from services.examplegen.generation import TEMPLATES_DIR  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "curator.json"
EXAMPLES = int(os.environ.get("BENCH_EXAMPLES", "20000"))
KAFKA_EXAMPLES = int(os.environ.get("BENCH_KAFKA_EXAMPLES", "10000"))
BATCH = int(os.environ.get("BENCH_BATCH", "100"))  # records per consumer poll (KafkaSettings.max_poll_records default)
SEED = 1234

VOCABULARY = {
    "en": "the patient should take the tablet with water after breakfast and report any side effects to the nurse while "
    "a doctor may adjust the dose when kidney function changes or other medicines interact with it and the clinic "
    "opens early on monday so that working families can attend appointments before school",
    "de": "der patient sollte die tablette nach dem frühstück mit wasser einnehmen und nebenwirkungen der pflegekraft "
    "melden während der arzt die dosis anpassen kann wenn sich die nierenfunktion verändert oder andere medikamente wirken",
    "fr": "le patient doit prendre le comprimé avec de l'eau après le petit déjeuner et signaler les effets secondaires "
    "à l'infirmière tandis que le médecin peut ajuster la dose lorsque la fonction rénale change",
    "es": "el paciente debe tomar la pastilla con agua después del desayuno y comunicar los efectos secundarios a la "
    "enfermera mientras el médico puede ajustar la dosis cuando cambia la función renal o interactúan otros medicamentos",
    "zh": "病人 应该 在 早饭 后 用 水 服用 药片 并且 把 副作用 告诉 护士 "
    "医生 可以 在 肾功能 变化 或者 其他 药物 相互作用 时 调整 剂量 诊所 周一 很早 开门",
}
LANGUAGES = ["en"] * 6 + ["de", "fr", "es", "zh"]
TEMPLATES = ["retrieval"] * 5 + ["short_matching", "long_matching", "sts", "bitext", "classification", "corpus_query"]
TASK = "Retrieve patient leaflets that answer a caregiver's question about medication"
PROMPTS = load_templates(TEMPLATES_DIR)


def prose(rng: random.Random, language: str, words: int) -> str:
    vocabulary = VOCABULARY[language].split()
    joiner = "" if language == "zh" else " "
    sentences, left = [], words
    while left > 0:
        n = min(left, rng.randint(8, 16))
        sentences.append(joiner.join(rng.choice(vocabulary) for _ in range(n)) + ("。" if language == "zh" else "."))
        left -= n
    return joiner.join(sentences)


def zh_words(words: int) -> int:
    """Vocabulary entries are ~2 characters; the curator counts 1.7 characters as a word."""
    return max(1, int(words / 1.2))


def answer_for(rng: random.Random, template: str, language: str) -> tuple[dict, dict, str]:
    """(answer, attributes, chunk_text) of one valid example."""
    size = (lambda n: zh_words(n)) if language == "zh" else (lambda n: n)
    attributes = {"language": language}
    if template == "retrieval":
        num_words = rng.choice([50, 100, 200])
        attributes.update(query_length="5 to 15 words", num_words=str(num_words), query_type="common", difficulty="college")
        answer = {"user_query": prose(rng, language, size(10)), "positive_document": prose(rng, language, size(num_words)),
                  "hard_negative_document": prose(rng, language, size(num_words))}  # fmt: skip
        return answer, attributes, ""
    if template in ("short_matching", "long_matching"):
        length = 12 if template == "short_matching" else 80
        return (
            {"input": prose(rng, language, size(length)), "positive_document": prose(rng, language, size(length))},
            attributes,
            "",
        )
    if template == "sts":
        attributes.update(high_score="4.5", low_score="2.5", unit="sentence")
        return (
            {"S1": prose(rng, language, size(15)), "S2": prose(rng, language, size(15)), "S3": prose(rng, language, size(15))},
            attributes,
            "",
        )
    if template == "bitext":
        target = rng.choice(["de", "fr", "es"])
        attributes = {"source_language": "en", "target_language": target}
        return {"S1": prose(rng, "en", 20), "S2": prose(rng, target, 20), "S3": prose(rng, target, 20)}, attributes, ""
    if template == "classification":
        attributes.update(num_words="at least 10 words")
        return (
            {"input_text": prose(rng, language, size(40)), "label": "side effect", "misleading_label": "dosage question"},
            attributes,
            "",
        )
    chunk = "Medication leaflet\n" + prose(rng, language, size(150))
    return {"query": prose(rng, language, size(10))}, attributes, chunk


def glitch(rng: random.Random, answer: dict) -> str:
    text = json.dumps(answer, ensure_ascii=False)
    kind = rng.choice(["fence", "prose", "trailing_comma", "single_quotes"])
    if kind == "fence":
        return f"```json\n{text}\n```"
    if kind == "prose":
        return f"Here you go:\n{text}\nLet me know if you need more."
    if kind == "trailing_comma":
        return text[:-1] + ",}"
    return repr(answer)


def invalid(rng: random.Random, template: str, answer: dict, attributes: dict) -> tuple[str, dict, str]:
    """(raw_output, attributes, error) of an invalid example."""
    kind = rng.choice(["broken_json", "missing_key", "leakage", "language", "too_short", "error", "same", "echo"])
    first_key, second_key = list(answer)[0], list(answer)[-1]
    if kind == "broken_json":
        return json.dumps(answer, ensure_ascii=False)[: rng.randint(5, 60)], attributes, ""
    if kind == "missing_key":
        return json.dumps({k: v for k, v in answer.items() if k != first_key}), attributes, ""
    if kind == "leakage":
        return json.dumps({**answer, first_key: "As an AI language model, I cannot help with that request."}), attributes, ""
    if kind == "language" and template not in ("bitext", "classification"):
        other = "de" if attributes.get("language") != "de" else "en"
        return json.dumps({**answer, first_key: prose(rng, other, 12), second_key: prose(rng, other, 60)}), attributes, ""
    if kind == "too_short" and template == "retrieval":
        return json.dumps({**answer, "positive_document": "Take it with water."}), attributes, ""
    if kind == "same" and template != "corpus_query":
        return json.dumps({**answer, first_key: answer[list(answer)[1]]}), attributes, ""
    if kind == "echo":
        return json.dumps({**answer, first_key: TASK}), attributes, ""
    return "", attributes, "rate_limited: 429 after 5 retries"


POSITIVE_KEYS = {"retrieval": "positive_document", "short_matching": "positive_document", "long_matching": "positive_document",
                 "sts": "S2", "bitext": "S2", "classification": "input_text", "corpus_query": "query"}  # fmt: skip


def near_duplicate(rng: random.Random, example: pb.RawExample) -> pb.RawExample:
    """A regeneration of a clean valid example: two words (CJK: two characters) of its positive changed."""
    answer = json.loads(example.raw_output)
    key = POSITIVE_KEYS[example.template_id]
    text = answer[key]
    if " " in text:
        words = text.split(" ")
        for index in rng.sample(range(len(words)), 2):
            words[index] = rng.choice([w for w in words if w != words[index]] or ["changed"])
        text = " ".join(words)
    else:
        chars = list(text)
        for index in rng.sample(range(len(chars)), 2):
            chars[index] = rng.choice([c for c in chars if c != chars[index]] or ["变"])
        text = "".join(chars)
    copy = pb.RawExample()
    copy.CopyFrom(example)
    copy.raw_output = json.dumps({**answer, key: text}, ensure_ascii=False)
    return copy


def typed(example: pb.RawExample) -> pb.RawExample:
    """The example as examplegen publishes it: the answer read into the typed fields."""
    template = PROMPTS[example.template_id]
    example.category = template.example.category
    example.source = "corpus" if example.chunk_text else "generated"
    set_requests(example, template)
    if not example.error:
        read_answer(example, template, example.raw_output)
    return example


def workload(count: int, job_id: str = "bench") -> list[pb.RawExample]:
    """Raw examples with their answers in raw_output only (typed() fills the rest)."""
    rng = random.Random(SEED)
    valid: list[pb.RawExample] = []
    examples: list[pb.RawExample] = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.10 and valid:
            example = near_duplicate(rng, rng.choice(valid))
        else:
            template, language = rng.choice(TEMPLATES), rng.choice(LANGUAGES)
            answer, attributes, chunk = answer_for(rng, template, language)
            if template == "corpus_query":
                answer = {"query": "what should caregivers know about " + answer["query"]}
            error, clean = "", False
            if roll < 0.20:
                output, attributes, error = invalid(rng, template, answer, attributes)
            elif rng.random() < 0.2:
                output = glitch(rng, answer)
            else:
                output, clean = json.dumps(answer, ensure_ascii=False), True
            example = pb.RawExample(job_id=job_id, template_id=template, task_description=TASK, raw_output=output,
                                    attributes=attributes, chunk_text=chunk, error=error)  # fmt: skip
            if clean:
                valid.append(example)
        example.example_id = f"{job_id}-{n}"
        examples.append(example)
    return examples


class LangidClassify:
    """Anchor language identification: the library's own classify."""

    def detect(self, text: str) -> str:
        return langid.classify(text[:200])[0]


class PublicLangid:
    """The curator's detector on langid's public API alone: the same probe (first ``probe_chars``
    UTF-8 bytes) and memory of recent probes, each new probe through LanguageIdentifier.classify."""

    def __init__(self, probe_chars: int = ValidationSettings().language_probe_chars):
        self.identifier = LanguageIdentifier.from_modelstring(model, norm_probs=False)
        self.probe_chars = probe_chars
        self.recent: dict[bytes, str] = {}

    def detect_many(self, texts: list[str]) -> list[str]:
        detected = []
        for text in texts:
            probe = text[: self.probe_chars].encode("utf-8", errors="ignore")[: self.probe_chars]
            if probe not in self.recent:
                self.recent[probe] = self.identifier.classify(probe.decode("utf-8", errors="ignore"))[0] if probe else "und"
                while len(self.recent) > LanguageDetector.RECENT:
                    del self.recent[next(iter(self.recent))]
            detected.append(self.recent[probe])
        return detected


class Sha1MinHasher(MinHasher):
    """Anchor signatures: datasketch's MinHash.update_batch, SHA-1 per shingle (query and positive halves)."""

    def _sha1_values(self, normalized: str, first: int, last: int) -> np.ndarray:
        words = normalized.encode()[: self.max_bytes].decode(errors="ignore").split()
        perm_a, perm_b = self.permutations
        signature = MinHash(num_perm=last - first, scheme=SCHEME, permutations=(perm_a[first:last], perm_b[first:last]))
        signature.update_batch([f"{a} {b}".encode() for a, b in zip(words, words[1:])] or [w.encode() for w in words])
        return signature.hashvalues

    def pair(self, norm_query: str, norm_positive: str) -> Signature:
        values = (self._sha1_values(norm_query, 0, self.split), self._sha1_values(norm_positive, self.split, self.num_perm))
        return Signature(np.concatenate(values))

    def pairs(self, items: list[tuple[str, str]]) -> list[Signature]:
        return [self.pair(query, positive) for query, positive in items]


def curate_in_process(
    examples: list[pb.RawExample], validator: Validator, index: DedupIndex, label: str
) -> tuple[float, float, Counter]:
    """(examples per CPU second, examples per wall second, outcomes) of one thread.

    Batches of BATCH records, as the service's stages get them from a poll: the validate
    stage's curate_many, then the dedup stage's signatures and per-example check/add.
    """
    outcomes: Counter = Counter()
    with Progress() as progress:
        task = progress.add_task(label, total=len(examples))
        started, started_cpu = time.perf_counter(), time.thread_time()
        for start in range(0, len(examples), BATCH):
            kept = []
            for result in validator.curate_many(examples[start : start + BATCH]):
                if isinstance(result, Rejection):
                    outcomes[result.reason] += 1
                else:
                    kept.append(result)
            for example, signature in zip(kept, index.signatures(kept)):
                job = index.job(example.job_id)
                verdict = job.check(example.content_hash, signature)
                if verdict.reason:
                    outcomes[verdict.reason] += 1
                else:
                    job.add(example.content_hash, example.provenance.example_id, signature)
                    outcomes["accepted"] += 1
            if start % 1000 == 0:
                progress.update(task, completed=start)
        elapsed, cpu = time.perf_counter() - started, time.thread_time() - started_cpu
        progress.update(task, completed=len(examples))
    return len(examples) / cpu, len(examples) / elapsed, outcomes


def core(examples: list[pb.RawExample]) -> dict:
    settings, dedup = ValidationSettings(), DedupSettings()
    ours = Validator(settings)
    rate, wall_rate, outcomes = curate_in_process(
        examples, ours, DedupIndex(dedup.near_duplicate_threshold, dedup.num_perm, dedup.max_bytes), "curator core"
    )
    public = Validator(settings, detector=PublicLangid())
    public_index = DedupIndex(dedup.near_duplicate_threshold, dedup.num_perm, dedup.max_bytes)
    public_rate, public_wall_rate, public_outcomes = curate_in_process(examples, public, public_index, "core, public langid API")
    anchor_index = DedupIndex(dedup.near_duplicate_threshold, dedup.num_perm, dedup.max_bytes)
    anchor_index.hasher = Sha1MinHasher(dedup.num_perm, dedup.max_bytes)
    langid.classify("warm up")
    anchor_rate, anchor_wall_rate, anchor_outcomes = curate_in_process(
        examples, Validator(settings, detector=LangidClassify()), anchor_index, "anchor core"
    )
    return {
        "examples_per_s_core": round(rate), "examples_per_s_core_anchor": round(anchor_rate),
        "examples_per_s_core_wall": round(wall_rate), "examples_per_s_core_anchor_wall": round(anchor_wall_rate),
        "examples_per_s_core_public_langid": round(public_rate),
        "examples_per_s_core_public_langid_wall": round(public_wall_rate),
        "outcomes_core": dict(outcomes.most_common()), "outcomes_core_anchor": dict(anchor_outcomes.most_common()),
        "outcomes_core_public_langid": dict(public_outcomes.most_common()),
    }  # fmt: skip


def kafka_end_to_end(examples: list[pb.RawExample]) -> dict:
    """Produce into forge.examples.raw of a running curator process; time until every outcome is out."""
    from kafka import KafkaConsumer

    from libs.kafka import physical_name

    with tempfile.TemporaryDirectory() as run_dir, TansuBroker(log_path=Path(run_dir) / "broker.log") as broker:
        runtime = LocalRuntime(
            Path(run_dir), services=("curator",), extra_env={"{PREFIX}KAFKA__MAX_POLL_RECORDS": "500"}, topic_prefix="bench."
        )
        runtime.start_broker(broker)
        runtime.start_service("curator")
        runtime.wait_healthy("curator")
        kafka = runtime.kafka_settings
        outputs = KafkaConsumer(
            physical_name(kafka, topics.EXAMPLES_CURATED), physical_name(kafka, topics.EXAMPLES_REJECTED),
            bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest", consumer_timeout_ms=500,
        )  # fmt: skip
        producer = ProtoProducer(kafka, client_id="bench")
        warmup = pb.RawExample(example_id="warmup", job_id="warmup", template_id="sts", raw_output="{}")
        producer.send_and_wait(topics.EXAMPLES_RAW, warmup.example_id, warmup)
        warmup_key = topics.rejected_key(pb.RejectedExample(job_id=warmup.job_id, example_id=warmup.example_id)).encode()
        while not any(
            r.key == warmup_key for r in outputs
        ):  # the curator is assigned and consuming (it rejects the empty warmup)
            pass
        seen: set[bytes] = set()
        started = time.perf_counter()
        with Progress() as progress:
            task = progress.add_task("curator via kafka", total=len(examples))
            for example in examples:
                producer.send(topics.EXAMPLES_RAW, example.example_id, example)
            producer.flush()
            while len(seen) < len(examples):
                for record in outputs:
                    if record.topic.endswith("rejected"):
                        seen.add(record.key)
                    else:
                        seen.add(pb.CuratedExample.FromString(record.value).provenance.example_id.encode())
                    progress.update(task, completed=len(seen))
        elapsed = time.perf_counter() - started
        runtime.stop_service("curator")
    return {
        "examples_per_s_kafka": round(len(examples) / elapsed),
        "kafka_examples": len(examples),
        "kafka_seconds": round(elapsed, 1),
    }


def main() -> None:
    examples = workload(EXAMPLES)
    started = time.thread_time()
    examples = [typed(example) for example in examples]
    parse_rate = len(examples) / (time.thread_time() - started)
    results = {
        "examples": len(examples),
        "mix": "7 templates, 5 languages; 80% valid (20% of them repairable), 10% near-duplicates, 10% invalid",
        "answers_parsed_per_s": round(parse_rate),
        **core(examples),
        **kafka_end_to_end([typed(example) for example in workload(KAFKA_EXAMPLES, job_id="bench-kafka")]),
        "anchor": "same checks with langid.classify and datasketch MinHash.update_batch (SHA-1 per shingle)",
        "core_rate_basis": "examples_per_s_core*: per CPU second of the one benchmark thread (time.thread_time); "
        "*_wall: per wall second",
        "machine": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2), "python": platform.python_version()},
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
