"""Corpus-query checks: title containment, task restatement, dangling endings (each its own reason)."""

import pytest

from services.curator.query_checks import contains_title, corpus_query_problem, restates_task
from services.curator.settings import ValidationSettings
from services.curator.validation import Rejection, Validator
from tests.services.curator.factory import raw

TASK = "Given a scientific claim, retrieve abstracts that support or refute it"
TITLE = "Vitamin D supplementation and fracture risk in older adults"
CHUNK = (
    "In a randomized trial of 2,000 adults over seventy, daily vitamin D did not lower the rate of hip fractures "
    "compared with placebo over five years, although bone density rose slightly in the treated group."
)


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("Vitamin D supplementation and fracture risk in older adults. How does it work?", TITLE),  # copy, words added
        ("what does vitamin-D supplementation and Fracture Risk in Older Adults show", TITLE),  # normalised containment
        ("Hip fractures: do daily vitamin D doses prevent them?", "Hip fractures"),  # short title as the first sentence
        ("维生素D补充剂与老年人骨折风险的关系说明了什么？", "维生素D补充剂与老年人骨折风险的关系"),  # paper-like CJK title
    ],
)
def test_queries_holding_the_title_are_caught(query, title):
    assert contains_title(query, title)


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("Who founded Acme Corp and when?", "Acme Corp"),  # a short entity title inside a question: how users ask
        ("When was California State University, Long Beach founded?", "California State University, Long Beach"),
        ("Who wrote Once in a Lifetime for Keith Urban?", "Once in a Lifetime (Keith Urban song)"),  # 4 words + disambiguation
        ("does vitamin D lower hip fracture rates in the elderly", TITLE),  # on topic, no title copy
        ("《战国无双3》是由哪两个公司合作开发的？", "战国无双3"),  # short CJK title inside the question
        ("中华人民共和国成立于哪一年？", "中华人民共和国"),  # a 7-character name: one name, not a sentence
    ],
)
def test_queries_naming_a_short_title_or_the_topic_are_kept(query, title):
    assert not contains_title(query, title)


def test_a_query_describing_the_search_restates_the_task():
    assert restates_task("Find the abstracts of peer-reviewed papers that support or refute the claim", TASK)
    assert not restates_task("Find papers on CRISPR off-target effects in human embryos", TASK)
    assert not restates_task("Does vitamin D supplementation reduce fractures in the elderly?", TASK)
    # Domain words shared with the task are not task words: a real query about the domain stays.
    helios_task = "Given a question about the Helios home battery, retrieve support articles"
    assert not restates_task("how do I reset the Helios battery", helios_task)


def test_a_query_with_nothing_beyond_the_task_restates_it():
    task = "Given a search query, retrieve relevant passages about An encyclopedia of entities"
    assert restates_task("An encyclopedia of entities", task)
    assert restates_task("What is An encyclopedia of entities?", task)
    assert not restates_task("What is the Texas State Guard?", task)
    assert restates_task("Helios battery", "Given a question about the Helios home battery, retrieve support articles")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (f"{TITLE}. How does it work?", "contains_title"),
        ("Find the abstracts of peer-reviewed papers that support or refute the claim:", "restates_task"),
        ("Which supplements lower fracture risk, such as", "dangling_ending"),
        ("Which supplements lower fracture risk in people over seventy,", "dangling_ending"),
        ("Daily vitamin D has no effect on hip fractures in the elderly.", None),
    ],
)
def test_each_problem_has_its_own_reason(query, reason):
    problem = corpus_query_problem(query, TITLE, TASK)
    assert (problem[0] if problem else None) == reason


def test_the_validator_rejects_corpus_queries_with_these_reasons():
    validator = Validator(ValidationSettings())

    def example(query: str):
        attributes = {"language": "en", "title": TITLE}
        return raw("c1", "corpus_query", {"query": query}, chunk_text=CHUNK, task_description=TASK, attributes=attributes)

    with pytest.raises(Rejection) as caught:
        validator.curate(example("Which supplements lower the fracture risk of people over seventy, e.g."))
    assert caught.value.reason == "dangling_ending"
    assert validator.curate(example("Does taking vitamin D every day prevent hip fractures in people over seventy?")).query
