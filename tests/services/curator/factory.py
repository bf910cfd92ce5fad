"""Raw examples as examplegen writes them (contract: protos/embedforge/v1/messages.proto RawExample)."""

import json
import random

from embedforge.v1 import messages_pb2 as pb

WORDS = (
    "the patient should take the tablet with water after breakfast and report any side effects to the nurse "
    "a doctor may adjust the dose when the kidney function changes or when other medicines interact with it "
    "blood pressure readings are recorded twice a day and compared with the values from the previous week "
    "children under twelve need a lower dose and a parent must supervise every treatment at home "
    "the clinic opens early on monday and closes late on thursday so that working families can attend "
    "vaccines are stored in a cold room and each batch is checked before it is given to anyone "
    "insurance covers most of the cost but some tests require a written request from the family doctor "
    "exercise sleep and a balanced diet help recovery after surgery more than most people expect"
).split()
TASK = "Retrieve patient information leaflets that answer a caregiver's question"


def text(rng: random.Random, words: int) -> str:
    """English-looking prose of about ``words`` words, as sentences."""
    out, sentence = [], []
    for _ in range(words):
        sentence.append(rng.choice(WORDS))
        if len(sentence) >= rng.randint(8, 16):
            out.append(" ".join(sentence).capitalize() + ".")
            sentence = []
    if sentence:
        out.append(" ".join(sentence).capitalize() + ".")
    return " ".join(out)


def raw(example_id: str, template_id: str, answer, job_id: str = "job-1", **fields) -> pb.RawExample:
    """A RawExample whose raw_output is ``answer`` (a dict is written as JSON)."""
    output = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    attributes = fields.pop("attributes", {})
    return pb.RawExample(example_id=example_id, job_id=job_id, template_id=template_id, raw_output=output, attributes=attributes, **fields)


def retrieval_answer(seed: int, doc_words: int = 100) -> dict:
    rng = random.Random(seed)
    return {
        "user_query": f"{text(rng, 8).rstrip('.')} {seed}?",
        "positive_document": text(rng, doc_words),
        "hard_negative_document": text(rng, doc_words),
    }


RETRIEVAL_ATTRIBUTES = {"language": "en", "query_length": "5 to 15 words", "num_words": "100", "query_type": "common"}


def retrieval(seed: int, job_id: str = "job-1", answer: dict | None = None, **fields) -> pb.RawExample:
    fields.setdefault("attributes", dict(RETRIEVAL_ATTRIBUTES))
    fields.setdefault("task_description", TASK)
    return raw(f"ex-{job_id}-{seed}", "retrieval", answer or retrieval_answer(seed), job_id=job_id, category=pb.CATEGORY_RETRIEVAL, **fields)


def near_duplicate(answer: dict, seed: int) -> dict:
    """The same answer with two words of the positive changed (what a regeneration looks like)."""
    rng = random.Random(seed)
    words = answer["positive_document"].split()
    for index in rng.sample(range(len(words)), 2):
        words[index] = rng.choice(WORDS)
    return {**answer, "user_query": answer["user_query"].replace("?", " please?"), "positive_document": " ".join(words)}
