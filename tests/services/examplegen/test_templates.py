"""Example templates: every category renders, and the JSON keys the curator relies on
(services/examplegen/README.md) are the keys each template's schema requires."""

import re
from pathlib import Path

import pytest

from embedforge.v1 import messages_pb2 as pb
from libs.llm.templates import load_templates
from services.examplegen.generation import TEMPLATE_OF_CATEGORY, TEMPLATES_DIR
from services.examplegen.sampling import LanguageSampler, rng_for, sample_attributes, template_variables

TEMPLATES = load_templates(TEMPLATES_DIR)
README = Path(TEMPLATES_DIR).parent / "README.md"


def readme_keys() -> dict[str, list[str]]:
    rows = re.findall(r"^\| `(\w+)` \| CATEGORY_\w+ \| ([^|]+) \|", README.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {template: re.findall(r"`(\w+)`", keys) for template, keys in rows}


@pytest.mark.parametrize("category", sorted(TEMPLATE_OF_CATEGORY))
def test_every_category_template_renders_with_sampled_attributes(category):
    template = TEMPLATES[TEMPLATE_OF_CATEGORY[category]]
    attributes = sample_attributes(template, rng_for(0, "t", 0), LanguageSampler([pb.LanguageWeight(language="de")]), bitext=category == pb.CATEGORY_BITEXT)
    messages = template.render(task="Find court rulings on tenancy disputes", title="", chunk="Some passage.", **template_variables(attributes))
    prompt = messages[-1]["content"]
    assert "German" in prompt
    assert "{{" not in prompt and "{%" not in prompt
    for value in attributes.values():
        if value != "de":
            assert value in prompt


def test_readme_documents_the_json_keys_of_every_template():
    documented = readme_keys()
    assert set(documented) == set(TEMPLATE_OF_CATEGORY.values())
    for template_id, keys in documented.items():
        assert keys == TEMPLATES[template_id].json_schema["required"], template_id


def test_templates_carry_an_id_and_a_version():
    for template in TEMPLATES.values():
        assert template.id and template.version.isdigit()
