"""The curator as real processes (`python -m services.curator` via LocalRuntime) on the real broker:
restarts, replicas and SIGKILL.

"Duplicate" below means by key: at-least-once delivery may write the same curated record
(same key, same value) twice after a crash; what must never happen is two keys for one
example, or two accepted examples that are duplicates of each other.
"""

import json
import signal
import time
from collections import Counter, defaultdict

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from libs import topics
from libs.kafka import physical_name
from libs.local.runtime import LocalRuntime
from tests.services.curator.factory import near_duplicate, retrieval, retrieval_answer
from tests.services.curator.harness import PARTITIONS, Outcomes, TopicReader, isolated_kafka, send

ENV = {"{PREFIX}TELEMETRY__LOG_FORMAT": "json", "{PREFIX}SHUTDOWN_GRACE_S": "3"}


def curator_runtime(broker, kafka, run_dir, **env) -> LocalRuntime:
    runtime = LocalRuntime(run_dir, services=("curator",), extra_env={**ENV, **env}, topic_prefix=kafka.topic_prefix)
    runtime.start_broker(broker)
    return runtime


def start(runtime: LocalRuntime) -> None:
    runtime.start_service("curator")
    runtime.wait_healthy("curator", timeout_s=120)


def log_lines(runtime_dir, message: str) -> list[dict]:
    lines = (runtime_dir / "logs" / "curator.log").read_text().splitlines()
    return [record for record in map(_json, lines) if record.get("msg") == message]


def _json(line: str) -> dict:
    try:
        return json.loads(line)
    except ValueError:
        return {}


def jobs_on_every_partition(prefix: str) -> list[str]:
    """Job ids whose candidates land on partitions 0, 1 and 2 (candidates are keyed by job)."""
    jobs: dict[int, str] = {}
    for n in range(100):
        jobs.setdefault((murmur2(f"{prefix}-{n}".encode()) & 0x7FFFFFFF) % PARTITIONS, f"{prefix}-{n}")
    return [jobs[p] for p in range(PARTITIONS)]


def test_dedup_state_survives_a_restart_with_an_empty_state_dir(broker, tmp_path):
    kafka = isolated_kafka(broker)
    outcomes = Outcomes(kafka)
    first = [retrieval(i) for i in range(20)]
    runtime = curator_runtime(broker, kafka, tmp_path / "first")
    start(runtime)
    send(kafka, first)
    assert all(o == ["accepted"] for o in outcomes.wait_for([e.example_id for e in first]).values())
    assert runtime.stop_service("curator") == 0

    runtime = curator_runtime(broker, kafka, tmp_path / "second")  # a new replica: nothing on its disk
    start(runtime)
    exact = [retrieval(100 + i, answer=retrieval_answer(i)) for i in range(5)]
    near = [retrieval(200 + i, answer=near_duplicate(retrieval_answer(5 + i), seed=i)) for i in range(5)]
    new = [retrieval(300 + i) for i in range(5)]
    send(kafka, [*exact, *near, *new])
    seen = outcomes.wait_for([e.example_id for e in (*exact, *near, *new)])
    runtime.stop_service("curator")
    assert [seen[e.example_id] for e in exact] == [["duplicate"]] * 5
    assert [seen[e.example_id] for e in near] == [["near_duplicate"]] * 5
    assert [seen[e.example_id] for e in new] == [["accepted"]] * 5
    # the new replica's first catch-up rebuilt all 20 entries (later catch-ups read its own new writes)
    assert log_lines(tmp_path / "second", "dedup state caught up")[0]["entries"] == 20


def workload(jobs: list[str]) -> tuple[list, list]:
    """Wave 1: distinct examples plus exact duplicates of some; wave 2: near-duplicates and more exact ones."""
    wave1, wave2 = [], []
    for j, job in enumerate(jobs):
        base = 1000 * j
        wave1 += [retrieval(base + i, job_id=job) for i in range(12)]
        wave1 += [retrieval(base + 100 + i, job_id=job, answer=retrieval_answer(base + i)) for i in range(3)]
        wave2 += [
            retrieval(base + 200 + i, job_id=job, answer=near_duplicate(retrieval_answer(base + 3 + i), seed=i)) for i in range(3)
        ]
        wave2 += [retrieval(base + 300 + i, job_id=job, answer=retrieval_answer(base + 6 + i)) for i in range(2)]
        wave2 += [retrieval(base + 400 + i, job_id=job) for i in range(3)]
    return wave1, wave2


def run_workload(kafka, waves) -> tuple[set[str], Counter]:
    outcomes = Outcomes(kafka)
    for wave in waves:
        for start_at in range(0, len(wave), 10):  # spread over time so every replica gets a share
            send(kafka, wave[start_at : start_at + 10])
            time.sleep(0.3)
        seen = outcomes.wait_for([e.example_id for e in wave], timeout_s=120)
    accepted = {key for key, _ in outcomes.curated.read()}
    return accepted, Counter(o for values in seen.values() for o in set(values))


def test_two_replicas_accept_the_same_set_as_one(broker, tmp_path):
    """One run after the other: consumer groups are named per service, not per topic prefix."""
    jobs = jobs_on_every_partition("replicas")
    waves = workload(jobs)
    single_kafka, split_kafka = isolated_kafka(broker), isolated_kafka(broker)
    single = curator_runtime(broker, single_kafka, tmp_path / "single")
    start(single)
    try:
        single_accepted, single_outcomes = run_workload(single_kafka, waves)
    finally:
        single.stop_service("curator")
    replicas = [curator_runtime(broker, split_kafka, tmp_path / f"replica-{n}") for n in range(2)]
    for runtime in replicas:
        runtime.start_service("curator")
    for runtime in replicas:
        runtime.wait_healthy("curator", timeout_s=120)
    time.sleep(4)  # let both replicas join the group before the data arrives
    try:
        split_accepted, split_outcomes = run_workload(split_kafka, waves)
    finally:
        for runtime in replicas:
            runtime.stop_service("curator")
    assert split_accepted == single_accepted
    assert split_outcomes == single_outcomes == Counter({"accepted": 45, "duplicate": 15, "near_duplicate": 9})
    for n in range(2):  # both replicas did part of the work
        assert sum(r["records"] for r in log_lines(tmp_path / f"replica-{n}", "validated batch")) > 0


class Progress:
    """Stage-1 outputs written vs raw offsets committed by the validate group."""

    def __init__(self, kafka):
        self.outputs = [TopicReader(kafka, topics.CURATOR_CANDIDATES), TopicReader(kafka, topics.EXAMPLES_REJECTED)]
        self.group = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.topic_prefix + topics.CURATOR_VALIDATE_GROUP.id,
            enable_auto_commit=False,
        )
        name = physical_name(kafka, topics.EXAMPLES_RAW)
        self.raw = [TopicPartition(name, p) for p in range(PARTITIONS)]

    def produced(self) -> int:
        return sum(len(reader.read()) for reader in self.outputs)

    def committed(self) -> int:
        return sum(self.group.committed(tp) or 0 for tp in self.raw)


def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing_by_key(broker, tmp_path):
    """The consistency filter (real all-MiniLM) makes each batch slow enough to kill the process
    after it produced outputs for some partitions and before it committed the poll."""
    kafka = isolated_kafka(broker)
    jobs = jobs_on_every_partition("kill")
    wave1, wave2 = workload(jobs)
    examples = wave1 + wave2
    send(kafka, examples)
    env = {"{PREFIX}CONSISTENCY_MODEL": "all-minilm", "{PREFIX}KAFKA__MAX_POLL_RECORDS": "30"}
    runtime = curator_runtime(broker, kafka, tmp_path / "run", **env)
    progress = Progress(kafka)
    process = runtime.start_service("curator").process
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, "the curator exited on its own"
        produced, committed = progress.produced(), progress.committed()
        if produced > committed and produced >= 10:
            runtime.stop_service("curator", signum=signal.SIGKILL)
            break
        assert produced < len(examples), "finished before a kill point was seen"
        assert time.monotonic() < deadline, f"no kill point (produced={produced}, committed={committed})"
        time.sleep(0.05)
    killed_with_uncommitted = produced - progress.committed()
    start(runtime)
    seen = Outcomes(kafka).wait_for([e.example_id for e in examples], timeout_s=180)
    runtime.stop_service("curator")

    assert killed_with_uncommitted > 0
    assert progress.produced() > len(examples), "the uncommitted batch was processed again after the restart"
    assert all(len(set(outcome)) == 1 for outcome in seen.values()), "an example got two different outcomes"
    assert Counter(o[0] for o in seen.values()) == Counter({"accepted": 45, "duplicate": 15, "near_duplicate": 9})
    records = TopicReader(kafka, topics.EXAMPLES_CURATED).read()
    values_by_key, keys_by_example = defaultdict(set), defaultdict(set)
    for key, example in records:
        values_by_key[key].add(example.SerializeToString(deterministic=True))
        keys_by_example[example.provenance.example_id].add(key)
    assert len(values_by_key) == 45
    assert all(len(values) == 1 for values in values_by_key.values()), "a key carries two different examples"
    assert all(len(keys) == 1 for keys in keys_by_example.values()), "an example was curated under two keys"
