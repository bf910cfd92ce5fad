"""What a request or a job may name as data: only what lies under the configured data roots.

A client never chooses what a service reads. A root is a folder (or file) on the server, or an
object-storage prefix (``s3://bucket/prefix``, ``gs://``, ``az://``); ``file://`` roots and
locations are server paths.

A server path is accepted when it is absolute, its real path (links resolved) lies inside a
root's real path, and it is a regular file of at most ``max_file_bytes`` or, where the field
allows, a folder. The checks use stat, never open: a FIFO cannot block the caller.

An object URI is accepted when it lies under a URI root: same scheme, same bucket, and the root's
key segments are a prefix of its own (``s3://b/pre`` admits ``s3://b/pre/x``, never
``s3://b/prefix2``). The check is on the text alone, without a request to the store: a URI with
credentials (``user:pass@``), a port, a query or fragment, ``%``-escapes, backslashes, control
characters, empty, ``.`` or ``..`` segments is refused rather than normalized. What it names is
downloaded by libs.fetch (size caps, credentials from the environment only).

Anything else (outside the roots, missing, a FIFO or device, too large) is refused with one
message that does not say which, so a reply never tells whether a path exists. Clusters
configure no roots by default (documents arrive on forge.documents or through UploadDocuments);
local mode makes the job's own files its roots.
"""

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from libs.settings import DataSettings

OBJECT_SCHEMES = ("s3", "gs", "az")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class ObjectUri:
    """A normalized object-storage location: scheme, bucket (container) and key segments.
    ``folder`` when the text ended in ``/`` (then it names every object under the prefix)."""

    scheme: str
    bucket: str
    key: tuple[str, ...] = ()
    folder: bool = False

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{'/'.join(self.key)}" + ("/" if self.folder and self.key else "")

    def child(self, name: str) -> "ObjectUri":
        return ObjectUri(self.scheme, self.bucket, self.key + tuple(name.split("/")))

    def is_under(self, root: "ObjectUri") -> bool:
        return self.scheme == root.scheme and self.bucket == root.bucket and self.key[: len(root.key)] == root.key


def is_uri(location: str) -> bool:
    """Whether ``location`` is written as a URI (``scheme://...``) rather than a server path."""
    return bool(URI.match(location))


def parse_object_uri(text: str) -> ObjectUri:
    """The ObjectUri of ``text``, or ValueError saying why it is not a plain object location."""
    if any(c in text for c in "%\\?#@") or any(ord(c) < 0x20 or ord(c) == 0x7F or c.isspace() for c in text):
        raise ValueError(
            "an object URI holds no credentials, query, fragment, escapes, backslashes, spaces or control characters"
        )
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme not in OBJECT_SCHEMES:
        raise ValueError(f"object URIs are {', '.join(s + '://' for s in OBJECT_SCHEMES)} (or file:// for a server path)")
    bucket, _, key = rest.partition("/")
    if not bucket or ":" in bucket:
        raise ValueError("an object URI names a bucket and no port")
    folder = key.endswith("/")
    segments = tuple(key.rstrip("/").split("/")) if key.rstrip("/") else ()
    if any(s in ("", ".", "..") for s in segments) or key.startswith("/"):
        raise ValueError("an object URI has no empty, '.' or '..' segments")
    return ObjectUri(scheme, bucket, segments, folder)


def file_uri_path(text: str) -> str:
    """The server path of a ``file://`` URI (local host only), else ValueError."""
    parts = urlsplit(text)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise ValueError("not a local file:// URI")
    return unquote(parts.path)


class DataRoots:
    def __init__(self, settings: DataSettings):
        self.roots: list[Path] = []
        self.uri_roots: list[ObjectUri] = []
        for root in settings.roots:
            if root.lower().startswith("file:"):
                self.roots.append(Path(os.path.realpath(file_uri_path(root))))
            elif is_uri(root):
                self.uri_roots.append(parse_object_uri(root))  # a bad root stops the service at start-up
            else:
                self.roots.append(Path(os.path.realpath(root)))
        self.settings = settings
        self.max_file_bytes = settings.max_file_bytes

    def refusal(self, field: str, folders: bool) -> ValueError:
        """The one refusal of ``field``: it never says whether the location exists."""
        allowed = "a regular file" + (" or folder" if folders else "")
        return ValueError(
            f"{field} is not {allowed} under the data roots this service may read (at most {self.max_file_bytes} bytes per file)"
        )

    def check(self, location: str, field: str, folders: bool = True) -> Path | ObjectUri:
        """Where ``location`` may be read from: the real path of a server path (see resolve), or
        the normalized URI under a URI root (not yet fetched: libs.fetch). Else ValueError."""
        if not location or "\x00" in location:
            raise self.refusal(field, folders)
        if is_uri(location) and not location.lower().startswith("file:"):
            try:
                uri = parse_object_uri(location)
            except ValueError:
                raise self.refusal(field, folders) from None
            if (uri.folder or not uri.key) and not folders:
                raise self.refusal(field, folders)
            if not any(uri.is_under(root) for root in self.uri_roots):
                raise self.refusal(field, folders)
            return uri
        return self.resolve(location, field, folders)

    def resolve(self, path: str, field: str, folders: bool = True) -> Path:
        """The real path of server path ``path`` (or ``file://`` URI) if it may be read, else
        ValueError (INVALID_ARGUMENT). Object URIs are refused here: see check."""
        refused = self.refusal(field, folders)
        if not path or "\x00" in path:
            raise refused
        if path.lower().startswith("file:"):
            try:
                path = file_uri_path(path)
            except ValueError:
                raise refused from None
        if not os.path.isabs(path):
            raise refused
        real = Path(os.path.realpath(path))
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            raise refused
        try:
            mode = os.stat(real)
        except OSError:
            raise refused from None
        if stat.S_ISREG(mode.st_mode) and mode.st_size <= self.max_file_bytes:
            return real
        if folders and stat.S_ISDIR(mode.st_mode):
            return real
        raise refused
