"""libs.storage against moto's S3 server (a real HTTP S3 endpoint, reached through
AWS_ENDPOINT_URL set by the s3_server fixture) and against file:// storage."""

import json
from pathlib import Path

import pytest

from libs.storage import MANIFEST, IntegrityError, Storage, redact


@pytest.fixture(params=["s3", "file"])
def storage(request, tmp_path) -> Storage:
    if request.param == "s3":
        return Storage(request.getfixturevalue("s3_uri"))
    return Storage("", tmp_path / "store")


def model_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"dim": 32}')
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 4096)
    return root


def test_a_folder_round_trips_and_its_digest_names_its_content(storage, tmp_path):
    stored = storage.put_folder(model_folder(tmp_path / "model"), "models/m1")
    assert stored.uri == storage.uri + "/models/m1" and len(stored.digest) == 64
    copy = storage.get_folder(stored.uri, stored.digest, tmp_path / "cache" / stored.digest)
    assert (copy / "sub" / "weights.bin").read_bytes() == (tmp_path / "model" / "sub" / "weights.bin").read_bytes()
    assert sorted(p.name for p in copy.rglob("*")) == ["config.json", "sub", "weights.bin"]
    (tmp_path / "model" / "config.json").write_text('{"dim": 64}')
    assert storage.put_folder(tmp_path / "model", "models/m2").digest != stored.digest


def test_a_corrupt_file_or_a_wrong_digest_is_refused_and_nothing_partial_is_left(storage, tmp_path):
    stored = storage.put_folder(model_folder(tmp_path / "model"), "models/m1")
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match="manifest digest"):
        storage.get_folder(stored.uri, "0" * 64, cache / "wrong")
    storage.write_bytes("models/m1/sub/weights.bin", b"tampered")
    with pytest.raises(IntegrityError, match="weights.bin: sha256"):
        storage.get_folder(stored.uri, stored.digest, cache / stored.digest)
    assert list(cache.iterdir()) == []


def test_a_tampered_manifest_changes_the_digest(storage, tmp_path):
    stored = storage.put_folder(model_folder(tmp_path / "model"), "models/m1")
    manifest = storage.read_json(f"models/m1/{MANIFEST}")
    manifest["files"]["sub/weights.bin"]["sha256"] = "f" * 64
    storage.write_json(f"models/m1/{MANIFEST}", manifest)
    with pytest.raises(IntegrityError, match="manifest digest"):
        storage.get_folder(stored.uri, stored.digest, tmp_path / "cache" / stored.digest)


def test_state_objects_list_and_delete(storage):
    assert storage.read_json("trainer/jobs/j1.json") is None and storage.list("trainer/jobs") == []
    storage.write_json("trainer/jobs/j1.json", {"a": 1})
    storage.write_bytes("trainer/curated/j1/000-000000000001.jsonl", b"{}\n")
    assert storage.read_json("trainer/jobs/j1.json") == {"a": 1}
    assert storage.list("trainer") == ["curated", "jobs"] and storage.list("trainer/curated/j1") == ["000-000000000001.jsonl"]
    storage.delete("trainer/curated")
    assert storage.list("trainer") == ["jobs"]


def test_uris_outside_the_storage_and_credentials_in_the_uri_are_refused(storage, tmp_path):
    with pytest.raises(ValueError, match="not under"):
        storage.get_folder("file:///etc/models/x", "0" * 64, tmp_path / "x")
    with pytest.raises(ValueError, match="carries credentials"):
        Storage("s3://AKIAEXAMPLE:secret@bucket/prefix")
    assert redact("s3://AKIAEXAMPLE:secret@bucket/p") == "s3://***@bucket/p"
    assert json.dumps(repr(Storage("s3://bucket/p"))) == '"Storage(s3://bucket/p)"'
