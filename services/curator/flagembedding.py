"""FlagEmbedding fine-tuning JSONL: one ``{"query", "pos": [...], "neg": [...], "prompt"}`` per line."""

import hashlib
import json

from embedforge.v1 import messages_pb2 as pb
from libs.llm.parsing import AnswerError, parse_object, text_field, texts_field


def to_line(example: pb.CuratedExample) -> str:
    record = {
        "query": example.query,
        "pos": list(example.positives),
        "neg": list(example.negatives),
        "prompt": example.instruction,
    }
    return json.dumps(record, ensure_ascii=False)


def lines_of(chunks, first_job_id: str = "") -> tuple[str, list[str]]:
    """The job id and the non-empty lines of a stream of ImportDatasetRequest chunks.

    Lines may be split across chunks; bytes are decoded once whole lines are assembled.
    Raises ValueError (INVALID_ARGUMENT) on a line that is not UTF-8, before anything is produced.
    """
    job_id, pending, lines = first_job_id, b"", []
    for chunk in chunks:
        job_id = job_id or chunk.job_id
        pending += chunk.jsonl
        *complete, pending = pending.split(b"\n")
        lines.extend(complete)
    lines.append(pending)
    decoded = []
    for number, line in enumerate(lines):
        try:
            decoded.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"line {number + 1} is not UTF-8: {exc}") from None
    return job_id, [line for line in decoded if line.strip()]


def raw_examples(job_id: str, import_id: str, lines: list[str]) -> list[pb.RawExample]:
    """Imported lines as raw examples (source "imported"), curated like generated ones; a line
    that is not a FlagEmbedding record carries its answer_error."""
    examples = []
    for number, line in enumerate(lines):
        digest = hashlib.blake2b(f"{job_id}\x1f{import_id}\x1f{number}".encode(), digest_size=12).hexdigest()
        raw = pb.RawExample(example_id=f"import-{digest}", job_id=job_id, source="imported", raw_output=line)
        raw.attributes["import_id"] = import_id
        try:
            parsed = parse_object(line)
            query, positives = text_field(parsed.value, "query"), texts_field(parsed.value, "pos", required=True)
            negatives = texts_field(parsed.value, "neg", required=False)
        except AnswerError as exc:
            raw.answer_error.reason, raw.answer_error.detail = exc.reason, exc.detail[:500]
        else:
            raw.query = query
            raw.positives.extend(positives)
            raw.negatives.extend(negatives)
            prompt = parsed.value.get("prompt", "")
            raw.task_description = prompt if isinstance(prompt, str) else ""
            raw.repairs.extend(parsed.repairs)
        examples.append(raw)
    return examples
