"""Local mode's TLS and token: a self-signed CA, a server certificate for localhost and
127.0.0.1, and an admin token, under ``<run dir>/auth/``. They are kept across runs (so a
client keeps working) and made anew when missing or within a week of expiry.

Every local service then serves TLS and requires the token, as in a cluster; clients trust
``ca.crt`` and send ``admin.token`` (``examples/client.py`` and the README's grpcurl lines do).
"""

import datetime
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from libs.certs import new_ca, new_certificate
from libs.settings import TlsSettings

RENEW_BEFORE = datetime.timedelta(days=7)
LOCAL_HOSTS = ["localhost", "127.0.0.1"]


@dataclass(frozen=True)
class LocalCredentials:
    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def cert_file(self) -> Path:
        return self.folder / "server.crt"

    @property
    def key_file(self) -> Path:
        return self.folder / "server.key"

    @property
    def tokens_file(self) -> Path:
        """What the services read (the chart's tokens Secret, locally)."""
        return self.folder / "tokens"

    @property
    def token_file(self) -> Path:
        """The admin token alone, for clients: ``-H "authorization: Bearer $(cat FILE)"``."""
        return self.folder / "admin.token"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def client_tls(self) -> TlsSettings:
        """A client's TLS settings: trust the local CA, present no certificate."""
        return TlsSettings(enabled=True, ca_file=str(self.ca_file), cert_file="", key_file="")

    def service_env(self, prefix: str) -> dict[str, str]:
        """The settings that turn on TLS and token auth for the service with this env prefix."""
        return {
            f"{prefix}TLS__ENABLED": "true",
            f"{prefix}TLS__CERT_FILE": str(self.cert_file),
            f"{prefix}TLS__KEY_FILE": str(self.key_file),
            f"{prefix}TLS__CA_FILE": str(self.ca_file),
            f"{prefix}AUTH__ENABLED": "true",
            f"{prefix}AUTH__TOKENS_FILE": str(self.tokens_file),
        }

    def usage(self, target: str) -> str:
        """How to call a local service at ``target`` (host:port) by hand."""
        return (
            f"TLS with the local CA and the admin token ({self.folder}):\n"
            f'  grpcurl -cacert {self.ca_file} -H "authorization: Bearer $(cat {self.token_file})" {target} list\n'
            f"  PYTHONPATH=.:gen .venv/bin/python examples/client.py jobs   # reads the same files"
        )

    def _valid(self) -> bool:
        files = (self.ca_file, self.cert_file, self.key_file, self.tokens_file, self.token_file)
        if not all(path.is_file() for path in files):
            return False
        expires = x509.load_pem_x509_certificate(self.cert_file.read_bytes()).not_valid_after_utc
        return expires - datetime.datetime.now(datetime.timezone.utc) > RENEW_BEFORE


def ensure_credentials(run_dir: Path) -> LocalCredentials:
    """The credentials under ``run_dir/auth``, made first if missing or about to expire."""
    credentials = LocalCredentials(Path(run_dir).resolve() / "auth")
    if credentials._valid():
        return credentials
    credentials.folder.mkdir(parents=True, exist_ok=True)
    credentials.folder.chmod(0o700)
    ca = new_ca("EmbedForge local CA")
    credentials.ca_file.write_bytes(ca.cert_pem)
    new_certificate(ca, "embedforge-local", LOCAL_HOSTS).write(credentials.cert_file, credentials.key_file)
    token = secrets.token_urlsafe(32)
    for path, text in ((credentials.token_file, token + "\n"), (credentials.tokens_file, f"local-admin admin {token}\n")):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
    return credentials
