"""Server-side paths a request or a job may name: only under the configured data roots.

A client never chooses what a service reads. A path is accepted when it is absolute, its real
path (links resolved) lies inside a root's real path, and it is a regular file of at most
``max_file_bytes`` or, where the field allows, a folder. Anything else (outside the roots,
missing, a FIFO or device, too large) is refused with one message that does not say which,
so a reply never tells whether a path exists. The checks use stat, never open: a FIFO cannot
block the caller. Clusters configure no roots (documents arrive on forge.documents or through
UploadDocuments); local mode makes the job's own files its roots.
"""

import os
import stat
from pathlib import Path

from libs.settings import DataSettings


class DataRoots:
    def __init__(self, settings: DataSettings):
        self.roots = [Path(os.path.realpath(root)) for root in settings.roots]
        self.max_file_bytes = settings.max_file_bytes

    def resolve(self, path: str, field: str, folders: bool = True) -> Path:
        """The real path of ``path`` if it may be read, else ValueError (INVALID_ARGUMENT)."""
        allowed = "a regular file" + (" or folder" if folders else "")
        refused = ValueError(f"{field} is not {allowed} under the data roots this service may read (at most {self.max_file_bytes} bytes per file)")
        if not path or "\x00" in path or not os.path.isabs(path):
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
