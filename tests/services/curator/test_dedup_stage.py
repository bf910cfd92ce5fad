"""The dedup stage's decisions on replays (at-least-once) and regenerated examples."""

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from services.curator.dedup import DedupIndex
from services.curator.stages import DedupStage
from services.curator.text import content_hash, normalize
from tests.services.curator.factory import retrieval_answer


def candidate(seed: int, example_id: str) -> pb.CurationCandidate:
    answer = retrieval_answer(seed)
    example = pb.CuratedExample(
        content_hash=content_hash(normalize(answer["user_query"]), normalize(answer["positive_document"])),
        job_id="job-1",
        query=answer["user_query"],
        positives=[answer["positive_document"]],
        provenance=pb.Provenance(example_id=example_id),
    )
    return pb.CurationCandidate(example=example, original_payload=f"raw {example_id}".encode())


def stage() -> DedupStage:
    return DedupStage(DedupIndex(), reader=None)  # decide() works on the index alone


def test_new_example_goes_to_the_curated_topic_and_to_its_candidates_partition_of_the_dedup_log():
    outputs = stage().decide(candidate(1, "e1"), 2)
    content = outputs[0].message.content_hash
    assert [(o.topic, o.key, o.partition) for o in outputs] == [
        (topics.EXAMPLES_CURATED, f"job-1/{content}", None),
        (topics.CURATOR_DEDUP_LOG, f"job-1/{content}", 2),
    ]


def test_replayed_example_is_re_emitted_with_the_same_key_and_value_only():
    dedup = stage()
    first = dedup.decide(candidate(1, "e1"), 0)[0]
    (again,) = dedup.decide(candidate(1, "e1"), 0)
    assert (again.topic, again.key, again.message) == (topics.EXAMPLES_CURATED, first.key, first.message)


def test_regenerated_example_with_an_accepted_id_is_rejected_as_duplicate():
    dedup = stage()
    dedup.decide(candidate(1, "e1"), 0)
    (out,) = dedup.decide(candidate(2, "e1"), 0)
    assert (out.topic, out.message.reason, out.message.original_payload) == (topics.EXAMPLES_REJECTED, "duplicate", b"raw e1")
    assert "regenerated" in out.message.detail
