"""Models and run state in object storage, addressed by fsspec URIs (s3://, gs://, az://, file://).

A folder is stored as its files plus ``manifest.json`` (sha256 and size of each file), written
last, so a folder without a manifest is an unfinished upload. The manifest digest (sha256 of the
canonical manifest) names a folder's exact content: a download checks the manifest against the
digest it was given and every file against the manifest, in a partial folder that is renamed
into place only when everything matched. Small state objects (JSON, JSONL segments) live beside.

s3:// goes through boto3 (its credential chain, ``AWS_ENDPOINT_URL`` for MinIO/moto, ``AWS_REGION``);
gs:// and az:// need the optional gcsfs / adlfs packages. Credentials never appear in the URI.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

import boto3
import fsspec
from botocore.exceptions import ClientError
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem
from opentelemetry import trace

log = logging.getLogger(__name__)
tracer = trace.get_tracer("embedforge.storage")

MANIFEST = "manifest.json"
CHUNK = 1 << 20


class IntegrityError(Exception):
    """Stored content does not match the digest it was published with."""


def redact(uri: str) -> str:
    """The URI without any user:password part, for logs and errors."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def canonical(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(manifest: dict) -> str:
    return hashlib.sha256(canonical(manifest)).hexdigest()


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


@dataclass(frozen=True)
class StoredFolder:
    uri: str
    digest: str


class BotoS3FileSystem(AbstractFileSystem):
    """The few fsspec operations this module uses, for s3:// through boto3 (s3fs needs
    aiobotocore, which cannot run with this environment's botocore)."""

    protocol = ("s3", "s3a")
    root_marker = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.client = boto3.client("s3")

    def _split(self, path: str) -> tuple[str, str]:
        bucket, _, key = self._strip_protocol(path).rstrip("/").partition("/")
        return bucket, key

    def ls(self, path, detail=True, **kwargs):
        bucket, key = self._split(path)
        entries = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{key}/" if key else "", Delimiter="/"
        ):
            entries += [
                {"name": f"{bucket}/{p['Prefix'].rstrip('/')}", "size": 0, "type": "directory"}
                for p in page.get("CommonPrefixes", [])
            ]
            entries += [{"name": f"{bucket}/{o['Key']}", "size": o["Size"], "type": "file"} for o in page.get("Contents", [])]
        if not entries and key:
            entries = [self.info(path)]
        return entries if detail else [e["name"] for e in entries]

    def info(self, path, **kwargs):
        bucket, key = self._split(path)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
            return {"name": f"{bucket}/{key}", "size": head["ContentLength"], "type": "file"}
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchKey"):
                raise
        if self.client.list_objects_v2(Bucket=bucket, Prefix=f"{key}/", MaxKeys=1).get("KeyCount"):
            return {"name": f"{bucket}/{key}", "size": 0, "type": "directory"}
        raise FileNotFoundError(path)

    def cat_file(self, path, start=None, end=None, **kwargs):
        bucket, key = self._split(path)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
                raise FileNotFoundError(path) from exc
            raise

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        bucket, key = self._split(path)
        self.client.put_object(Bucket=bucket, Key=key, Body=value)

    def put_file(self, lpath, rpath, callback=None, mode="overwrite", **kwargs):
        bucket, key = self._split(rpath)
        self.client.upload_file(str(lpath), bucket, key)

    def get_file(self, rpath, lpath, callback=None, outfile=None, **kwargs):
        bucket, key = self._split(rpath)
        try:
            self.client.download_file(bucket, key, str(lpath))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
                raise FileNotFoundError(rpath) from exc
            raise

    def rm_file(self, path):
        bucket, key = self._split(path)
        self.client.delete_object(Bucket=bucket, Key=key)


fsspec.register_implementation("s3", BotoS3FileSystem, clobber=True)
fsspec.register_implementation("s3a", BotoS3FileSystem, clobber=True)


def service_storage(settings) -> "Storage":
    """A service's storage: ``settings.storage.uri``, or ``file://<state_dir>/storage`` when empty."""
    return Storage(settings.storage.uri, Path(settings.state_dir) / "storage")


class Storage:
    """Keys (``a/b/c``) under one root URI; an empty URI means ``file://<default_root>``."""

    def __init__(self, uri: str, default_root: Path | None = None):
        if not uri and default_root is None:
            raise ValueError("no storage URI and no default root")
        uri = uri or default_root.resolve().as_uri()
        if urlsplit(uri).password is not None:
            raise ValueError(f"storage URI {redact(uri)} carries credentials: give them through the credential chain or a Secret")
        self.uri = uri.rstrip("/")
        local = urlsplit(self.uri).scheme in ("", "file")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **({"auto_mkdir": True} if local else {}))
        self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"Storage({redact(self.uri)})"

    def uri_of(self, key: str) -> str:
        return f"{self.uri}/{key}"

    def key_of(self, uri: str) -> str:
        """The key of a URI under this storage; refuses any other location."""
        if not uri.startswith(self.uri + "/"):
            raise ValueError(f"{redact(uri)} is not under this service's storage {redact(self.uri)}")
        return uri[len(self.uri) + 1 :]

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    # ----- folders with manifests

    def put_folder(self, local: Path, key: str, names: list[str] | None = None) -> StoredFolder:
        """Upload ``names`` (default: every file under ``local``), then the manifest."""
        names = sorted(names if names is not None else (p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()))
        started = time.perf_counter()
        with tracer.start_as_current_span("storage put_folder", attributes={"storage.key": key, "storage.files": len(names)}):
            manifest = {
                "files": {name: {"sha256": file_sha256(local / name), "size": (local / name).stat().st_size} for name in names}
            }
            for name in names:
                self.fs.put_file(str(local / name), self._path(f"{key}/{name}"))
            self.fs.pipe_file(self._path(f"{key}/{MANIFEST}"), canonical(manifest))
        stored = StoredFolder(self.uri_of(key), digest_of(manifest))
        size = sum(f["size"] for f in manifest["files"].values())
        log.info(
            "folder uploaded",
            extra={
                "uri": redact(stored.uri),
                "files": len(names),
                "bytes": size,
                "digest": stored.digest,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return stored

    def get_folder(self, uri: str, digest: str, target: Path) -> Path:
        """The folder stored at ``uri`` as ``target``, downloaded and verified against ``digest``
        unless ``target`` already exists (callers name it by the digest or make it fresh).
        Raises IntegrityError on any mismatch; nothing partial is left at ``target``."""
        if target.is_dir():
            return target
        key = self.key_of(uri)
        started = time.perf_counter()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".partial-{target.name}-"))
        try:
            with tracer.start_as_current_span("storage get_folder", attributes={"storage.key": key}):
                manifest = json.loads(self.fs.cat_file(self._path(f"{key}/{MANIFEST}")))
                if digest_of(manifest) != digest:
                    raise IntegrityError(f"{redact(uri)}: manifest digest {digest_of(manifest)} is not the published {digest}")
                for name, entry in manifest["files"].items():
                    relative = PurePosixPath(name)
                    if relative.is_absolute() or ".." in relative.parts:
                        raise IntegrityError(f"{redact(uri)}: manifest names a file outside the folder: {name!r}")
                    local = partial / relative
                    local.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(self._path(f"{key}/{name}"), str(local))
                    actual = file_sha256(local)
                    if actual != entry["sha256"]:
                        raise IntegrityError(
                            f"{redact(uri)}/{name}: sha256 {actual} does not match the manifest's {entry['sha256']}"
                        )
            try:
                os.replace(partial, target)
            except OSError:  # another process placed the same verified folder first
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        log.info(
            "folder downloaded and verified",
            extra={
                "uri": redact(uri),
                "files": len(manifest["files"]),
                "digest": digest,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return target

    # ----- small objects

    def write_bytes(self, key: str, data: bytes) -> None:
        """Replace one object; a reader sees the old or the new content, never a mix (object
        stores replace whole objects; a local file is written beside and renamed)."""
        path = self._path(key)
        if isinstance(self.fs, LocalFileSystem):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            partial = Path(f"{path}.partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        else:
            self.fs.pipe_file(path, data)

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            return None

    def write_json(self, key: str, value) -> None:
        self.write_bytes(key, json.dumps(value, ensure_ascii=False).encode())

    def read_json(self, key: str):
        data = self.read_bytes(key)
        return None if data is None else json.loads(data)

    def list(self, key: str) -> list[str]:
        """Names directly under ``key`` (files and folders), sorted; none if it does not exist."""
        try:
            entries = self.fs.ls(self._path(key), detail=False)
        except FileNotFoundError:
            return []
        return sorted(n.rstrip("/").rsplit("/", 1)[-1] for n in entries if not n.endswith(".partial"))

    def delete(self, key: str) -> None:
        """Remove an object or a folder of objects (missing is fine)."""
        try:
            self.fs.rm(self._path(key), recursive=True)
        except FileNotFoundError:
            pass
