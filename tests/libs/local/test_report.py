"""The run report is written as Markdown, JSON and a PNG loss curve with the numbers given."""

import json

from libs.local.report import write_report

TASK = "Given a question, retrieve help articles that answer it"


def sample_report() -> dict:
    return {
        "job": {"job_id": "job-1", "name": "demo", "domain": "home batteries", "task": TASK},
        "timings": {"total_s": 321.0},
        "generation": {"requested": 12, "succeeded": 11, "failed": 1, "failures_by_reason": {"timeout": 1}},
        "curation": {
            "accepted": 9,
            "rejected": 2,
            "rejected_by_reason": {"invalid_json": 2},
            "accepted_by_language": {"en": 7, "zh": 2},
        },
        "usage": [
            {
                "stage": "examples",
                "model": "local/qwen",
                "calls": 12,
                "prompt_tokens": 3000,
                "completion_tokens": 2000,
                "cost_usd": 0.0,
            }
        ],
        "training": {
            "run_id": "run-1",
            "steps": 3,
            "train_examples": 8,
            "dev_examples": 1,
            "loss_curve": [[1, 2.5], [2, 1.75], [3, 1.25]],
        },
        "evaluation": [{"dataset": "dev", "metric": "ndcg@10", "base": 0.5, "tuned": 0.625, "difference_se": 0.04}],
        "model": {"model_id": "m-1", "uri": "s3://bucket/models/m-1", "manifest_digest": "ab" * 32},
        "index": {"collection": "demo", "points": 42},
        "sample_search": {
            "query": "battery shows red",
            "hits": [{"score": 0.9, "doc_id": "03-error-codes.md", "text": "E01 | over-voltage"}],
        },
    }


def test_report_files_hold_the_run_numbers(tmp_path):
    paths = write_report(sample_report(), tmp_path)
    markdown = paths["markdown"].read_text()
    assert f"Task (the query instruction): {TASK}" in markdown
    for fragment in (
        "| 11 | 1 | 9 | 2 |",
        "| invalid_json | 2 |",
        "| dev | ndcg@10 | 0.5000 | 0.6250 | +0.1250 ± 0.0400 |",
        "42 points",
        "Loss 2.5000 -> 1.2500",
        "E01 / over-voltage",
    ):
        assert fragment in markdown
    assert json.loads(paths["json"].read_text())["curation"]["accepted"] == 9
    assert paths["loss_curve"].read_bytes().startswith(b"\x89PNG")
