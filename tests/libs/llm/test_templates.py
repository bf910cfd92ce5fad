"""Versioned YAML prompt templates (libs.llm.templates)."""

import pytest

from libs.llm.templates import PromptTemplate, TemplateError, load_templates


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_template_renders_system_and_user_messages(tmp_path):
    template = PromptTemplate.load(write(tmp_path / "t.yaml", 'id: t\nversion: "2"\nsystem: Be brief.\nuser: "Task: {{ task }}"\n'))
    assert (template.id, template.version) == ("t", "2")
    assert template.render(task="find laws") == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Task: find laws"}]


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
