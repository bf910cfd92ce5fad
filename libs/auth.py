"""Who may call what: bearer tokens with one role each, and the roles every RPC allows.

Roles: ``submit`` (submit and read jobs and runs, upload data), ``read`` (read-only),
``search`` (Embed, Search, model info only), ``admin`` (everything). Tokens live in a file
(the chart mounts a Secret), one client per line::

    # <client name> <role> <token>
    ci-pipeline submit 3q9Zt...
    search-frontend search Hk2v0...

The file is re-read when it changes (Secret rotation), tokens are compared in constant time,
and a token never appears in a log line or an error message: clients are named by their name.
"""

import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
RELOAD_CHECK_S = 1.0


class Role(StrEnum):
    SUBMIT = "submit"
    READ = "read"
    SEARCH = "search"
    ADMIN = "admin"


_READERS = frozenset({Role.READ, Role.SUBMIT, Role.ADMIN})
_WRITERS = frozenset({Role.SUBMIT, Role.ADMIN})
_ANYONE = frozenset(Role)

HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
REFLECTION_METHODS = frozenset({"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"})

# Every RPC of every service, by full method name. An RPC missing here is admin-only
# (tests/libs/test_auth.py checks that the protos and this table agree).
METHOD_ROLES: dict[str, frozenset[Role]] = {
    "/embedforge.v1.TaskgenService/SubmitJob": _WRITERS,
    "/embedforge.v1.TaskgenService/GetJob": _READERS,
    "/embedforge.v1.TaskgenService/WatchJob": _READERS,
    "/embedforge.v1.TaskgenService/ListJobs": _READERS,
    "/embedforge.v1.TaskgenService/UploadDocuments": _WRITERS,
    "/embedforge.v1.ExamplegenService/GetGenerationStats": _READERS,
    "/embedforge.v1.CuratorService/GetDatasetStats": _READERS,
    "/embedforge.v1.CuratorService/ListRejected": _READERS,
    "/embedforge.v1.CuratorService/ExportDataset": _READERS,
    "/embedforge.v1.CuratorService/ImportDataset": _WRITERS,
    "/embedforge.v1.TrainerService/StartRun": _WRITERS,
    "/embedforge.v1.TrainerService/GetRun": _READERS,
    "/embedforge.v1.TrainerService/WatchRun": _READERS,
    "/embedforge.v1.TrainerService/CancelRun": _WRITERS,
    "/embedforge.v1.TrainerService/ListModels": _READERS,
    "/embedforge.v1.EmbedderService/Embed": _ANYONE,
    "/embedforge.v1.EmbedderService/Search": _ANYONE,
    "/embedforge.v1.EmbedderService/GetModelInfo": _ANYONE,
    **{method: _ANYONE for method in HEALTH_METHODS | REFLECTION_METHODS},
}


def allowed_roles(method: str) -> frozenset[Role]:
    return METHOD_ROLES.get(method, frozenset({Role.ADMIN}))


@dataclass(frozen=True)
class Client:
    name: str
    role: Role


class TokenFileError(ValueError):
    """The tokens file is missing or malformed (the message names the line, never a token)."""


def parse_tokens(text: str) -> list[tuple[bytes, Client]]:
    """``(token, client)`` per line ``<name> <role> <token>``; blank lines and ``#`` comments skipped."""
    entries: list[tuple[bytes, Client]] = []
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3:
            raise TokenFileError(f"line {number}: expected `<client name> <role> <token>`, got {len(fields)} fields")
        name, role, token = fields
        if role not in Role.__members__.values():
            raise TokenFileError(f"line {number}: unknown role {role!r} (one of {', '.join(Role)})")
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenFileError(f"line {number}: the token of {name!r} is shorter than {MIN_TOKEN_CHARS} characters")
        if name in names:
            raise TokenFileError(f"line {number}: client {name!r} appears twice")
        names.add(name)
        entries.append((token.encode(), Client(name, Role(role))))
    if not entries:
        raise TokenFileError("no tokens")
    return entries


class TokenStore:
    """The clients of a tokens file, re-read at most every RELOAD_CHECK_S when the file changed.
    A file that turns malformed keeps the last good tokens (and logs why); at start it raises."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._entries = self._read()
        self._next_check = time.monotonic() + RELOAD_CHECK_S

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            stat = os.stat(self.path)  # follows the ..data symlink of a Secret volume
        except OSError as exc:
            raise TokenFileError(f"cannot read tokens file {self.path}: {exc.strerror}") from None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _read(self) -> list[tuple[bytes, Client]]:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise TokenFileError(f"cannot read tokens file {self.path}: {exc.strerror}") from None
        return parse_tokens(text)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check or not self._lock.acquire(blocking=False):
            return
        try:
            self._next_check = now + RELOAD_CHECK_S
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._entries, self._stamp = self._read(), stamp
                log.info("tokens reloaded", extra={"tokens_file": str(self.path), "clients": len(self._entries)})
        except TokenFileError as exc:
            log.error("keeping the previous tokens: %s", exc)
        finally:
            self._lock.release()

    def identify(self, token: str) -> Client | None:
        """The client holding ``token``, or None; every entry is compared, in constant time."""
        self._maybe_reload()
        presented = token.encode()
        found = None
        for candidate, client in self._entries:
            if hmac.compare_digest(candidate, presented):
                found = client
        return found


def bearer_token(metadata) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, or None."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None
