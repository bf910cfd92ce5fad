"""Object URIs under a data root are downloaded into the service's state dir, capped, against
moto's S3 server on loopback (the s3_server fixture); server paths are read where they are."""

import boto3
import pytest

from libs.corpus import read_documents
from libs.dataroots import DataRoots
from libs.fetch import FetchUnavailable, local_copy
from libs.settings import DataSettings


@pytest.fixture
def bucket(s3_server):
    """A fresh bucket holding a JSONL file, a folder of .txt/.md, a BEIR folder and objects beside the root."""
    uri = s3_server.bucket()
    name = uri.removeprefix("s3://")
    s3 = boto3.client("s3")
    objects = {
        "corpora/docs.jsonl": '{"_id": "d1", "text": "alpha"}\n{"_id": "d2", "text": "beta"}\n',
        "corpora/notes/a.txt": "first note",
        "corpora/notes/sub/b.md": "# Title\nsecond note",
        "corpora/notes/image.png": "not text",
        "corpora/beir/corpus.jsonl": '{"_id": "c1", "text": "gamma"}\n',
        "corpora/beir/queries.jsonl": '{"_id": "q1", "text": "what"}\n',
        "corpora/beir/qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\tc1\t1\n",
        "corpora/big.jsonl": "x" * 200,
        "corpora/tricky/../../escape.txt": "outside",
        "corpora/tricky/ok.txt": "inside",
        "corpora2/sibling.jsonl": '{"text": "sibling"}\n',
        "secret/keys.jsonl": '{"text": "secret"}\n',
    }
    for key, body in objects.items():
        s3.put_object(Bucket=name, Key=key, Body=body.encode())
    return uri


def roots_for(bucket: str, **limits) -> DataRoots:
    return DataRoots(DataSettings(roots=[f"{bucket}/corpora"], **{"max_file_bytes": 100, **limits}))


def test_a_jsonl_object_is_downloaded_and_read_as_documents(bucket, tmp_path):
    path = local_copy(roots_for(bucket), f"{bucket}/corpora/docs.jsonl", "corpus_path", tmp_path / "fetched", select="documents")
    assert path.is_file() and path.is_relative_to(tmp_path / "fetched") and path.name == "docs.jsonl"
    assert [d.text for d in read_documents(path)] == ["alpha", "beta"]


def test_a_prefix_of_text_files_is_downloaded_as_a_folder_of_the_text_files_only(bucket, tmp_path):
    path = local_copy(roots_for(bucket), f"{bucket}/corpora/notes", "corpus_path", tmp_path / "fetched", select="documents")
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == ["a.txt", "sub/b.md"]
    assert sorted(d.title for d in read_documents(path)) == ["Title", "a"]


def test_a_beir_prefix_gives_its_corpus_for_documents_and_everything_for_an_eval_set(bucket, tmp_path):
    documents = local_copy(roots_for(bucket), f"{bucket}/corpora/beir/", "corpus_path", tmp_path / "fetched", select="documents")
    assert [p.name for p in documents.iterdir()] == ["corpus.jsonl"]
    assert [d.text for d in read_documents(documents)] == ["gamma"]
    eval_set = local_copy(roots_for(bucket), f"{bucket}/corpora/beir", "eval_paths[0]", tmp_path / "fetched")
    assert sorted(p.relative_to(eval_set).as_posix() for p in eval_set.rglob("*") if p.is_file()) == [
        "corpus.jsonl",
        "qrels/test.tsv",
        "queries.jsonl",
    ]


def test_keys_that_would_leave_the_folder_are_skipped(bucket, tmp_path):
    path = local_copy(roots_for(bucket), f"{bucket}/corpora/tricky", "corpus_path", tmp_path / "fetched", select="documents")
    assert [p.name for p in path.rglob("*") if p.is_file()] == ["ok.txt"]
    assert not list(tmp_path.rglob("escape.txt"))


def test_the_same_content_is_fetched_into_one_content_named_folder(bucket, tmp_path):
    roots = roots_for(bucket)
    first = local_copy(roots, f"{bucket}/corpora/notes", "corpus_path", tmp_path / "fetched", select="documents")
    second = local_copy(roots, f"{bucket}/corpora/notes/", "corpus_path", tmp_path / "fetched", select="documents")
    assert first == second and first.name == "notes"  # the local copy keeps the last segment's name
    assert [p.name for p in (tmp_path / "fetched").iterdir()] == [first.parent.name]  # no partial folder left


@pytest.mark.parametrize(
    "location, limits, folders",
    [
        ("corpora/missing.jsonl", {}, True),  # nothing there
        ("corpora/missing/", {}, True),  # an empty prefix
        ("corpora/big.jsonl", {}, True),  # over max_file_bytes
        ("corpora/notes", {"max_fetch_bytes": 15}, True),  # over the total cap
        ("corpora/beir", {"max_fetch_objects": 2}, True),  # too many objects (as an eval set: all three)
        ("corpora/notes", {}, False),  # a prefix where only a file may be named
        ("corpora2/sibling.jsonl", {}, True),  # a sibling of the root's prefix
        ("secret/keys.jsonl", {}, True),
        ("corpora/../secret/keys.jsonl", {}, True),
    ],
)
def test_missing_over_cap_or_outside_is_refused_with_one_message_and_nothing_is_kept(bucket, tmp_path, location, limits, folders):
    with pytest.raises(ValueError) as refused:
        local_copy(roots_for(bucket, **limits), f"{bucket}/{location}", "corpus_path", tmp_path / "fetched", folders=folders)
    allowed = "a regular file or folder" if folders else "a regular file"
    assert (
        str(refused.value)
        == f"corpus_path is not {allowed} under the data roots this service may read (at most 100 bytes per file)"
    )
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_another_bucket_that_the_service_may_not_read_is_refused(bucket, s3_server, tmp_path):
    other = s3_server.bucket()
    with pytest.raises(ValueError):
        local_copy(roots_for(bucket), f"{other}/corpora/docs.jsonl", "corpus_path", tmp_path / "fetched")
    roots = DataRoots(DataSettings(roots=[f"{bucket}/corpora", "s3://no-such-bucket-embedforge/corpora"]))
    with pytest.raises(ValueError):
        local_copy(roots, "s3://no-such-bucket-embedforge/corpora/x.jsonl", "corpus_path", tmp_path / "fetched")


def test_server_paths_are_read_in_place(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "docs.jsonl").write_text('{"text": "x"}\n')
    roots = DataRoots(DataSettings(roots=[str(tmp_path / "data")]))
    assert (
        local_copy(roots, str(tmp_path / "data" / "docs.jsonl"), "corpus_path", tmp_path / "fetched")
        == (tmp_path / "data" / "docs.jsonl").resolve()
    )
    assert not (tmp_path / "fetched").exists()


def test_an_unreachable_store_is_unavailable_not_refused(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(FetchUnavailable):
        local_copy(roots_for(bucket), f"{bucket}/corpora/docs.jsonl", "corpus_path", tmp_path / "fetched")
