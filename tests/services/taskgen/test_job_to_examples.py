"""A job flowing through the real broker with the local generator server (llama.cpp serving
Qwen2.5-Coder-0.5B-Instruct) reached through litellm as the cluster reaches vLLM:
SubmitJob -> brainstormed tasks on forge.tasks -> raw examples on forge.examples.raw, with
taskgen and examplegen each running their own build() (consumer loops, producers, gRPC)."""

import uuid

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import taskgen_pb2 as api
from embedforge.v1 import taskgen_pb2_grpc as api_grpc
from libs import topics
from services.examplegen.service import build as build_examplegen
from services.examplegen.settings import ExamplegenSettings
from services.taskgen.service import build as build_taskgen
from services.taskgen.settings import TaskgenSettings
from tests.services.examplegen.harness import Running, TopicReader


def test_job_becomes_tasks_then_raw_examples_with_the_local_model(kafka_settings, tmp_path, llm_server):
    model = llm_server.model
    llm = {"model": model, "api_base": llm_server.api_base}
    taskgen = TaskgenSettings(
        kafka=kafka_settings.model_dump(),
        state_dir=str(tmp_path / "taskgen"),
        llm={**llm, "attempts": 1},
        brainstorm_max_tokens=96,
        brainstorm_temperature=0.0,
        max_rounds_per_category=3,
    )
    examplegen = ExamplegenSettings(
        kafka=kafka_settings.model_dump(), state_dir=str(tmp_path / "examplegen"), llm={**llm, "attempts": 2}, max_tokens=800
    )
    spec = pb.JobSpec(
        domain="home cooking recipes",
        categories=[pb.CategoryTarget(category=pb.CATEGORY_CLASSIFICATION, num_tasks=1, examples_per_task=2)],
        languages=[pb.LanguageWeight(language="en", weight=1)],
        seed=1,
    )
    tasks_reader, raw_reader = TopicReader(kafka_settings, topics.TASKS), TopicReader(kafka_settings, topics.EXAMPLES_RAW)
    with Running(build_taskgen(taskgen)) as running_taskgen, Running(build_examplegen(examplegen)):
        stub = api_grpc.TaskgenServiceStub(running_taskgen.channel())
        job = stub.SubmitJob(api.SubmitJobRequest(spec=spec, job_id="job-e2e-" + uuid.uuid4().hex[:6])).job
        status = job
        for update in stub.WatchJob(api.WatchJobRequest(job_id=job.job_id), timeout=300):
            status = update.job
            if status.state in (api.JOB_STATE_GENERATING, api.JOB_STATE_FAILED):
                break
        assert status.state == api.JOB_STATE_GENERATING, status.error
        tasks = tasks_reader.wait_for(lambda m: len(m) >= status.tasks_published)
        raws = raw_reader.wait_for(lambda m: len(m) >= 2 * len(tasks), timeout_s=300)
        for update in stub.WatchJob(api.WatchJobRequest(job_id=job.job_id), timeout=60):
            if update.job.examples_generated + sum(1 for r in raws if r.error) >= len(raws):
                status = update.job
                break
    tasks_reader.close()
    raw_reader.close()
    assert len(tasks) == 1
    assert all(t.brainstorm_model == model and t.job_id == job.job_id for t in tasks)
    assert {r.task_id for r in raws} == {t.task_id for t in tasks}
    assert all(r.usage.model == model and r.template_id == "classification" for r in raws)
    assert status.examples_generated == sum(1 for r in raws if not r.error)
    assert any(u.model == model and u.completion_tokens > 0 for u in status.usage)
