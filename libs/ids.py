"""The one id format: job, run and model ids, collection names.

An id is 1-128 characters of letters, digits, ``.``, ``_`` and ``-``, starting with a letter
or digit and holding no ``..``: it can never name another folder, so it may appear in a
path, a topic key or a collection name as it is. Every API edge checks the ids it takes.
"""

import hashlib
import re

MAX_ID_CHARS = 128
ID_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ID_CHARS - 1}}}")
FORMAT = f"1-{MAX_ID_CHARS} letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"


def is_valid(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None and ".." not in value


def check(value: str, field: str) -> str:
    """``value`` if it is a valid id, else ValueError (INVALID_ARGUMENT at an API edge) naming ``field``;
    the value is not echoed."""
    if not is_valid(value):
        raise ValueError(f"{field} is not a valid id ({len(value)} characters): an id is {FORMAT}")
    return value


def derive(*parts: str) -> str:
    """An id made of valid ids joined by '-'; when that is too long, a prefix and a hash of the whole."""
    joined = "-".join(parts)
    if len(joined) <= MAX_ID_CHARS:
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:16]
    return f"{joined[: MAX_ID_CHARS - 17].rstrip('.-_')}-{digest}"


def model_id(job_id: str, run_id: str) -> str:
    """A run's model id: the run id when it already names the job (``<job>-auto``, ``<job>-run``), else job-run."""
    return run_id if run_id.startswith(f"{job_id}-") else derive(job_id, run_id)
