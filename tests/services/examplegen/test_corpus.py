"""Ids of the chunks corpus-grounded queries are written for (services.examplegen.corpus)."""

from services.examplegen.corpus import chunk_id


def test_chunk_ids_are_stable_per_job_document_and_index():
    assert chunk_id("job", "d1", 0) == chunk_id("job", "d1", 0)
    assert len({chunk_id("job", "d1", 0), chunk_id("job", "d1", 1), chunk_id("job", "d2", 0), chunk_id("other", "d1", 0)}) == 4
