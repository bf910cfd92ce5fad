"""A local copy of the data a job or request names: a server path as it is, an object URI
downloaded into the service's own state dir. One implementation for every service that reads
documents, datasets or eval sets (examplegen, trainer).

Where a location may be read from is libs.dataroots' decision (``DataRoots.check``); this module
only downloads what was admitted. A URI names one object (a JSONL file, an STS pair file) or, when
no object has that key or it ends in ``/``, every object under the prefix. ``select="documents"``
keeps what libs.corpus.read_documents reads in a folder (``corpus.jsonl`` alone when the prefix
has one, as BEIR; else the .txt/.md objects); ``select="all"`` keeps everything (a BEIR eval
folder: corpus.jsonl, queries.jsonl, qrels/).

Caps, from DataSettings, are checked on the listing before any byte is downloaded and again on
what arrived: ``max_file_bytes`` per object, ``max_fetch_bytes`` and ``max_fetch_objects`` for the
URI. An object whose key would land outside the target (``..``, empty segments) is skipped. A
missing, unreadable (403) or over-cap location is refused with DataRoots' one message; a store
that cannot be reached raises FetchUnavailable (try again later). Downloads go to a partial folder
renamed, when complete, to ``<into>/<content digest>/<last segment of the URI>`` (the digest of
every file's sha256), so a reader never sees half a download, runs that fetched the same content
share one copy, and the copy keeps its name (an eval set is reported under it).

Credentials come from the environment and the cloud SDKs' chains, as in libs.storage (s3:// via
boto3; gs:// and az:// need gcsfs / adlfs): DataRoots refuses any URI that carries them.
"""

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath

import fsspec
from botocore.exceptions import BotoCoreError, ClientError

from libs import storage  # noqa: F401 - registers the boto3-backed s3:// filesystem
from libs.corpus import TEXT_SUFFIXES
from libs.dataroots import DataRoots, ObjectUri
from libs.storage import canonical, file_sha256

log = logging.getLogger(__name__)

REFUSED_CODES = {
    "403",
    "404",
    "AccessDenied",
    "AllAccessDisabled",
    "NoSuchKey",
    "NoSuchBucket",
    "InvalidBucketName",
    "InvalidObjectState",
}


class FetchUnavailable(Exception):
    """Object storage could not be reached or answered with a server error: not the location's fault."""


def local_copy(roots: DataRoots, location: str, field: str, into: Path, folders: bool = True, select: str = "all") -> Path:
    """The local path to read ``location`` from: its real path for a server path under the roots,
    or the downloaded copy (under ``into``) of an object URI under a URI root. ValueError
    (INVALID_ARGUMENT, DataRoots' message) when it may not or cannot be read."""
    checked = roots.check(location, field, folders)
    if isinstance(checked, Path):
        return checked
    return download(checked, into, roots, roots.refusal(field, folders), folders=folders, select=select)


def download(
    uri: ObjectUri, into: Path, roots: DataRoots, refused: ValueError, folders: bool = True, select: str = "all"
) -> Path:
    """The local copy of ``uri`` (admitted by ``roots``) under ``into``; raises ``refused`` or FetchUnavailable."""
    settings = roots.settings
    started = time.perf_counter()
    try:
        fs, path = fsspec.core.url_to_fs(
            f"{uri.scheme}://{uri.bucket}/{'/'.join(uri.key)}", skip_instance_cache=True
        )  # the environment as it is now
    except ImportError as exc:
        raise ValueError(f"this service has no client for {uri.scheme}:// ({exc.name} is not installed)") from None
    path = path.rstrip("/")
    try:
        objects = _list(fs, path, uri.folder or not uri.key)
        single = objects is not None and list(objects) == [""]
        if not single:
            if not folders or not objects:
                raise refused
            objects = _select(objects, select)
        base = uri.key[-1] if uri.key else uri.bucket  # the local name keeps the last segment (eval sets are named by it)
        if not objects or len(objects) > settings.max_fetch_objects:
            raise refused
        if any(size > settings.max_file_bytes for size in objects.values()) or sum(objects.values()) > settings.max_fetch_bytes:
            raise refused
        into.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=into, prefix=".partial-"))
        try:
            total = 0
            for name in sorted(objects):
                local = partial / base / name if name else partial / base
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(path if single else f"{path}/{name}", str(local))
                actual = local.stat().st_size
                total += actual
                if actual > settings.max_file_bytes or total > settings.max_fetch_bytes:  # changed since it was listed
                    raise refused
            manifest = {p.relative_to(partial).as_posix(): file_sha256(p) for p in partial.rglob("*") if p.is_file()}
            target = into / hashlib.sha256(canonical(manifest)).hexdigest()[:32]
            try:
                os.replace(partial, target)
            except OSError:  # the same content is there already (another fetch of it)
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    except FileNotFoundError:
        raise refused from None
    except PermissionError:
        raise refused from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in REFUSED_CODES:
            raise refused from None
        raise FetchUnavailable(f"object storage answered {code or 'an error'}") from exc
    except BotoCoreError as exc:
        raise FetchUnavailable(f"object storage could not be reached ({type(exc).__name__})") from exc
    log.info(
        "objects fetched",
        extra={"uri": str(uri), "objects": len(objects), "bytes": total, "seconds": round(time.perf_counter() - started, 3)},
    )
    return target / base


def _list(fs, path: str, prefix_only: bool) -> dict[str, int] | None:
    """``{"": size}`` when ``path`` is one object, else ``{relative name: size}`` of the objects
    under it (names that would leave the folder skipped); None or {} when there is nothing."""
    if not prefix_only:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") == "file":
            return {"": int(info.get("size") or 0)}
    objects = {}
    for name, info in fs.find(path, detail=True).items():
        relative = name[len(path) :].lstrip("/") if name.startswith(path + "/") else ""
        parts = PurePosixPath(relative).parts
        if (
            info.get("type") != "file"
            or not relative
            or relative.endswith("/")
            or any(p in ("", ".", "..") for p in relative.split("/"))
            or PurePosixPath(relative).is_absolute()
        ):
            if relative and info.get("type") == "file" and not relative.endswith("/"):
                log.warning("object skipped: its key does not map to a file under the folder", extra={"key": name[-200:]})
            continue
        objects["/".join(parts)] = int(info.get("size") or 0)
    return objects


def _select(objects: dict[str, int], select: str) -> dict[str, int]:
    if select == "all":
        return objects
    if "corpus.jsonl" in objects:
        return {"corpus.jsonl": objects["corpus.jsonl"]}
    return {name: size for name, size in objects.items() if PurePosixPath(name).suffix.lower() in TEXT_SUFFIXES}
