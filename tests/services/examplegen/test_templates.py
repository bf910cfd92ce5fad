"""Example templates: one per category renders, and the registry table of
services/examplegen/README.md is the templates' `example` maps."""

import re
from pathlib import Path

import pytest

from embedforge.v1 import messages_pb2 as pb
from libs.llm.templates import load_templates
from services.examplegen.generation import TEMPLATES_DIR, templates_by_category
from services.examplegen.sampling import LanguageSampler, rng_for, sample_attributes, template_variables

TEMPLATES = load_templates(TEMPLATES_DIR)
BY_CATEGORY = templates_by_category(TEMPLATES_DIR)
README = Path(TEMPLATES_DIR).parent / "README.md"


def readme_registry() -> dict[str, tuple]:
    """template_id: (category, query key, positive key, negative key, [length attributes])."""
    row = re.compile(r"^\| `(\w+)` \| (CATEGORY_\w+) \|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|$", flags=re.MULTILINE)
    rows = row.findall(README.read_text(encoding="utf-8"))
    key = lambda cell: "".join(re.findall(r"`(\w+)`", cell))  # noqa: E731
    return {row[0]: (row[1], key(row[2]), key(row[3]), key(row[4]), re.findall(r"`(\w+)`", row[5])) for row in rows}


def test_every_category_but_unspecified_has_one_template():
    assert set(BY_CATEGORY) == set(pb.Category.values()) - {pb.CATEGORY_UNSPECIFIED}


@pytest.mark.parametrize("category", sorted(BY_CATEGORY))
def test_every_category_template_renders_with_sampled_attributes(category):
    template = BY_CATEGORY[category]
    attributes = sample_attributes(
        template, rng_for(0, "t", 0), LanguageSampler([pb.LanguageWeight(language="de")]), bitext=category == pb.CATEGORY_BITEXT
    )
    messages = template.render(
        task="Find court rulings on tenancy disputes", title="", chunk="Some passage.", **template_variables(attributes)
    )
    prompt = messages[-1]["content"]
    assert "German" in prompt
    assert "{{" not in prompt and "{%" not in prompt
    for value in attributes.values():
        if value != "de":
            assert value in prompt


def test_readme_documents_the_example_map_of_every_template():
    documented = readme_registry()
    assert set(documented) == {template.id for template in BY_CATEGORY.values()}
    for template_id, row in documented.items():
        fields = TEMPLATES[template_id].example
        lengths = [name for name in (fields.query_words, fields.document_words) if name]
        assert row == (pb.Category.Name(fields.category), fields.query, fields.positive, fields.negative, lengths), template_id


def test_templates_carry_an_id_and_a_version():
    for template in TEMPLATES.values():
        assert template.id and template.version.isdigit()
