"""Reading answers into RawExample's typed fields, by each template's `example` map."""

import json

from embedforge.v1 import messages_pb2 as pb
from services.examplegen.answers import read_answer, set_requests
from services.examplegen.generation import TEMPLATES_DIR, templates_by_category

TEMPLATES = templates_by_category(TEMPLATES_DIR)
RETRIEVAL = {
    "user_query": "dose for children",
    "positive_document": "Give half a tablet.",
    "hard_negative_document": "Adults take one.",
}


def planned(category: int, **attributes) -> pb.RawExample:
    raw = pb.RawExample(category=category, attributes=attributes, chunk_text="The chunk.")
    set_requests(raw, TEMPLATES[category])
    return raw


def test_an_answer_becomes_query_positive_and_negative():
    raw = planned(pb.CATEGORY_RETRIEVAL, language="en")
    read_answer(raw, TEMPLATES[pb.CATEGORY_RETRIEVAL], json.dumps(RETRIEVAL))
    assert (raw.query, list(raw.positives), list(raw.negatives)) == (
        "dose for children",
        ["Give half a tablet."],
        ["Adults take one."],
    )
    assert not raw.HasField("answer_error") and not raw.repairs
    assert raw.raw_output == json.dumps(RETRIEVAL)


def test_repairs_the_answer_needed_are_recorded():
    raw = planned(pb.CATEGORY_RETRIEVAL)
    read_answer(raw, TEMPLATES[pb.CATEGORY_RETRIEVAL], "```json\n" + json.dumps(RETRIEVAL) + "\n```")
    assert (raw.query, list(raw.repairs)) == ("dose for children", ["code_fence"])


def test_an_answer_without_a_key_of_the_template_carries_the_reason():
    raw = planned(pb.CATEGORY_RETRIEVAL)
    renamed = {"query": "renamed key", "positive_document": "p", "hard_negative_document": "n"}
    read_answer(raw, TEMPLATES[pb.CATEGORY_RETRIEVAL], json.dumps(renamed))
    assert raw.answer_error.reason == "missing_key" and "user_query" in raw.answer_error.detail
    assert not raw.query and not raw.positives


def test_an_answer_that_is_not_json_carries_invalid_json():
    raw = planned(pb.CATEGORY_STS)
    read_answer(raw, TEMPLATES[pb.CATEGORY_STS], "I cannot write that.")
    assert raw.answer_error.reason == "invalid_json"


def test_requested_lengths_are_word_bounds():
    raw = planned(pb.CATEGORY_RETRIEVAL, query_length="less than 5 words", num_words="200")
    assert (raw.query_words.min, raw.query_words.max, raw.document_words.min, raw.document_words.max) == (1, 4, 200, 200)
    raw = planned(pb.CATEGORY_CLASSIFICATION, num_words="at least 50")
    assert (raw.query_words.min, raw.query_words.max) == (50, 0) and not raw.HasField("document_words")
    assert not planned(pb.CATEGORY_SHORT_MATCHING).HasField("query_words")


def test_the_corpus_chunk_is_the_positive_of_a_corpus_query():
    raw = planned(pb.CATEGORY_CORPUS_GROUNDED)
    read_answer(raw, TEMPLATES[pb.CATEGORY_CORPUS_GROUNDED], '{"query": "what does the chunk say"}')
    assert (raw.query, list(raw.positives), list(raw.negatives)) == ("what does the chunk say", ["The chunk."], [])


def test_languages_and_similarity_come_from_the_attributes():
    bitext = planned(pb.CATEGORY_BITEXT, language="en", source_language="en", target_language="de")
    assert (bitext.language, bitext.target_language) == ("en", "de")
    sts = planned(pb.CATEGORY_STS, language="fr", high_score="4.5")
    assert (sts.language, sts.target_language, sts.similarity) == ("fr", "", 4.5)
