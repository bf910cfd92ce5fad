"""Attribute and language sampling (services.examplegen.sampling)."""

import random
from collections import Counter

from embedforge.v1 import messages_pb2 as pb
from libs.llm.templates import load_templates
from services.examplegen.generation import TEMPLATES_DIR
from services.examplegen.sampling import XLMR_LANGUAGES, LanguageSampler, rng_for, sample_attributes, spread_attributes

TEMPLATES = load_templates(TEMPLATES_DIR)


def test_retrieval_attributes_are_drawn_uniformly_from_the_paper_choices():
    template = TEMPLATES["retrieval"]
    rng = random.Random(7)
    draws = [sample_attributes(template, rng, LanguageSampler([pb.LanguageWeight(language="en")])) for _ in range(3000)]
    for name, choices in template.attributes.items():
        counts = Counter(d[name] for d in draws)
        assert set(counts) == {str(c) for c in choices}, name
        expected = len(draws) / len(choices)
        assert all(abs(n - expected) < 0.2 * expected for n in counts.values()), (name, counts)


def test_retrieval_samples_every_attribute_the_paper_names():
    assert set(TEMPLATES["retrieval"].attributes) == {"query_type", "query_length", "clarity", "num_words", "difficulty"}
    assert TEMPLATES["retrieval"].attributes["num_words"] == [50, 100, 200, 300, 400, 500]


def test_languages_default_to_the_xlmr_list_weighted_toward_high_resource():
    rng = random.Random(3)
    sampler = LanguageSampler()
    counts = Counter(sampler.sample(rng) for _ in range(20000))
    assert len(XLMR_LANGUAGES) >= 90
    assert set(counts) <= set(XLMR_LANGUAGES)
    assert counts.most_common(1)[0][0] == "en"
    assert counts["en"] > 5 * counts["sw"] and counts["ru"] > counts["ca"] > counts["xh"]


def test_a_job_can_restrict_languages_with_its_own_weights():
    rng = random.Random(5)
    sampler = LanguageSampler([pb.LanguageWeight(language="zh", weight=3), pb.LanguageWeight(language="en", weight=1)])
    counts = Counter(sampler.sample(rng) for _ in range(4000))
    assert set(counts) == {"zh", "en"}
    assert 2.5 < counts["zh"] / counts["en"] < 3.5


def test_bitext_pairs_two_different_languages():
    rng = random.Random(1)
    sampler = LanguageSampler([pb.LanguageWeight(language="zh"), pb.LanguageWeight(language="en")])
    pairs = {sampler.sample_pair(rng) for _ in range(200)}
    assert pairs == {("zh", "en"), ("en", "zh")}


def test_attributes_are_reproducible_per_task_and_index():
    template, languages = TEMPLATES["retrieval"], LanguageSampler()
    first = sample_attributes(template, rng_for(1, "task-a", 0), languages)
    assert first == sample_attributes(template, rng_for(1, "task-a", 0), languages)
    assert any(sample_attributes(template, rng_for(1, "task-a", i), languages) != first for i in range(1, 5))


def test_answer_budget_grows_with_the_words_the_prompt_asks_for():
    template = TEMPLATES["retrieval"]
    assert template.answer_budget({"num_words": "50"}) < template.answer_budget({"num_words": "500"})
    # Two documents of at least 500 words cannot fit in a flat 1024-token answer.
    assert template.answer_budget({"num_words": "500"}) > 2 * 500 * 2
    assert TEMPLATES["classification"].answer_budget({"num_words": "at least 200"}) > TEMPLATES["classification"].answer_budget(
        {"num_words": "less than 10"}
    )
    assert TEMPLATES["sts"].answer_budget({}) == TEMPLATES["sts"].max_tokens


def test_a_token_cap_restricts_num_words_to_values_whose_answer_fits():
    template, languages = TEMPLATES["retrieval"], LanguageSampler([pb.LanguageWeight(language="en")])
    rng = random.Random(11)
    draws = Counter(sample_attributes(template, rng, languages, max_tokens=1024)["num_words"] for _ in range(600))
    assert set(draws) == {"50", "100"}
    assert all(template.answer_budget({"num_words": w}) <= 1024 for w in draws)
    tiny = {sample_attributes(template, rng, languages, max_tokens=10)["num_words"] for _ in range(50)}
    assert tiny == {"50"}  # nothing fits: the shortest request


def test_the_queries_of_one_chunk_differ_in_every_attribute_and_are_reproducible():
    template = TEMPLATES["corpus_query"]
    english = LanguageSampler([pb.LanguageWeight(language="en")])
    for chunk in range(50):
        spread = spread_attributes(template, (7, f"chunk-{chunk}"), 3, english)
        for name in template.attributes:  # every corpus_query attribute has 3 values: all three are asked for
            assert len({attributes[name] for attributes in spread}) == 3, (chunk, name)
        assert spread == spread_attributes(template, (7, f"chunk-{chunk}"), 3, english)
    assert len(spread_attributes(template, (7, "chunk-0"), 5, english)) == 5  # more queries than values: the rest draw freely
