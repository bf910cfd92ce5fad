"""Versioned YAML prompt templates (libs.llm.templates)."""

import pytest

from libs.llm.templates import PromptTemplate, TemplateError, load_templates, planned_words, requested_words


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_template_renders_system_and_user_messages(tmp_path):
    template = PromptTemplate.load(
        write(tmp_path / "t.yaml", 'id: t\nversion: "2"\nsystem: Be brief.\nuser: "Task: {{ task }}"\n')
    )
    assert (template.id, template.version) == ("t", "2")
    assert template.render(task="find laws") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Task: find laws"},
    ]


def test_missing_variable_is_an_error(tmp_path):
    template = PromptTemplate.load(write(tmp_path / "t.yaml", 'id: t\nversion: "1"\nuser: "{{ task }} in {{ language }}"\n'))
    with pytest.raises(TemplateError, match="language"):
        template.render(task="x")


def test_template_without_version_is_rejected(tmp_path):
    with pytest.raises(TemplateError):
        PromptTemplate.load(write(tmp_path / "t.yaml", "id: t\nuser: hi\n"))


def test_duplicate_template_ids_are_rejected(tmp_path):
    write(tmp_path / "a.yaml", 'id: same\nversion: "1"\nuser: a\n')
    write(tmp_path / "b.yaml", 'id: same\nversion: "1"\nuser: b\n')
    with pytest.raises(TemplateError, match="duplicate"):
        load_templates(tmp_path)


CAPPED = """id: capped
version: "1"
length_caps: {doc: num_words}
attributes: {num_words: [50, at least 200]}
json_schema:
  type: object
  properties: {query: {type: string}, doc: {type: string}}
user: "{{ task }}"
"""


def test_length_caps_bound_the_capped_texts_in_characters_of_the_language(tmp_path):
    template = PromptTemplate.load(write(tmp_path / "t.yaml", CAPPED))
    english = template.schema_for({"num_words": "50", "language": "en"})
    assert english["properties"] == {
        "query": {"type": "string"},
        "doc": {"type": "string", "maxLength": 450},
    }  # 75 words x 6 characters
    assert (
        template.schema_for({"num_words": "at least 200", "language": "zh"})["properties"]["doc"]["maxLength"] == 510
    )  # 300 words x 1.7 characters
    assert "maxLength" not in template.json_schema["properties"]["doc"]  # the template's own schema is untouched


def test_a_length_cap_on_an_unknown_property_or_attribute_is_rejected(tmp_path):
    with pytest.raises(TemplateError, match="length cap"):
        PromptTemplate.load(write(tmp_path / "t.yaml", CAPPED.replace("{doc: num_words}", "{body: num_words}")))
    with pytest.raises(TemplateError, match="length cap"):
        PromptTemplate.load(write(tmp_path / "t.yaml", CAPPED.replace("{doc: num_words}", "{doc: size}")))


EXAMPLE = """id: ex
version: "1"
example: {category: CATEGORY_RETRIEVAL, query: q, positive: doc, query_words: size}
attributes: {size: [less than 5 words]}
json_schema:
  type: object
  properties: {q: {type: string}, doc: {type: string}}
  required: [q, doc]
user: "{{ task }}"
"""


def test_an_example_map_names_required_keys_and_sampled_attributes(tmp_path):
    template = PromptTemplate.load(write(tmp_path / "t.yaml", EXAMPLE))
    assert (template.example.query, template.example.positive, template.example.negative) == ("q", "doc", "")
    with pytest.raises(TemplateError, match="user_query"):
        PromptTemplate.load(write(tmp_path / "t.yaml", EXAMPLE.replace("query: q,", "query: user_query,")))
    with pytest.raises(TemplateError, match="length"):
        PromptTemplate.load(write(tmp_path / "t.yaml", EXAMPLE.replace("query_words: size", "query_words: length")))
    with pytest.raises(TemplateError, match="category"):
        PromptTemplate.load(write(tmp_path / "t.yaml", EXAMPLE.replace("CATEGORY_RETRIEVAL", "CATEGORY_POETRY")))


@pytest.mark.parametrize(
    ("value", "bounds", "planned"),
    [("less than 5 words", (1, 4), 4), ("5 to 15 words", (5, 15), 15), ("at least 10 words", (10, 0), 10),
     ("at most 8", (1, 8), 8), ("200", (200, 200), 200), ("any", None, 0)],
)  # fmt: skip
def test_requested_word_counts_are_read_from_attributes(value, bounds, planned):
    assert requested_words(value) == bounds
    assert planned_words(value) == planned
