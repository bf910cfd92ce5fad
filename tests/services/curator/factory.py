"""Raw examples as examplegen writes them (contract: protos/embedforge/v1/messages.proto RawExample)."""

import json
import random

from embedforge.v1 import messages_pb2 as pb
from libs.llm.templates import load_templates
from services.examplegen.answers import read_answer, set_requests
from services.examplegen.generation import TEMPLATES_DIR

TOPIC_A = (
    "the patient should take the tablet with water after breakfast and report any side effects to the nurse "
    "a doctor may adjust the dose when the kidney function changes or when other medicines interact with it "
    "blood pressure readings are recorded twice a day and compared with the values from the previous week "
    "children under twelve need a lower dose and a parent must supervise every treatment at home"
).split()
TOPIC_B = (
    "the football team trained on the wet pitch before the cup final and the coach changed the tactics at half time "
    "fresh bread pasta and tomato sauce were served at the festival while a band played old songs in the square "
    "the railway company bought new trains for the mountain line and tickets became cheaper for students "
    "painters and sculptors showed their work in the gallery and the museum opened a new wing for modern art"
).split()
WORDS = TOPIC_A + TOPIC_B
TEMPLATES = load_templates(TEMPLATES_DIR)
TASK = "Retrieve patient information leaflets that answer a caregiver's question"


def text(rng: random.Random, words: int, vocabulary: list[str] = WORDS) -> str:
    """English-looking prose of ``words`` words, as sentences."""
    out, sentence = [], []
    for _ in range(words):
        sentence.append(rng.choice(vocabulary))
        if len(sentence) >= rng.randint(8, 16):
            out.append(" ".join(sentence).capitalize() + ".")
            sentence = []
    if sentence:
        out.append(" ".join(sentence).capitalize() + ".")
    return " ".join(out)


def raw(example_id: str, template_id: str, answer, job_id: str = "job-1", **fields) -> pb.RawExample:
    """The RawExample examplegen publishes when the template ``template_id`` is answered with
    ``answer`` (a dict is written as JSON): typed fields read from it by examplegen's own code."""
    output = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    template = TEMPLATES[template_id]
    fields.setdefault("category", template.example.category)
    source = "corpus" if template.example.category == pb.CATEGORY_CORPUS_GROUNDED else "generated"
    example = pb.RawExample(example_id=example_id, job_id=job_id, template_id=template_id, source=source, **fields)
    set_requests(example, template)
    read_answer(example, template, output)
    return example


def retrieval_answer(seed: int, doc_words: int = 100) -> dict:
    """A query made of its positive's words (so a reference model ranks the positive first)."""
    rng = random.Random(seed)
    positive = text(rng, doc_words, TOPIC_A)
    content_words = [w for w in positive.lower().replace(".", "").split() if len(w) >= 5]
    w = rng.sample(content_words, 5)
    return {
        "user_query": f"what about {w[0]} {w[1]} and {w[2]} {w[3]} {w[4]} {seed}?",
        "positive_document": positive,
        "hard_negative_document": text(rng, doc_words, TOPIC_B),
    }


RETRIEVAL_ATTRIBUTES = {"language": "en", "query_length": "5 to 15 words", "num_words": "100", "query_type": "common"}


def retrieval(seed: int, job_id: str = "job-1", answer: dict | None = None, **fields) -> pb.RawExample:
    fields.setdefault("attributes", dict(RETRIEVAL_ATTRIBUTES))
    fields.setdefault("task_description", TASK)
    return raw(
        f"ex-{job_id}-{seed}",
        "retrieval",
        answer or retrieval_answer(seed),
        job_id=job_id,
        category=pb.CATEGORY_RETRIEVAL,
        **fields,
    )


def near_duplicate(answer: dict, seed: int) -> dict:
    """The same answer with two words of the positive changed (what a regeneration looks like)."""
    rng = random.Random(seed)
    words = answer["positive_document"].split()
    for index in rng.sample(range(len(words)), 2):
        words[index] = rng.choice(WORDS)
    return {**answer, "user_query": answer["user_query"].replace("?", " please?"), "positive_document": " ".join(words)}
