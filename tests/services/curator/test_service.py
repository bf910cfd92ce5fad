"""The curator against the real broker: in-process consumer loops and gRPC server (build()).

All tests share one running curator over one isolated set of topics; each uses its own job id.
"""

import json
import os
import random
import time

import grpc
import pytest
from kafka import KafkaProducer

from embedforge.v1 import curator_pb2 as api
from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import HEADER_MESSAGE_TYPE, HEADER_SCHEMA_VERSION, physical_name
from tests.services.curator.factory import RETRIEVAL_ATTRIBUTES, near_duplicate, raw, retrieval, retrieval_answer
from tests.services.curator.harness import InProcessCurator, Outcomes, TopicReader, curator_settings, isolated_kafka, send
from tests.services.curator.test_validation import BAD


@pytest.fixture(scope="module")
def curator(broker, tmp_path_factory):
    settings = curator_settings(isolated_kafka(broker), tmp_path_factory.mktemp("curator"))
    with InProcessCurator(settings) as running:
        yield running


@pytest.fixture(scope="module")
def outcomes(curator):
    return Outcomes(curator.settings.kafka)


def in_job(example: pb.RawExample, job_id: str) -> pb.RawExample:
    example = pb.RawExample.FromString(example.SerializeToString())
    example.job_id = job_id
    example.example_id = f"{job_id}-{example.example_id}"
    return example


def test_every_reject_reason_reaches_the_rejected_topic_with_the_original_payload(curator, outcomes):
    job = "reasons"
    bad = {reason: in_job(make(), job) for reason, make in BAD.items()}
    original = retrieval(100, job_id=job)
    duplicate = retrieval(101, job_id=job, answer=retrieval_answer(100))
    near = retrieval(102, job_id=job, answer=near_duplicate(retrieval_answer(100), seed=3))
    send(curator.settings.kafka, [*bad.values(), original])
    outcomes.wait_for([original.example_id])
    send(curator.settings.kafka, [duplicate, near])
    seen = outcomes.wait_for([e.example_id for e in (*bad.values(), duplicate, near)])
    assert seen[original.example_id] == ["accepted"]
    expected = {e.example_id: [reason] for reason, e in bad.items()} | {
        duplicate.example_id: ["duplicate"],
        near.example_id: ["near_duplicate"],
    }
    assert {i: seen[i] for i in expected} == expected
    payloads = {example.example_id: example for _, example in outcomes.rejected.read()}
    for example in (*bad.values(), duplicate, near):
        assert payloads[example.example_id].original_payload == example.SerializeToString()
        assert payloads[example.example_id].detail


def test_fuzzed_payloads_are_rejected_with_a_reason_and_the_consumer_keeps_going(curator, outcomes):
    job, rng = "fuzz", random.Random(7)
    kafka = curator.settings.kafka
    headers = [(HEADER_MESSAGE_TYPE, b"embedforge.v1.RawExample"), (HEADER_SCHEMA_VERSION, b"1")]
    # job_id (field 2) holding invalid UTF-8: protobuf refuses to decode the string.
    invalid_utf8 = b"\x0a\x03bad" + b"\x12\x02\xff\xfe"
    plain = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, max_request_size=kafka.max_message_bytes)
    raw_topic = physical_name(kafka, topics.EXAMPLES_RAW)
    plain.send(raw_topic, key=b"random-bytes", value=bytes(rng.randrange(256) for _ in range(4096)), headers=headers)
    plain.send(raw_topic, key=b"invalid-utf8", value=invalid_utf8, headers=headers)
    plain.flush()
    fuzzed = {
        "huge": raw("huge", "retrieval", {**retrieval_answer(1), "user_query": "a " * 1_500_000}, job_id=job),
        "nested": raw("nested", "retrieval", "[" * 50_000 + "]" * 50_000, job_id=job),
        "nested_object": raw(
            "nested_object", "retrieval", '{"user_query": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}", job_id=job
        ),
        "noise": raw("noise", "retrieval", "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(2000)), job_id=job),
        "binary_text": raw("binary_text", "retrieval", os.urandom(3000).decode("latin-1"), job_id=job),
        "not_object": raw("not_object", "sts", json.dumps([1, 2, 3]), job_id=job),
        "null_values": raw("null_values", "retrieval", json.dumps({"user_query": None, "positive_document": None}), job_id=job),
    }
    after = retrieval(200, job_id=job)
    send(kafka, [*fuzzed.values(), after])
    seen = outcomes.wait_for([*fuzzed, after.example_id])
    assert seen[after.example_id] == ["accepted"]
    assert {k: seen[k] for k in fuzzed} == {
        "huge": ["too_long"], "nested": ["invalid_json"], "nested_object": ["invalid_json"], "noise": ["invalid_json"],
        "binary_text": ["invalid_json"], "not_object": ["invalid_json"], "null_values": ["wrong_type"],
    }  # fmt: skip
    deadline, letters = time.monotonic() + 30, TopicReader(kafka, topics.DEAD_LETTER)
    while {k for k, _ in letters.read()} < {"random-bytes", "invalid-utf8"}:
        assert time.monotonic() < deadline, "undecodable records were not dead-lettered"
    reasons = {k: m.reason for k, m in letters.read()}
    assert reasons["random-bytes"] in ("undecodable",) and reasons["invalid-utf8"] == "undecodable"


def test_stats_count_outcomes_languages_categories_and_lengths(curator, outcomes):
    job = "stats"
    examples = [retrieval(i, job_id=job) for i in range(5)]
    sts = raw(
        "stats-sts",
        "sts",
        {"S1": "A nurse checks the chart.", "S2": "The chart is checked by a nurse.", "S3": "A nurse goes home."},
        job_id=job,
        attributes={"language": "en"},
    )
    broken = retrieval(9, job_id=job, answer="no json here")
    send(curator.settings.kafka, [*examples, sts, broken, retrieval(10, job_id=job, answer=retrieval_answer(0))])
    outcomes.wait_for([e.example_id for e in (*examples, sts, broken)] + [f"ex-{job}-10"])
    stats = curator.stub().GetDatasetStats(api.GetDatasetStatsRequest(job_id=job), timeout=30)
    assert (stats.accepted, stats.rejected) == (6, 2)
    assert dict(stats.rejected_by_reason) == {"invalid_json": 1, "duplicate": 1}
    assert dict(stats.accepted_by_language) == {"en": 6}
    assert dict(stats.accepted_by_category) == {"retrieval": 5, "sts": 1}
    # Retrieval: 9-word queries, 100-word positives; STS: 5-word S1, 7-word S2.
    assert {b.upper_bound: b.count for b in stats.query_words if b.count} == {5: 1, 10: 5}
    assert {b.upper_bound: b.count for b in stats.positive_words if b.count} == {10: 1, 100: 5}


def test_list_rejected_streams_a_jobs_rejects_of_one_reason(curator, outcomes):
    job = "listing"
    examples = [retrieval(i, job_id=job, answer="not json") for i in range(3)] + [retrieval(5, job_id=job, error="timeout")]
    send(curator.settings.kafka, examples)
    outcomes.wait_for([e.example_id for e in examples])
    listed = list(curator.stub().ListRejected(api.ListRejectedRequest(job_id=job, reason="invalid_json"), timeout=30))
    assert sorted(r.example.example_id for r in listed) == sorted(e.example_id for e in examples[:3])
    assert len(list(curator.stub().ListRejected(api.ListRejectedRequest(job_id=job, limit=2), timeout=30))) == 2


def export(curator, job: str) -> list[dict]:
    blocks = curator.stub().ExportDataset(api.ExportDatasetRequest(job_id=job), timeout=30)
    return [json.loads(line) for block in blocks for line in block.jsonl.decode().splitlines()]


def test_export_then_import_round_trips(curator, outcomes):
    job = "export"
    examples = [retrieval(i, job_id=job) for i in range(6)]
    send(curator.settings.kafka, examples)
    outcomes.wait_for([e.example_id for e in examples])
    exported = export(curator, job)
    assert len(exported) == 6
    assert set(exported[0]) == {"query", "pos", "neg", "prompt"}
    text = "".join(json.dumps(line) + "\n" for line in exported).encode()
    chunks = [api.ImportDatasetRequest(job_id="imported", jsonl=text[:100]), api.ImportDatasetRequest(jsonl=text[100:])]
    response = curator.stub().ImportDataset(iter(chunks), timeout=120)
    assert (response.received, response.accepted, response.rejected) == (6, 6, 0)
    key = lambda line: json.dumps(line, sort_keys=True)  # noqa: E731
    assert sorted(map(key, export(curator, "imported"))) == sorted(map(key, exported))


def test_importing_the_same_file_twice_rejects_the_second_copy_as_duplicates(curator):
    line = {
        "query": "what helps a sprained ankle heal",
        "pos": ["Rest, ice, compression and elevation in the first two days."],
        "neg": [],
        "prompt": "Find first aid advice",
    }
    request = lambda: iter([api.ImportDatasetRequest(job_id="reimport", jsonl=(json.dumps(line) + "\n").encode())])  # noqa: E731
    first, second = curator.stub().ImportDataset(request(), timeout=120), curator.stub().ImportDataset(request(), timeout=120)
    assert (first.accepted, second.accepted, second.rejected) == (1, 0, 1)


def test_import_of_non_utf8_is_invalid_argument_and_produces_nothing(curator):
    with pytest.raises(grpc.RpcError) as caught:
        curator.stub().ImportDataset(
            iter([api.ImportDatasetRequest(job_id="bad-import", jsonl=b'{"query": "\xff"}\n')]), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not UTF-8" in caught.value.details()


def test_requests_without_job_id_are_invalid_argument(curator):
    with pytest.raises(grpc.RpcError) as caught:
        curator.stub().GetDatasetStats(api.GetDatasetStatsRequest(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_raw_attributes_requesting_chinese_reject_english_text(curator, outcomes):
    example = retrieval(300, job_id="zh", attributes={**RETRIEVAL_ATTRIBUTES, "language": "zh"})
    send(curator.settings.kafka, [example])
    assert outcomes.wait_for([example.example_id])[example.example_id] == ["language_mismatch"]
