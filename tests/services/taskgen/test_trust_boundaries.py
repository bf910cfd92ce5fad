"""taskgen's API as a hostile client would use it (issue 16), against the real broker and a
loopback server: refused with INVALID_ARGUMENT and a clear message, and no trace left in the
state dir, on the filesystem or on forge.jobs / forge.documents."""

import os
import time
import uuid

import grpc
import pytest

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import taskgen_pb2 as api
from embedforge.v1 import taskgen_pb2_grpc as api_grpc
from libs import topics
from services.taskgen.service import build
from tests.services.examplegen.harness import Running, TopicReader, send
from tests.services.taskgen.recorded import register_script
from tests.services.taskgen.test_service import settings_for, spec


@pytest.fixture
def taskgen(kafka_settings, tmp_path):
    """A running taskgen whose only data root is tmp_path/data: its stub, readers of its output
    topics and its address."""
    register_script([])
    (tmp_path / "data").mkdir()
    settings = settings_for(kafka_settings, tmp_path / "state", data={"roots": [str(tmp_path / "data")]})
    jobs, documents = TopicReader(kafka_settings, topics.JOBS), TopicReader(kafka_settings, topics.DOCUMENTS)
    with Running(build(settings)) as running:
        yield api_grpc.TaskgenServiceStub(running.channel()), jobs, documents, f"127.0.0.1:{running.server.port}"
    jobs.close()
    documents.close()


def refused(call) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    return error.value.details()


def state_files(tmp_path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "state").rglob("*") if p.is_file())


def test_a_job_id_that_is_a_path_or_too_long_or_holds_nul_is_refused_and_writes_nothing(taskgen, tmp_path):
    stub, jobs, _, _ = taskgen
    before = state_files(tmp_path)
    for job_id in (str(tmp_path / "x" / "abs-escape"), "../../escape", "a" * 300, "job\x00nul", "..", "a/b"):
        message = refused(lambda: stub.SubmitJob(api.SubmitJobRequest(job_id=job_id, spec=spec())))
        assert message.startswith("job_id ") and "escape" not in message
    assert not (tmp_path / "x").exists() and not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()
    assert state_files(tmp_path) == before
    assert jobs.settle(2.0) == []


def test_job_ids_are_never_folder_names(taskgen, tmp_path):
    stub, jobs, _, _ = taskgen
    stub.SubmitJob(api.SubmitJobRequest(job_id="Job.1_ok-" + uuid.uuid4().hex[:6], spec=spec()))
    assert [p.name for p in (tmp_path / "state" / "jobs").iterdir()] != ["Job.1_ok"]
    assert len(jobs.wait_for(lambda m: len(m) == 1)) == 1


def test_paths_outside_the_data_roots_are_refused_alike_whether_or_not_they_exist(taskgen, tmp_path):
    stub, jobs, _, _ = taskgen
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", tmp_path / "data" / "link.txt")
    os.mkfifo(tmp_path / "data" / "fifo")
    probes = {
        "existing file outside": str(tmp_path / "secret.txt"),
        "missing file outside": str(tmp_path / "missing.txt"),
        "/etc": "/etc",
        "relative escape": "../../../../etc",
        "escape through the root": str(tmp_path / "data" / ".." / "secret.txt"),
        "link out of the root": str(tmp_path / "data" / "link.txt"),
        "missing inside the root": str(tmp_path / "data" / "missing.txt"),
        "fifo inside the root": str(tmp_path / "data" / "fifo"),
    }
    messages = set()
    for path in probes.values():
        job = spec(corpus_path=path, corpus_queries=1)
        messages.add(refused(lambda: stub.SubmitJob(api.SubmitJobRequest(spec=job))))
        messages.add(
            refused(lambda: stub.SubmitJob(api.SubmitJobRequest(spec=spec(eval_paths=[path])))).replace(
                "spec.eval_paths[0]", "spec.corpus_path"
            )
        )
    (message,) = messages  # one message for every refusal: it tells nothing about the path
    assert message.startswith("spec.corpus_path is not a regular file or folder under the data roots")
    assert jobs.settle(2.0) == []


def test_a_path_inside_a_data_root_is_accepted(taskgen, tmp_path):
    stub, jobs, _, _ = taskgen
    (tmp_path / "data" / "docs.jsonl").write_text('{"_id": "d1", "text": "some text"}\n')
    job = stub.SubmitJob(api.SubmitJobRequest(spec=spec(corpus_path=str(tmp_path / "data" / "docs.jsonl"), corpus_queries=1))).job
    assert [j.job_id for j in jobs.wait_for(lambda m: len(m) == 1)] == [job.job_id]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"domain": "x" * 9_000_000}, "spec.domain has 9000000 characters; at most 10000 are allowed"),
        ({"eval_paths": ["/data/e"] * 17}, "spec.eval_paths has 17 items; at most 16 are allowed"),
        ({"name": "n" * 5000}, "spec.name has 5000 characters"),
        ({"languages": [pb.LanguageWeight(language="e" * 100, weight=1)]}, "spec.languages[0].language has 100 characters"),
    ],
)
def test_oversized_fields_are_refused_before_anything_is_kept_or_published(taskgen, tmp_path, fields, expected):
    stub, jobs, _, _ = taskgen
    assert expected in refused(lambda: stub.SubmitJob(api.SubmitJobRequest(job_id="big", spec=spec(**fields))))
    assert state_files(tmp_path) == []
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetJob(api.GetJobRequest(job_id="big"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert jobs.settle(2.0) == []


def test_a_message_over_the_grpc_limit_is_refused_by_size(taskgen):
    stub, jobs, _, _ = taskgen
    with pytest.raises(grpc.RpcError) as error:
        stub.SubmitJob(api.SubmitJobRequest(spec=spec(domain="x" * (17 * 1024 * 1024))))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert jobs.settle(1.0) == []


def test_list_jobs_pages_newest_first_and_refuses_bad_page_sizes(taskgen):
    stub, _, _, _ = taskgen
    submitted = [stub.SubmitJob(api.SubmitJobRequest(job_id=f"page-{i}", spec=spec())).job.job_id for i in range(3)]
    first = stub.ListJobs(api.ListJobsRequest(page_size=2))
    second = stub.ListJobs(api.ListJobsRequest(page_size=2, page_token=first.next_page_token))
    assert [j.job_id for j in first.jobs] + [j.job_id for j in second.jobs] == submitted[::-1]
    assert first.next_page_token and not second.next_page_token
    assert "page_size must be between 0" in refused(lambda: stub.ListJobs(api.ListJobsRequest(page_size=-1)))
    assert "page_size must be between 0" in refused(lambda: stub.ListJobs(api.ListJobsRequest(page_size=101)))


def test_the_largest_jobs_list_in_pages_that_a_default_4_mib_client_can_read(taskgen):
    """Jobs with the longest domain allowed (10,000 four-byte characters) once made ListJobs
    fail for every client with gRPC's default 4 MiB receive limit: a page now stops at 2 MiB."""
    stub, _, _, target = taskgen
    for i in range(70):
        stub.SubmitJob(api.SubmitJobRequest(job_id=f"wide-{i:02d}", spec=spec(domain="\U0001f50b" * 10_000)))
    default_client = api_grpc.TaskgenServiceStub(grpc.insecure_channel(target))
    seen, token, pages = [], "", 0
    while True:
        page = default_client.ListJobs(api.ListJobsRequest(page_size=100, page_token=token))
        assert page.ByteSize() <= 2 * 1024 * 1024
        seen += [j.job_id for j in page.jobs]
        pages, token = pages + 1, page.next_page_token
        if not token:
            break
    assert pages >= 2 and sorted(seen) == [f"wide-{i:02d}" for i in range(70)]


def test_ids_are_checked_on_every_job_rpc(taskgen):
    stub, _, _, _ = taskgen
    assert "job_id is not a valid id" in refused(lambda: stub.GetJob(api.GetJobRequest(job_id="../x")))
    assert "job_id is not a valid id" in refused(lambda: next(iter(stub.WatchJob(api.WatchJobRequest(job_id="/etc/passwd")))))
    assert "spec.collection is not a valid id" in refused(
        lambda: stub.SubmitJob(api.SubmitJobRequest(spec=spec(collection="../qdrant")))
    )


def upload(stub, job_id: str, *documents: pb.Document, per_message: int = 2):
    batches = [documents[i : i + per_message] for i in range(0, len(documents), per_message)]
    return stub.UploadDocuments(
        iter(api.UploadDocumentsRequest(job_id=job_id if i == 0 else "", documents=batch) for i, batch in enumerate(batches))
    )


def test_uploaded_documents_are_published_for_the_job(taskgen):
    stub, _, documents, _ = taskgen
    job = stub.SubmitJob(
        api.SubmitJobRequest(job_id="docs-job", spec=spec(collection="manuals", categories=[], corpus_queries=2))
    ).job
    response = upload(
        stub,
        job.job_id,
        *(pb.Document(doc_id=f"d{i}", title=f"Doc {i}", text=f"text {i}", job_id="someone-else") for i in range(3)),
    )
    published = documents.wait_for(lambda m: len(m) == 3)
    assert response.documents == 3
    assert sorted((d.doc_id, d.job_id, d.collection) for d in published) == [(f"d{i}", "docs-job", "manuals") for i in range(3)]


def test_an_upload_with_one_bad_document_publishes_none(taskgen):
    stub, _, documents, _ = taskgen
    stub.SubmitJob(api.SubmitJobRequest(job_id="docs-bad", spec=spec(categories=[], corpus_queries=2)))
    good = [pb.Document(doc_id=f"d{i}", text="fine") for i in range(3)]
    bad = {
        "has no text": pb.Document(doc_id="empty", text=" "),
        "documents[3].collection is not a valid id": pb.Document(doc_id="c", text="t", collection="../../x"),
        "text has 1000001 characters; at most 1000000 are allowed": pb.Document(doc_id="huge", text="x" * 1_000_001),
        "doc_id is required": pb.Document(text="no id"),
    }
    for expected, document in bad.items():
        assert expected in refused(lambda: upload(stub, "docs-bad", *good, document))
    assert "job_id is required" in refused(lambda: upload(stub, "", *good))
    assert "job_id is not a valid id" in refused(lambda: upload(stub, "../x", *good))
    with pytest.raises(grpc.RpcError) as missing:
        upload(stub, "no-such-job", *good)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert documents.settle(2.0) == []


def progress(stub, job_id: str) -> tuple[int, int, int]:
    status = stub.GetJob(api.GetJobRequest(job_id=job_id)).job
    return status.examples_generated, status.examples_accepted, status.examples_rejected


def assert_settles_at(stub, job_ids: list[str], expected: tuple, timeout_s: float = 60.0) -> None:
    """The counts reach ``expected`` and stay there (a double count would pass it and go on)."""
    deadline = time.monotonic() + timeout_s
    while any(progress(stub, j) != expected for j in job_ids):
        assert time.monotonic() < deadline, {j: progress(stub, j) for j in job_ids}
        time.sleep(0.2)
    time.sleep(3.0)
    assert {j: progress(stub, j) for j in job_ids} == dict.fromkeys(job_ids, expected)


def test_progress_counts_each_example_once_across_replays_and_restarts(kafka_settings, tmp_path):
    """Raw, curated and rejected records delivered again (at-least-once) count once, also after
    taskgen restarts; two jobs with the same curated text each count theirs."""
    register_script([])
    settings = settings_for(kafka_settings, tmp_path)
    job_ids = ["count-a", "count-b"]
    outcomes = [
        (topic, message)
        for job_id in job_ids
        for topic, message in (
            (topics.EXAMPLES_RAW, pb.RawExample(example_id=f"{job_id}-e1", job_id=job_id, raw_output="{}")),
            (topics.EXAMPLES_RAW, pb.RawExample(example_id=f"{job_id}-e2", job_id=job_id, error="timeout: slow")),
            (topics.EXAMPLES_CURATED, pb.CuratedExample(content_hash="same-text", job_id=job_id)),
            (topics.EXAMPLES_REJECTED, pb.RejectedExample(example_id=f"{job_id}-e2", job_id=job_id, reason="generation_failed")),
        )
    ]
    categories = [pb.CategoryTarget(category=pb.CATEGORY_STS, num_tasks=1, examples_per_task=10)]
    with Running(build(settings)) as running:
        stub = api_grpc.TaskgenServiceStub(running.channel())
        for job_id in job_ids:
            stub.SubmitJob(api.SubmitJobRequest(job_id=job_id, spec=spec(categories=categories)))
        for topic, message in outcomes * 2:
            send(kafka_settings, topic, message.job_id, message)
        assert_settles_at(stub, job_ids, (1, 1, 1))
    with Running(build(settings)) as running:  # restarted; the records come once more
        stub = api_grpc.TaskgenServiceStub(running.channel())
        for topic, message in outcomes:
            send(kafka_settings, topic, message.job_id, message)
        assert_settles_at(stub, job_ids, (1, 1, 1))
