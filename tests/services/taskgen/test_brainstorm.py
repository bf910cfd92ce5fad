"""Brainstorm parsing, cleaning and dedup (services.taskgen.brainstorm). The LLM is a
recorded-response provider registered in litellm (recorded.py)."""

import json

from embedforge.v1 import messages_pb2 as pb
from libs.settings import LlmSettings
from services.taskgen.brainstorm import Brainstormer, clean_task, normalize_task, task_id
from tests.services.taskgen.recorded import register_script


def brainstormer() -> Brainstormer:
    return Brainstormer(LlmSettings(model="scripted/brainstorm", timeout_s=10, attempts=1), max_tokens=256, temperature=1.0)


def test_messy_answer_gives_clean_task_sentences():
    register_script(
        [
            'Here are tasks:\n```python\n["Retrieve rulings on lease disputes.", "  Task 2: Find statutes on eviction '
            'notices ", "ok", "Retrieve rulings on lease disputes"]\n```'
        ]
    )
    tasks = brainstormer().brainstorm("tenancy law", pb.CATEGORY_RETRIEVAL, 4)
    assert tasks == [
        "Retrieve rulings on lease disputes.",
        "Find statutes on eviction notices",
        "Retrieve rulings on lease disputes",
    ]


def test_prompt_is_conditioned_on_the_domain_and_count():
    provider = register_script(['["Classify tenant complaints by urgency"]'])
    brainstormer().brainstorm("tenancy law", pb.CATEGORY_CLASSIFICATION, 7)
    assert "tenancy law" in provider.prompts[0] and "about 7 elements" in provider.prompts[0]


def test_an_answer_without_a_list_gives_no_tasks():
    register_script(["I'm sorry, I cannot do that."])
    assert brainstormer().brainstorm("tenancy law", pb.CATEGORY_RETRIEVAL, 3) == []


def test_dedup_key_ignores_case_punctuation_and_spacing():
    assert normalize_task("Retrieve  rulings, on LEASE disputes.") == normalize_task("retrieve rulings on lease disputes")


def test_too_short_items_are_dropped():
    assert clean_task("ok") is None
    assert clean_task("Find it") is None
    assert clean_task('"Match symptoms with likely diagnoses"') == "Match symptoms with likely diagnoses"


def test_lead_ins_are_not_tasks():
    assert clean_task("These tasks are as follows:") is None
    assert clean_task("以下是一些检索任务的例子：") is None


def test_task_ids_are_stable_and_depend_on_job_category_and_text():
    first = task_id("job", pb.CATEGORY_RETRIEVAL, "Retrieve rulings.")
    assert first == task_id("job", pb.CATEGORY_RETRIEVAL, "retrieve rulings")
    assert first != task_id("job", pb.CATEGORY_CLASSIFICATION, "Retrieve rulings.")
    assert first != task_id("other", pb.CATEGORY_RETRIEVAL, "Retrieve rulings.")


def test_the_prompt_lists_the_templates_examples():
    provider = register_script(['["Retrieve rulings on lease disputes"]'])
    brainstormer().brainstorm("tenancy law", pb.CATEGORY_RETRIEVAL, 3)
    assert (
        "- Provided a scientific claim as query, retrieve documents that help verify or refute the claim.\n- Search for"
        in provider.prompts[0]
    )


def test_tasks_that_echo_the_examples_or_the_domain_are_dropped():
    # As the 0.5B default generator answered: copies of the prompt's examples (reworded, or
    # strung together), of its guidelines, and the domain restated, beside two real tasks.
    register_script(
        [
            '["Retrieve documents that help verify or refute a scientific claim", '
            '"Search for documents that answers a FAQ-style query on children\'s nutrition.", '
            '"These tasks are: retrieve documents that help verify a scientific claim, search for documents that '
            'answers a FAQ-style query", '
            '"These tasks cover a wide range of queries, and should not be too specific.", '
            '"These tasks for Helios H5 home battery are installation, status lights, error codes, the companion app", '
            '"Given an error code shown by the Helios app, retrieve the support article that explains it", '
            '"Given a question about the battery\'s warranty, retrieve documents that answer it"]'
        ]
    )
    domain = "Customer support for the Helios H5 home battery: installation, status lights, error codes, the companion app"
    tasks = brainstormer().brainstorm(domain, pb.CATEGORY_RETRIEVAL, 5)
    assert tasks == [
        "Given an error code shown by the Helios app, retrieve the support article that explains it",
        "Given a question about the battery's warranty, retrieve documents that answer it",
    ]


def test_meta_tasks_and_truncated_tasks_are_not_tasks():
    assert clean_task("Our goal is to understand customer support tasks for the Helios battery") is None
    assert clean_task("Here are retrieval tasks for the home battery domain") is None
    assert clean_task("Retrieve installation guides for home batteries, such as") is None
    assert clean_task("Retrieve error code explanations for the battery app,") is None
    complete = "Retrieve error code explanations for the battery app"
    assert clean_task(complete) == complete


def test_the_task_definition_is_drafted_in_the_style_of_the_example_queries():
    provider = register_script(['{"task": "Given a scientific claim, retrieve biomedical abstracts that support or refute it."}'])
    task = brainstormer().draft_task("Biomedical research abstracts on nutrition and disease.", ["Vitamin D prevents fractures."])
    assert task == "Given a scientific claim, retrieve biomedical abstracts that support or refute it"
    assert "Biomedical research abstracts" in provider.prompts[0] and "- Vitamin D prevents fractures." in provider.prompts[0]


def test_an_unusable_draft_falls_back_to_a_short_task_from_the_domain():
    domain = "Customer support for the Helios H5 home battery: installation, status lights and error codes."
    fallback = "Given a search query, retrieve relevant passages about Customer support for the Helios H5 home battery"
    unusable = [
        '{"task": "Our goal is to understand customer support tasks for the Helios battery"}',  # meta-task
        '{"task": "Given a question about installation, status lights,"}',  # truncated
        '{"task": "Given a question, retrieve answers. Then rank them by date"}',  # two sentences
        '{"task": "Given a question, retrieve Wikipedia passages that answer the question"}',  # an example, not the job's
        "I cannot help with that.",  # no JSON
    ]
    for answer in unusable:
        register_script([answer])
        assert brainstormer().draft_task(domain, []) == fallback, answer


def test_a_prompt_example_is_kept_when_it_is_about_the_job():
    task = "Given a question, retrieve Wikipedia passages that answer the question"
    register_script([json.dumps({"task": task})])
    assert brainstormer().draft_task("Wikipedia paragraphs on sports and history.", []) == task
