"""A job's documents in object storage (issue 16): taskgen admits a corpus_path URI under its URI
data root, examplegen downloads what it names (libs.fetch) and cuts it into chunks. Real broker,
moto's S3 server on loopback (the s3_server fixture), taskgen and examplegen in-process."""

import json

import boto3
import grpc
import pytest

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import taskgen_pb2 as api
from embedforge.v1 import taskgen_pb2_grpc as api_grpc
from libs import topics
from libs.jobspec import default_task
from services.examplegen.service import build as build_examplegen
from services.taskgen.service import build as build_taskgen
from tests.services.examplegen.harness import Running, TopicReader, send
from tests.services.examplegen.recorded import register_recorded
from tests.services.examplegen.test_service import settings_for as examplegen_settings
from tests.services.taskgen.recorded import register_script
from tests.services.taskgen.test_service import settings_for as taskgen_settings

DOCS = [{"_id": f"d{i}", "title": f"Doc {i}", "text": f"Paragraph about breakwater design {i}. " * 5} for i in range(3)]


@pytest.fixture
def bucket(s3_server) -> str:
    """A bucket with the job's documents under corpora/ (JSONL and a folder of notes) and a file beside it."""
    uri = s3_server.bucket()
    s3 = boto3.client("s3")
    name = uri.removeprefix("s3://")
    s3.put_object(Bucket=name, Key="corpora/coastal/docs.jsonl", Body="\n".join(json.dumps(d) for d in DOCS).encode())
    s3.put_object(Bucket=name, Key="corpora/notes/a.md", Body=b"# Tides\nTides rise and fall twice a day.")
    s3.put_object(Bucket=name, Key="corpora/notes/b.txt", Body=b"Groynes trap sand moving along the shore.")
    s3.put_object(Bucket=name, Key="private/other.jsonl", Body=b'{"text": "not for this service"}\n')
    return uri


def corpus_job(path: str, queries: int = 4) -> pb.JobSpec:
    return pb.JobSpec(
        domain="coastal engineering",
        corpus_path=path,
        corpus_queries=queries,
        seed=1,
        languages=[pb.LanguageWeight(language="en", weight=1)],
    )


def test_a_job_with_an_s3_corpus_under_the_data_root_gets_chunks_of_those_documents(kafka_settings, tmp_path, bucket):
    register_script([])
    register_recorded()
    roots = {"roots": [f"{bucket}/corpora"]}
    chunks = TopicReader(kafka_settings, topics.CORPUS_CHUNKS)
    with (
        Running(build_taskgen(taskgen_settings(kafka_settings, tmp_path / "taskgen", data=roots))) as taskgen,
        Running(build_examplegen(examplegen_settings(kafka_settings, tmp_path / "examplegen", data=roots))),
    ):
        stub = api_grpc.TaskgenServiceStub(taskgen.channel())
        job = stub.SubmitJob(api.SubmitJobRequest(spec=corpus_job(f"{bucket}/corpora/coastal/docs.jsonl"))).job
        notes = stub.SubmitJob(api.SubmitJobRequest(spec=corpus_job(f"{bucket}/corpora/notes/", queries=2))).job
        published = chunks.wait_for(lambda m: {c.job_id for c in m} == {job.job_id, notes.job_id} and len(m) >= 5)
    chunks.close()
    by_job = {c.job_id: c for c in published}
    assert {c.doc_id for c in published if c.job_id == job.job_id} == {"d0", "d1", "d2"}
    assert sorted(c.num_queries for c in published if c.job_id == job.job_id) == [1, 1, 2]
    assert {c.text for c in published if c.job_id == job.job_id} == {" ".join(d["text"].split()) for d in DOCS}
    assert {(c.doc_id, c.title) for c in published if c.job_id == notes.job_id} == {("a.md", "Tides"), ("b.txt", "b")}
    assert by_job[job.job_id].task_description == default_task("coastal engineering")
    assert not [p for p in (tmp_path / "examplegen" / "fetched").rglob("*") if p.is_file()]  # downloads are read, then removed


@pytest.mark.parametrize("where", ["private/other.jsonl", "corpora/../private/other.jsonl", "corpora2/x.jsonl"])
def test_a_job_with_a_uri_outside_the_data_root_is_refused_before_anything_is_published_or_stored(
    kafka_settings, tmp_path, bucket, where
):
    register_script([])
    taskgen_state = tmp_path / "taskgen"
    jobs = TopicReader(kafka_settings, topics.JOBS)
    with Running(
        build_taskgen(taskgen_settings(kafka_settings, taskgen_state, data={"roots": [f"{bucket}/corpora"]}))
    ) as taskgen:
        stub = api_grpc.TaskgenServiceStub(taskgen.channel())
        before = sorted(p for p in taskgen_state.rglob("*") if p.is_file())
        with pytest.raises(grpc.RpcError) as error:
            stub.SubmitJob(api.SubmitJobRequest(job_id="outside", spec=corpus_job(f"{bucket}/{where}")))
        after = sorted(p for p in taskgen_state.rglob("*") if p.is_file())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("spec.corpus_path is not a regular file or folder under the data roots")
    assert after == before
    assert jobs.settle(2.0) == []
    jobs.close()


def test_a_job_put_on_the_topic_with_a_uri_outside_the_root_is_dead_lettered_and_nothing_is_downloaded(
    kafka_settings, tmp_path, bucket
):
    """Past taskgen's checks (a job written to forge.jobs directly), examplegen checks again."""
    register_recorded()
    job = pb.Job(job_id="job-s3-outside", spec=corpus_job(f"{bucket}/private/other.jsonl"))
    dead, chunks = TopicReader(kafka_settings, topics.DEAD_LETTER), TopicReader(kafka_settings, topics.CORPUS_CHUNKS)
    with Running(
        build_examplegen(examplegen_settings(kafka_settings, tmp_path / "examplegen", data={"roots": [f"{bucket}/corpora"]}))
    ):
        send(kafka_settings, topics.JOBS, job.job_id, job)
        letters = dead.wait_for(lambda m: len(m) >= 1)
        published = chunks.settle(1.0)
    dead.close()
    chunks.close()
    assert "spec.corpus_path is not a regular file or folder under the data roots" in letters[0].detail
    assert published == []
    assert not [p for p in (tmp_path / "examplegen").rglob("*") if p.is_file() and "fetched" in p.parts]
