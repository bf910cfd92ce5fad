"""Request bounds (libs/limits.py) and the id format (libs/ids.py), on real messages."""

import pytest

from embedforge.v1 import curator_pb2, embedder_pb2, taskgen_pb2
from embedforge.v1 import messages_pb2 as pb
from libs import ids, limits


def test_nested_strings_and_repeated_fields_are_bounded_by_their_full_name():
    limits.check(taskgen_pb2.SubmitJobRequest(spec=pb.JobSpec(domain="d" * 10_000)))
    with pytest.raises(ValueError, match=r"^spec.domain has 10001 characters; at most 10000 are allowed$"):
        limits.check(taskgen_pb2.SubmitJobRequest(spec=pb.JobSpec(domain="d" * 10_001)))
    with pytest.raises(ValueError, match=r"^spec.categories has 17 items; at most 16"):
        limits.check(taskgen_pb2.SubmitJobRequest(spec=pb.JobSpec(categories=[pb.CategoryTarget()] * 17)))
    with pytest.raises(ValueError, match=r"^spec.training.base_model has 1025 characters"):
        limits.check(taskgen_pb2.SubmitJobRequest(spec=pb.JobSpec(training=pb.TrainingSpec(base_model="/" * 1025))))


def test_map_fields_are_bounded_in_entries_keys_and_values():
    with pytest.raises(ValueError, match=r"^filter has 33 items"):
        limits.check(embedder_pb2.SearchRequest(filter={str(i): "v" for i in range(33)}))
    with pytest.raises(ValueError, match=r"^filter\['k'\] has 1025 characters"):
        limits.check(embedder_pb2.SearchRequest(filter={"k": "v" * 1025}))


def test_a_field_without_an_entry_gets_the_default_bound():
    with pytest.raises(ValueError, match=f"^generator_model has {limits.DEFAULT.chars + 1} characters"):
        limits.check(pb.Task(generator_model="m" * (limits.DEFAULT.chars + 1)))


def test_a_client_stream_is_bounded_as_a_whole():
    chunk = curator_pb2.ImportDatasetRequest(job_id="j", jsonl=b"x" * (4 * 1024 * 1024))
    stream = limits.bounded_stream(iter([chunk] * 100))
    with pytest.raises(ValueError, match="request stream too large"):
        for _ in stream:
            pass


def test_pages_follow_the_last_key_served_so_new_items_do_not_shift_them():
    def jobs(*names):
        return [taskgen_pb2.JobStatus(job_id=n) for n in names]

    def key(job):
        return job.job_id

    page, token = limits.paginate(jobs("b", "d", "f"), key, 2, "")
    assert ([j.job_id for j in page], token) == (["b", "d"], "d")
    page, token = limits.paginate(jobs("a", "b", "d", "f"), key, 2, token)  # "a" arrived meanwhile: no repeat
    assert ([j.job_id for j in page], token) == (["f"], "")
    with pytest.raises(ValueError, match="page_size must be between 0"):
        limits.page_size(-1)
    assert limits.page_size(0) == limits.DEFAULT_PAGE_SIZE


@pytest.mark.parametrize(
    "value", ["", ".", "..", "a..b", "/abs", "a/b", "a\\b", "-lead", ".hidden", "nul\x00", "sp ace", "é", "a" * 129]
)
def test_ids_that_could_name_another_folder_or_are_too_long_are_refused(value):
    assert not ids.is_valid(value)
    with pytest.raises(ValueError, match="^run_id is not a valid id"):
        ids.check(value, "run_id")


def test_derived_ids_stay_valid_and_distinct_however_long_their_parts():
    long_job = "j" * 128
    assert ids.derive("job1", "auto") == "job1-auto"
    derived = {ids.derive(long_job, "auto"), ids.derive(long_job, "run-1"), ids.derive(long_job, "run-2")}
    assert len(derived) == 3 and all(ids.is_valid(d) for d in derived)


def test_a_model_id_names_the_job_once():
    assert ids.model_id("job1", "job1-auto") == "job1-auto"
    assert ids.model_id("job1", "run-7") == "job1-run-7"
    assert ids.model_id("job1", "job10-run") == "job1-job10-run"
