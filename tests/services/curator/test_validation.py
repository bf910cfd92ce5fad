"""Per-example checks: each reject reason on a minimal bad example, and what a good one becomes."""

import json

import pytest

from embedforge.v1 import messages_pb2 as pb
from services.curator.settings import ValidationSettings
from services.curator.text import content_hash, normalize
from services.curator.flagembedding import raw_examples
from services.curator.validation import Rejection, Validator
from tests.services.curator.factory import RETRIEVAL_ATTRIBUTES, TASK, raw, retrieval, retrieval_answer

GERMAN = (
    "Die Patientin sollte die Tablette nach dem Frühstück mit Wasser einnehmen und Nebenwirkungen der Pflegekraft melden. "
    "Der Arzt kann die Dosis anpassen, wenn sich die Nierenfunktion verändert oder andere Medikamente wirken. "
) * 4
CHUNK = (
    "Storing insulin safely\n"
    "Unopened insulin pens belong in the refrigerator between two and eight degrees. "
    "A pen in use can stay at room temperature for up to four weeks. "
    "Never freeze insulin and keep it away from direct sunlight."
)


@pytest.fixture(scope="module")
def validator():
    return Validator(ValidationSettings())


def reason_of(validator: Validator, example: pb.RawExample) -> str:
    with pytest.raises(Rejection) as caught:
        validator.curate(example)
    return caught.value.reason


def test_valid_retrieval_answer_becomes_a_curated_example(validator):
    answer = retrieval_answer(1)
    example = validator.curate(retrieval(1, answer=answer, usage=pb.LlmUsage(model="local/smollm2"), task_id="task-1"))
    assert example.query == answer["user_query"]
    assert list(example.positives) == [answer["positive_document"]]
    assert list(example.negatives) == [answer["hard_negative_document"]]
    assert example.instruction == TASK
    assert example.language == "en"
    assert example.category == pb.CATEGORY_RETRIEVAL
    assert example.content_hash == content_hash(normalize(answer["user_query"]), normalize(answer["positive_document"]))
    assert example.provenance.source == "generated"
    assert example.provenance.example_id == "ex-job-1-1"
    assert example.provenance.task_id == "task-1"
    assert example.provenance.model == "local/smollm2"
    assert example.provenance.attributes["num_words"] == "100"


def test_repairs_are_recorded_in_provenance(validator):
    answer = retrieval_answer(2)
    fenced = "```json\n" + json.dumps(answer) + "\n```"
    example = validator.curate(retrieval(2, answer=fenced))
    assert example.provenance.attributes["json_repairs"] == "code_fence"


def test_echoed_field_labels_are_stripped(validator):
    answer = {**retrieval_answer(3), "user_query": "Query: when should the tablet be taken"}
    answer["positive_document"] = "**Document:** " + answer["positive_document"]
    example = validator.curate(retrieval(3, answer=answer))
    assert example.query == "when should the tablet be taken"
    assert example.positives[0] == retrieval_answer(3)["positive_document"]


@pytest.mark.parametrize(
    ("template", "answer", "query", "positive", "negative"),
    [
        (
            "short_matching",
            {"input": "knee pain after running", "positive_document": "Runner's knee: causes and exercises"},
            "knee pain after running",
            "Runner's knee: causes and exercises",
            None,
        ),
        (
            "long_matching",
            {"input": "A long abstract about sleep.", "positive_document": "A long summary about rest."},
            "A long abstract about sleep.",
            "A long summary about rest.",
            None,
        ),
        (
            "sts",
            {
                "S1": "The nurse gave the child a vaccine.",
                "S2": "A child was vaccinated by the nurse.",
                "S3": "The nurse drove home.",
            },
            "The nurse gave the child a vaccine.",
            "A child was vaccinated by the nurse.",
            "The nurse drove home.",
        ),
        (
            "classification",
            {"input_text": "The pills made me dizzy all day.", "label": "side effect", "misleading_label": "dosage question"},
            "The pills made me dizzy all day.",
            "side effect",
            "dosage question",
        ),
        (
            "corpus_query",
            {"query": "how long can an open insulin pen stay out of the fridge"},
            "how long can an open insulin pen stay out of the fridge",
            CHUNK,
            None,
        ),
    ],
)
def test_each_template_maps_its_keys_to_query_positive_negative(validator, template, answer, query, positive, negative):
    attributes = {"language": "en", "high_score": "4.5"}
    example = validator.curate(
        raw(f"e-{template}", template, answer, chunk_text=CHUNK, task_description=TASK, attributes=attributes)
    )
    assert (example.query, example.positives[0], example.instruction) == (query, positive, TASK)
    assert list(example.negatives) == ([negative] if negative else [])
    if template == "sts":
        assert example.similarity == 4.5


def test_bitext_checks_source_and_target_languages(validator):
    answer = {"S1": retrieval_answer(4)["positive_document"], "S2": GERMAN, "S3": GERMAN[::-1]}
    attributes = {"source_language": "English", "target_language": "de"}
    assert validator.curate(raw("b1", "bitext", answer, attributes=attributes)).language == "en-de"
    assert (
        reason_of(
            validator, raw("b2", "bitext", {**answer, "S2": retrieval_answer(5)["positive_document"]}, attributes=attributes)
        )
        == "language_mismatch"
    )


def test_imported_line_is_curated_with_imported_provenance(validator):
    line = {
        "query": "what is runner's knee",
        "pos": ["Runner's knee is pain around the kneecap."],
        "neg": ["Tennis elbow is pain outside the elbow."],
        "prompt": "Find medical articles",
    }
    (imported,) = raw_examples("job-1", "import-1", [json.dumps(line)])
    example = validator.curate(imported)
    assert (example.query, list(example.positives), list(example.negatives), example.instruction) == (
        line["query"],
        line["pos"],
        line["neg"],
        line["prompt"],
    )
    assert example.provenance.source == "imported"


BAD = {
    "generation_failed": lambda: retrieval(10, error="rate_limited: 429 after 5 retries"),
    "invalid_json": lambda: retrieval(12, answer="I am not able to produce JSON today."),
    "missing_key": lambda: retrieval(13, answer={k: v for k, v in retrieval_answer(13).items() if k != "hard_negative_document"}),
    "wrong_type": lambda: retrieval(14, answer={**retrieval_answer(14), "user_query": ["two", "queries"]}),
    "empty_text": lambda: retrieval(15, answer={**retrieval_answer(15), "user_query": "Query:   "}),
    "prompt_leakage": lambda: retrieval(
        16, answer={**retrieval_answer(16), "positive_document": "As an AI language model, I cannot write medical advice."}
    ),
    "too_short": lambda: retrieval(17, answer={**retrieval_answer(17, doc_words=30)}),
    "too_long": lambda: retrieval(18, answer={**retrieval_answer(18, doc_words=400)}),
    "query_equals_positive": lambda: retrieval(
        19,
        answer={**retrieval_answer(19), "user_query": retrieval_answer(19)["positive_document"]},
        attributes={**RETRIEVAL_ATTRIBUTES, "query_length": "at least 10 words"},
    ),
    "positive_equals_negative": lambda: retrieval(
        20, answer={**retrieval_answer(20), "hard_negative_document": retrieval_answer(20)["positive_document"].upper()}
    ),
    "instruction_echo": lambda: retrieval(
        21, answer={**retrieval_answer(21), "user_query": "Query: Retrieve patient information leaflets that answer a question"}
    ),
    "language_mismatch": lambda: retrieval(22, answer={**retrieval_answer(22), "positive_document": GERMAN}),
    "copies_chunk": lambda: raw(
        "c1",
        "corpus_query",
        {"query": "A pen in use can stay at room temperature for up to four weeks"},
        chunk_text=CHUNK,
        attributes={"language": "en"},
    ),
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_bad_example_is_rejected_with_its_reason(validator, reason):
    assert reason_of(validator, BAD[reason]()) == reason


def test_corpus_query_copying_the_title_is_rejected(validator):
    example = raw("c2", "corpus_query", {"query": "storing insulin safely"}, chunk_text=CHUNK, attributes={"language": "en"})
    with pytest.raises(Rejection, match="copies the title"):
        validator.curate(example)


def test_corpus_query_is_language_checked_but_not_the_users_passage(validator):
    passage = f"{JAPANESE} {CHINESE} {CHUNK}"  # the user's document, quoting other scripts first
    query = "how long can an open insulin pen stay out of the fridge"
    example = raw("c3", "corpus_query", {"query": query}, chunk_text=passage, attributes={"language": "en"})
    assert validator.curate(example).language == "en"
    asked_zh = raw("c4", "corpus_query", {"query": query}, chunk_text=CHUNK, attributes={"language": "zh"})
    assert reason_of(validator, asked_zh) == "language_mismatch"


def test_word_counts_within_tolerance_are_accepted(validator):
    # 100 words asked, 60 written: inside the default 50% tolerance.
    assert validator.curate(retrieval(30, answer=retrieval_answer(30, doc_words=60))).query


def test_short_texts_are_not_language_checked(validator):
    answer = {"input_text": "Mir ist schwindelig.", "label": "side effect", "misleading_label": "dosage"}
    assert validator.curate(raw("s", "classification", answer, attributes={"language": "en"})).language == "en"


SPANISH = "La enfermera mide la presión arterial de cada paciente dos veces al día y la anota en la ficha."
JAPANESE = "看護師は毎日二回、すべての患者の血圧を測って記録します。薬は朝食の後に水で飲んでください。"
CHINESE = "护士每天两次测量每位病人的血压并记录下来。病人应该在早饭后用水服用药片。"
ENGLISH = "The nurse checks the blood pressure of every patient twice a day and writes it down."
CLINIC = "The clinic opens early on monday for working families."


@pytest.mark.parametrize(
    ("language", "query", "positive", "reason"),
    [
        ("en", ENGLISH, GERMAN, "language_mismatch"),  # positive in another language
        ("en", SPANISH, ENGLISH, "language_mismatch"),  # query in another language
        ("es", SPANISH, SPANISH.replace("enfermera", "doctora"), None),
        ("zh", CHINESE, CHINESE[::-1], None),
        ("zh", JAPANESE, CHINESE, "language_mismatch"),  # Han characters, but kana make it Japanese
        ("zh", ENGLISH, CHINESE, "language_mismatch"),
        ("ja", JAPANESE, JAPANESE[::-1], None),
        ("de", ENGLISH, GERMAN, "language_mismatch"),
    ],
)  # fmt: skip
def test_query_and_positive_are_each_language_checked(validator, language, query, positive, reason):
    example = raw(
        f"l-{language}", "long_matching", {"input": query, "positive_document": positive}, attributes={"language": language}
    )
    if reason is None:
        assert validator.curate(example).language == language
    else:
        assert reason_of(validator, example) == reason


def test_a_batch_gets_the_verdicts_of_one_example_at_a_time(validator):
    batch = [BAD[reason]() for reason in sorted(BAD)] + [retrieval(40 + n) for n in range(5)]
    no_language = [
        raw(f"nl{n}", "long_matching", {"input": text, "positive_document": CLINIC})
        for n, text in enumerate([SPANISH, ENGLISH, "short"])
    ]
    batch += no_language
    batch += [
        raw(
            "bt",
            "bitext",
            {"S1": ENGLISH, "S2": GERMAN, "S3": GERMAN[::-1]},
            attributes={"source_language": "en", "target_language": "fr"},
        )
    ]
    one_by_one = []
    for example in batch:
        try:
            one_by_one.append(validator.curate(example).SerializeToString())
        except Rejection as exc:
            one_by_one.append((exc.reason, exc.detail))
    batched = [(r.reason, r.detail) if isinstance(r, Rejection) else r.SerializeToString() for r in validator.curate_many(batch)]
    assert batched == one_by_one
    assert [validator.curate(example).language for example in no_language] == ["es", "en", "en"]  # of the longest text


WORDS11 = "one two three four five six seven eight nine ten eleven"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (WORDS11, WORDS11.rsplit(" ", 1)[0], True),  # bigram Jaccard exactly 9/10: at the threshold
        (WORDS11, WORDS11.rsplit(" ", 2)[0], False),  # 8/10
        (WORDS11.rsplit(" ", 1)[0], WORDS11, True),  # the other way round
        (WORDS11, WORDS11.replace("six", "6"), False),  # 8/12
        (WORDS11 + " one two", WORDS11 + " one", True),  # repeated bigrams count once
        ("one two", "one two", True),
    ],
)
def test_sameness_is_the_bigram_jaccard_threshold(validator, a, b, same):
    assert validator._same(a, b) is same


def test_the_typed_fields_are_the_example_and_the_raw_text_only_the_record(validator):
    example = retrieval(5)
    example.raw_output = "not even JSON"
    assert validator.curate(example).query == retrieval_answer(5)["user_query"]
