"""taskgen against the real broker and a loopback gRPC server (its build()); brainstorms come
from a recorded-response provider registered in litellm (recorded.py)."""

import json
import uuid

import grpc
import litellm
import pytest

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import taskgen_pb2 as api
from embedforge.v1 import taskgen_pb2_grpc as api_grpc
from libs import topics
from libs.kafka import ProtoProducer
from services.taskgen.brainstorm import Brainstormer
from services.taskgen.jobs import JobStore
from services.taskgen.service import TaskgenRunner, build
from services.taskgen.settings import TaskgenSettings
from tests.services.examplegen.harness import Running, TopicReader, send
from tests.services.taskgen.recorded import register_script


def ideas(start: int, count: int) -> str:
    return json.dumps([f"Retrieve court rulings about lease dispute number {n}" for n in range(start, start + count)])


def settings_for(kafka_settings, state_dir, **overrides) -> TaskgenSettings:
    return TaskgenSettings(
        kafka=kafka_settings.model_dump(),
        state_dir=str(state_dir),
        llm={"model": "scripted/brainstorm", "attempts": 1},
        **overrides,
    )


def spec(**fields) -> pb.JobSpec:
    values = {
        "domain": "tenancy law",
        "categories": [
            pb.CategoryTarget(category=pb.CATEGORY_RETRIEVAL, num_tasks=4, examples_per_task=3),
            pb.CategoryTarget(category=pb.CATEGORY_STS, num_tasks=2, examples_per_task=5),
        ],
        "languages": [pb.LanguageWeight(language="en", weight=1)],
        "generator_model": "local/smollm2",
        "seed": 9,
    }
    values.update(fields)
    return pb.JobSpec(**values)


@pytest.fixture
def task_reader(kafka_settings):
    reader = TopicReader(kafka_settings, topics.TASKS)
    yield reader
    reader.close()


def test_invalid_job_is_refused_with_invalid_argument(kafka_settings, tmp_path):
    register_script([])
    with Running(build(settings_for(kafka_settings, tmp_path))) as running:
        stub = api_grpc.TaskgenServiceStub(running.channel())
        bad_specs = {
            "domain": spec(domain=" "),
            "categories[0].category": spec(
                categories=[pb.CategoryTarget(category=pb.CATEGORY_CORPUS_GROUNDED, num_tasks=1, examples_per_task=1)]
            ),
            "num_tasks": spec(categories=[pb.CategoryTarget(category=pb.CATEGORY_RETRIEVAL, num_tasks=0, examples_per_task=1)]),
            "languages[0]": spec(languages=[pb.LanguageWeight(language="en", weight=-1)]),
            "nothing to generate": spec(categories=[]),
            "corpus_chunk_words": spec(corpus_chunk_words=-1),
        }
        for expected, bad in bad_specs.items():
            with pytest.raises(grpc.RpcError) as error:
                stub.SubmitJob(api.SubmitJobRequest(spec=bad))
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert expected in error.value.details()


def test_submitted_job_is_brainstormed_into_distinct_tasks_until_each_target_is_met(kafka_settings, tmp_path, task_reader):
    """Rounds repeat (continuous mode) until 4 distinct retrieval tasks exist; duplicates are dropped."""
    provider = register_script([ideas(0, 2), ideas(1, 2), ideas(2, 3)])
    with Running(build(settings_for(kafka_settings, tmp_path))) as running:
        stub = api_grpc.TaskgenServiceStub(running.channel())
        job = stub.SubmitJob(api.SubmitJobRequest(spec=spec(), job_id="job-" + uuid.uuid4().hex[:6])).job
        tasks = task_reader.wait_for(lambda m: len(m) >= 6)
        status = stub.GetJob(api.GetJobRequest(job_id=job.job_id)).job
        while status.state != api.JOB_STATE_GENERATING:
            status = next(iter(stub.WatchJob(api.WatchJobRequest(job_id=job.job_id)))).job
    assert len(provider.prompts) == 3
    retrieval = [t for t in tasks if t.category == pb.CATEGORY_RETRIEVAL]
    assert sorted(t.description for t in retrieval) == [
        f"Retrieve court rulings about lease dispute number {n}" for n in range(4)
    ]
    assert len({t.task_id for t in tasks}) == 6
    sts = [t for t in tasks if t.category == pb.CATEGORY_STS]
    assert [t.description for t in sts] == ["Retrieve semantically similar text."] * 2
    for t in retrieval:
        assert (t.job_id, t.num_examples, t.generator_model, t.seed, t.brainstorm_model) == (
            job.job_id,
            3,
            "local/smollm2",
            9,
            "scripted/brainstorm",
        )
        assert (t.template_id, t.template_version) == ("brainstorm_retrieval", "2")
        assert [lw.language for lw in t.languages] == ["en"]
    assert (status.tasks_target, status.tasks_published, status.examples_target) == (6, 6, 22)
    assert status.usage[0].model == "scripted/brainstorm" and status.usage[0].calls == 3


def test_a_job_whose_brainstorm_calls_all_fail_fails_with_the_reason(kafka_settings, tmp_path):
    outage = litellm.ServiceUnavailableError(message="upstream overloaded", llm_provider="scripted", model="brainstorm")
    provider = register_script([outage, outage])
    job_spec = spec(categories=[pb.CategoryTarget(category=pb.CATEGORY_RETRIEVAL, num_tasks=2, examples_per_task=3)])
    with Running(build(settings_for(kafka_settings, tmp_path, max_rounds_per_category=2))) as running:
        stub = api_grpc.TaskgenServiceStub(running.channel())
        job = stub.SubmitJob(api.SubmitJobRequest(spec=job_spec, job_id="job-" + uuid.uuid4().hex[:6])).job
        for update in stub.WatchJob(api.WatchJobRequest(job_id=job.job_id), timeout=60):
            if update.job.state in (api.JOB_STATE_GENERATING, api.JOB_STATE_FAILED):
                break
    assert len(provider.prompts) == 2
    assert update.job.state == api.JOB_STATE_FAILED
    assert (
        "CATEGORY_RETRIEVAL: 0 of 2 tasks" in update.job.error
        and "server_error" in update.job.error
        and "upstream overloaded" in update.job.error
    )


def test_jobs_arriving_on_the_jobs_topic_are_brainstormed(kafka_settings, tmp_path, task_reader):
    register_script([ideas(0, 4)])
    job = pb.Job(
        job_id="job-kafka-" + uuid.uuid4().hex[:6],
        spec=spec(categories=[pb.CategoryTarget(category=pb.CATEGORY_RETRIEVAL, num_tasks=4, examples_per_task=1)]),
    )
    with Running(build(settings_for(kafka_settings, tmp_path))) as running:
        send(kafka_settings, topics.JOBS, job.job_id, job)
        tasks = task_reader.wait_for(lambda m: len(m) >= 4)
        listed = api_grpc.TaskgenServiceStub(running.channel()).ListJobs(api.ListJobsRequest()).jobs
    assert {t.job_id for t in tasks} == {job.job_id}
    assert [j.job_id for j in listed] == [job.job_id]


def test_invalid_job_on_the_jobs_topic_is_dead_lettered(kafka_settings, tmp_path):
    register_script([])
    dead = TopicReader(kafka_settings, topics.DEAD_LETTER)
    job = pb.Job(job_id="job-bad", spec=pb.JobSpec(domain=""))
    with Running(build(settings_for(kafka_settings, tmp_path))):
        send(kafka_settings, topics.JOBS, job.job_id, job)
        letters = dead.wait_for(lambda m: len(m) >= 1)
    dead.close()
    assert letters[0].reason == "handler_error" and "spec.domain" in letters[0].detail


def test_restart_mid_job_resumes_without_redoing_or_duplicating_tasks(kafka_settings, tmp_path, task_reader):
    job = pb.Job(
        job_id="job-restart",
        spec=spec(categories=[pb.CategoryTarget(category=pb.CATEGORY_RETRIEVAL, num_tasks=6, examples_per_task=1)]),
    )
    settings = settings_for(kafka_settings, tmp_path)
    producer = ProtoProducer(kafka_settings, client_id="test-taskgen")
    brainstormer = Brainstormer(settings.llm, 256, 1.0)

    store = JobStore(tmp_path)
    store.add(job)
    first = TaskgenRunner(store, producer, brainstormer, settings)
    register_script([ideas(0, 3), ideas(3, 3)], on_call=lambda n: first.stop.set() if n == 2 else None)
    first.process(job.job_id)  # the second call "crashes" the process before its tasks are published
    assert len(task_reader.wait_for(lambda m: len(m) >= 3)) == 3
    assert store.get(job.job_id).state == api.JOB_STATE_BRAINSTORMING

    provider = register_script([ideas(0, 6)])  # the new process brainstorms again; old ideas come back too
    with Running(build(settings)) as running:
        send(kafka_settings, topics.JOBS, job.job_id, job)  # the job is also redelivered
        tasks = task_reader.wait_for(lambda m: len(m) >= 6)
        stub = api_grpc.TaskgenServiceStub(running.channel())
        status = stub.GetJob(api.GetJobRequest(job_id=job.job_id)).job
        while status.state != api.JOB_STATE_GENERATING:
            status = next(iter(stub.WatchJob(api.WatchJobRequest(job_id=job.job_id)))).job
        tasks = task_reader.settle(2.0)
    producer.close()
    assert len(provider.prompts) == 1
    assert len(tasks) == 6 and len({t.task_id for t in tasks}) == 6
    assert status.tasks_published == 6


def test_job_progress_follows_downstream_topics_until_the_model_is_ready(kafka_settings, tmp_path):
    register_script([ideas(0, 1)])
    job_id = "job-progress-" + uuid.uuid4().hex[:6]
    with Running(build(settings_for(kafka_settings, tmp_path))) as running:
        stub = api_grpc.TaskgenServiceStub(running.channel())
        categories = [pb.CategoryTarget(category=pb.CATEGORY_RETRIEVAL, num_tasks=1, examples_per_task=2)]
        stub.SubmitJob(
            api.SubmitJobRequest(job_id=job_id, spec=spec(categories=categories, training=pb.TrainingSpec(auto_start=True)))
        )
        usage = pb.LlmUsage(model="local/smollm2", prompt_tokens=100, completion_tokens=40, calls=1)
        send(
            kafka_settings, topics.EXAMPLES_RAW, "e1", pb.RawExample(example_id="e1", job_id=job_id, raw_output="{}", usage=usage)
        )
        send(
            kafka_settings,
            topics.EXAMPLES_RAW,
            "e2",
            pb.RawExample(
                example_id="e2", job_id=job_id, error="timeout: slow", usage=pb.LlmUsage(model="local/smollm2", calls=2)
            ),
        )
        send(kafka_settings, topics.EXAMPLES_CURATED, "c1", pb.CuratedExample(content_hash="c1", job_id=job_id))
        send(
            kafka_settings,
            topics.EXAMPLES_REJECTED,
            "e2",
            pb.RejectedExample(example_id="e2", job_id=job_id, reason="generation_failed"),
        )
        counted = None
        for update in stub.WatchJob(api.WatchJobRequest(job_id=job_id), timeout=60):
            counted = update.job
            if (counted.examples_generated, counted.examples_accepted, counted.examples_rejected) == (
                1,
                1,
                1,
            ) and counted.state == api.JOB_STATE_TRAINING:
                break  # every planned example has a curator outcome and the trainer auto-starts
        send(kafka_settings, topics.MODELS, "m1", pb.ModelReady(model_id="m1", job_id=job_id))
        final = [u.job for u in stub.WatchJob(api.WatchJobRequest(job_id=job_id), timeout=60)][-1]
    assert (counted.examples_generated, counted.examples_accepted, counted.examples_rejected, counted.state) == (
        1,
        1,
        1,
        api.JOB_STATE_TRAINING,
    )
    assert final.state == api.JOB_STATE_SUCCEEDED and final.model_id == "m1"
    local = next(u for u in final.usage if u.model == "local/smollm2")
    assert (local.prompt_tokens, local.completion_tokens, local.calls) == (100, 40, 3)


def test_resubmitting_a_job_id_returns_the_existing_job(kafka_settings, tmp_path):
    register_script([ideas(0, 4)])
    with Running(build(settings_for(kafka_settings, tmp_path))) as running:
        stub = api_grpc.TaskgenServiceStub(running.channel())
        first = stub.SubmitJob(api.SubmitJobRequest(job_id="same-job", spec=spec())).job
        second = stub.SubmitJob(api.SubmitJobRequest(job_id="same-job", spec=spec(domain="other"))).job
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetJob(api.GetJobRequest(job_id="nope"))
    assert second.spec.domain == first.spec.domain == "tenancy law"
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_corpus_job_without_a_task_gets_a_drafted_one_on_forge_jobs_and_in_get_job(kafka_settings, tmp_path):
    drafted = "Given a tenant's question about a deposit, retrieve court rulings that answer it"
    provider = register_script([json.dumps({"task": drafted})])
    jobs = TopicReader(kafka_settings, topics.JOBS)
    with Running(build(settings_for(kafka_settings, tmp_path))) as running:
        stub = api_grpc.TaskgenServiceStub(running.channel())
        job_id = "corpus-" + uuid.uuid4().hex[:6]
        examples = ["can my landlord keep the deposit"]
        stub.SubmitJob(api.SubmitJobRequest(job_id=job_id, spec=spec(categories=[], corpus_queries=3, example_queries=examples)))
        own = spec(categories=[], corpus_queries=3, task="Given a claim, retrieve rulings")
        given = stub.SubmitJob(api.SubmitJobRequest(job_id=job_id + "-own", spec=own)).job
        status = stub.GetJob(api.GetJobRequest(job_id=job_id)).job
        published = jobs.wait_for(lambda messages: any(m.job_id == job_id for m in messages))
    jobs.close()
    assert status.spec.task == drafted and given.spec.task == "Given a claim, retrieve rulings"
    assert next(m for m in published if m.job_id == job_id).spec.task == drafted
    assert len(provider.prompts) == 1 and "- can my landlord keep the deposit" in provider.prompts[0]  # a given task: no call
