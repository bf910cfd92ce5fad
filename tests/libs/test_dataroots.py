"""Server paths are readable only under the data roots, as regular files or folders."""

import os

import pytest

from libs.dataroots import DataRoots
from libs.settings import DataSettings


@pytest.fixture
def roots(tmp_path) -> DataRoots:
    (tmp_path / "data" / "corpus").mkdir(parents=True)
    (tmp_path / "data" / "corpus" / "a.txt").write_text("text")
    (tmp_path / "outside.txt").write_text("secret")
    return DataRoots(DataSettings(roots=[str(tmp_path / "data")], max_file_bytes=10))


def test_files_and_folders_inside_a_root_resolve_to_their_real_path(roots, tmp_path):
    assert roots.resolve(str(tmp_path / "data" / "corpus" / "a.txt"), "f") == (tmp_path / "data" / "corpus" / "a.txt").resolve()
    assert roots.resolve(str(tmp_path / "data" / "corpus"), "f") == (tmp_path / "data" / "corpus").resolve()


@pytest.mark.parametrize(
    "name", ["outside", "dotdot", "link-out", "fifo", "missing", "too-big", "relative", "folder-as-file", "nul"]
)
def test_everything_else_is_refused_with_the_same_message(roots, tmp_path, name):
    data = tmp_path / "data"
    (data / "link-out").symlink_to(tmp_path / "outside.txt")
    os.mkfifo(data / "fifo")
    (data / "big.txt").write_text("x" * 11)
    paths = {
        "outside": str(tmp_path / "outside.txt"),
        "dotdot": str(data / ".." / "outside.txt"),
        "link-out": str(data / "link-out"),
        "fifo": str(data / "fifo"),
        "missing": str(data / "missing.txt"),
        "too-big": str(data / "big.txt"),
        "relative": "data/corpus/a.txt",
        "folder-as-file": str(data / "corpus"),
        "nul": str(data / "corpus" / "a.txt\x00"),
    }
    with pytest.raises(ValueError) as refused:
        roots.resolve(paths[name], "dataset_path", folders=name != "folder-as-file")
    allowed = "a regular file" if name == "folder-as-file" else "a regular file or folder"
    assert (
        str(refused.value)
        == f"dataset_path is not {allowed} under the data roots this service may read (at most 10 bytes per file)"
    )


def test_no_roots_refuse_every_path(tmp_path):
    with pytest.raises(ValueError):
        DataRoots(DataSettings()).resolve(str(tmp_path), "corpus_path")


# ----- object-storage roots (s3://, gs://, az://) and file:// URIs

from libs.dataroots import ObjectUri  # noqa: E402


@pytest.fixture
def uri_roots() -> DataRoots:
    return DataRoots(DataSettings(roots=["s3://bucket/prefix", "gs://other/corpora/"], max_file_bytes=10))


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://bucket/prefix/corpus.jsonl", ObjectUri("s3", "bucket", ("prefix", "corpus.jsonl"))),
        ("s3://bucket/prefix/beir/", ObjectUri("s3", "bucket", ("prefix", "beir"), folder=True)),
        ("s3://bucket/prefix", ObjectUri("s3", "bucket", ("prefix",))),
        ("S3://bucket/prefix/a.txt", ObjectUri("s3", "bucket", ("prefix", "a.txt"))),
        ("gs://other/corpora/x/y.md", ObjectUri("gs", "other", ("corpora", "x", "y.md"))),
    ],
)
def test_a_uri_under_a_uri_root_is_accepted_as_its_normalized_form(uri_roots, uri, expected):
    assert uri_roots.check(uri, "corpus_path") == expected


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/elsewhere/corpus.jsonl",  # outside the prefix
        "s3://bucket/prefix2/corpus.jsonl",  # a sibling that shares the prefix's text
        "s3://bucket/pre",  # a shorter prefix
        "s3://bucket",  # the bucket above the root
        "s3://bucket/prefix/../secret/a.txt",  # '..' out of the prefix
        "s3://bucket/prefix/./a.txt",
        "s3://bucket/prefix//a.txt",
        "s3://bucket/prefix/%2e%2e/secret",  # an escaped '..'
        "s3://key:secret@bucket/prefix/a.txt",  # credentials
        "s3://key@bucket/prefix/a.txt",
        "s3://bucket:9000/prefix/a.txt",  # a port
        "s3://bucket/prefix/a.txt?versionId=1",
        "s3://bucket/prefix/a.txt#x",
        "s3://bucket/prefix\\..\\x",
        "s3://bucket/prefix/a b.txt",
        "s3://bucket/prefix/a\nb",
        "s3://other-bucket/prefix/a.txt",  # another bucket
        "s3://other/corpora/a.txt",  # the gs root's bucket under another scheme
        "gs://bucket/prefix/a.txt",  # the s3 root's bucket under another scheme
        "az://bucket/prefix/a.txt",
        "http://bucket/prefix/a.txt",
        "s3:///prefix/a.txt",
        "s3://",
    ],
)
def test_a_uri_outside_every_uri_root_is_refused_with_the_same_message(uri_roots, uri):
    with pytest.raises(ValueError) as refused:
        uri_roots.check(uri, "corpus_path")
    assert (
        str(refused.value)
        == "corpus_path is not a regular file or folder under the data roots this service may read (at most 10 bytes per file)"
    )


def test_a_field_that_takes_files_only_refuses_a_prefix(uri_roots):
    assert uri_roots.check("s3://bucket/prefix/train.jsonl", "dataset_path", folders=False) == ObjectUri(
        "s3", "bucket", ("prefix", "train.jsonl")
    )
    for uri in ("s3://bucket/prefix/", "s3://bucket/prefix/data/"):
        with pytest.raises(ValueError):
            uri_roots.check(uri, "dataset_path", folders=False)


def test_uris_are_refused_where_only_folder_roots_are_configured(roots):
    with pytest.raises(ValueError):
        roots.check("s3://x", "corpus_path")
    with pytest.raises(ValueError):
        roots.resolve("s3://bucket/prefix/a.txt", "corpus_path")


def test_a_bucket_wide_root_admits_the_whole_bucket_only():
    roots = DataRoots(DataSettings(roots=["s3://bucket"]))
    assert roots.check("s3://bucket/any/key.jsonl", "f") == ObjectUri("s3", "bucket", ("any", "key.jsonl"))
    with pytest.raises(ValueError):
        roots.check("s3://bucket2/any/key.jsonl", "f")


def test_a_root_uri_with_credentials_stops_the_service_at_start_up():
    with pytest.raises(ValueError):
        DataRoots(DataSettings(roots=["s3://key:secret@bucket/prefix"]))


def test_file_uris_are_server_paths_under_the_same_rules(roots, tmp_path):
    a = (tmp_path / "data" / "corpus" / "a.txt").resolve()
    assert roots.check(a.as_uri(), "f") == a
    assert roots.resolve(a.as_uri(), "f") == a
    for uri in (
        (tmp_path / "outside.txt").as_uri(),
        (tmp_path / "data").as_uri() + "/../outside.txt",
        "file://otherhost" + str(a),
        "file:data/corpus/a.txt",
    ):
        with pytest.raises(ValueError):
            roots.check(uri, "f")
    by_uri = DataRoots(DataSettings(roots=[(tmp_path / "data").as_uri()]))
    assert by_uri.check(str(a), "f") == a
