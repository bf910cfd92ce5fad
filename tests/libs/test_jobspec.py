"""Job spec YAML files map onto the JobSpec contract, and mistakes are named."""

import pytest

from embedforge.v1 import messages_pb2 as pb
from libs.jobspec import job_spec_from_dict, load_job_spec


def test_yaml_job_spec_maps_languages_categories_training_and_resolves_paths(tmp_path):
    (tmp_path / "job.yaml").write_text(
        """
name: support
domain: Customer support for a cloud storage product
languages: {en: 0.7, zh: 0.3}
categories:
  retrieval: {tasks: 3, examples_per_task: 5}
  sts: {examples_per_task: 4}
corpus_path: docs
eval_paths: [eval/beir]
generator_model: local/qwen2.5-0.5b-instruct
training: {base_model: all-MiniLM-L6-v2, max_steps: 40, learning_rate: 5.0e-5, use_lora: false}
"""
    )
    spec = load_job_spec(tmp_path / "job.yaml")
    assert [(lw.language, lw.weight) for lw in spec.languages] == [("en", 0.7), ("zh", 0.3)]
    assert [(c.category, c.num_tasks, c.examples_per_task) for c in spec.categories] == [
        (pb.CATEGORY_RETRIEVAL, 3, 5),
        (pb.CATEGORY_STS, 0, 4),
    ]
    assert spec.corpus_path == str(tmp_path / "docs")
    assert list(spec.eval_paths) == [str(tmp_path / "eval" / "beir")]
    assert spec.training.max_steps == 40 and spec.training.learning_rate == pytest.approx(5e-5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"domain": "x", "colection": "typo"}, 'no field named "colection"'),
        ({"domain": "x", "categories": {"retrival": {}}}, "unknown category 'retrival'"),
        ({"domain": "x", "categories": {"retrieval": {"task": 1}}}, "unknown keys ['task']"),
        ({"domain": "x", "training": {"max_steps": "many"}}, "invalid job spec"),
        ({"domain": "  "}, "'domain' must describe the domain"),
    ],
)
def test_mistakes_in_a_job_spec_are_reported_by_name(data, message):
    with pytest.raises(ValueError, match=None) as error:
        job_spec_from_dict(data)
    assert message in str(error.value)


def test_object_uris_in_a_job_spec_are_kept_as_they_are_and_become_local_data_roots(tmp_path):
    from libs.local.runtime import job_data_roots

    spec = job_spec_from_dict(
        {"domain": "x", "corpus_path": "s3://corpora/team/docs.jsonl", "eval_paths": ["gs://evals/beir/", "eval/sts.tsv"]},
        tmp_path,
    )
    assert spec.corpus_path == "s3://corpora/team/docs.jsonl"
    assert list(spec.eval_paths) == ["gs://evals/beir/", str(tmp_path / "eval" / "sts.tsv")]
    assert job_data_roots(spec) == ("s3://corpora/team/docs.jsonl", "gs://evals/beir/", tmp_path / "eval" / "sts.tsv")
