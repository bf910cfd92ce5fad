"""Service settings from environment variables (pydantic-settings).

Every service subclasses :class:`ServiceSettings` with its own prefix, e.g.
``TASKGEN_GRPC_PORT=50051`` or ``CURATOR_KAFKA__BOOTSTRAP_SERVERS=kafka:9092``
(nested groups use ``__``). Defaults are the cluster defaults; local mode and
tests override them through the environment like any deployment would.

A process builds its settings with :func:`load_settings`, which refuses any variable under
the service's prefix that no field takes (a typo in Helm values fails at start-up, naming
the closest field) instead of silently running with the default.
"""

import difflib
import os
from collections.abc import Iterator, Mapping
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap_servers: str = Field("localhost:9092", description="Comma-separated host:port list.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)."
    )
    sasl_username: str | None = Field(None, description="SASL user (the chart takes it from kafka.sasl.existingSecret).")
    sasl_password: SecretStr | None = Field(None, description="SASL password (from the same Secret).")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL/SASL_SSL.")
    ssl_certfile: str | None = Field(
        None, description="PEM client certificate for brokers that require mTLS (not rendered by the chart yet)."
    )
    ssl_keyfile: str | None = Field(None, description="Private key of ssl_certfile.")
    session_timeout_ms: int = Field(45000, description="Consumer group session timeout; local mode uses 6000.")
    heartbeat_interval_ms: int = Field(3000, description="Consumer heartbeat; local mode uses 1000.")
    max_poll_records: int = Field(100, description="Records per poll: the commit batch size.")
    max_poll_interval_ms: int = Field(
        600000, description="Longest processing of one poll batch before the group reassigns its partitions."
    )
    max_message_bytes: int = Field(8 * 1024 * 1024, description="Largest produced/fetched message.")
    topic_prefix: str = Field("", description="Prepended to every topic name (test isolation, multi-tenant clusters).")

    @model_validator(mode="after")
    def _consistent_security(self) -> "KafkaSettings":
        sasl = self.security_protocol.startswith("SASL_")
        if sasl != bool(self.sasl_mechanism):
            raise ValueError(f"security_protocol {self.security_protocol} {'needs' if sasl else 'takes no'} sasl_mechanism")
        if sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError("a SASL protocol needs sasl_username and sasl_password")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self

    def client_kwargs(self) -> dict:
        """Connection arguments shared by producers, consumers and admin clients."""
        kwargs: dict = {"bootstrap_servers": self.bootstrap_servers.split(","), "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name):
                kwargs[name] = getattr(self, name)
        return kwargs


class LlmSettings(BaseModel):
    """How a service calls its LLM through litellm (env: ``<PREFIX>LLM__<NAME>``)."""

    model: str = Field(
        "hosted_vllm/qwen2.5-coder-0.5b-instruct",
        description="litellm model used when a job names none, e.g. hosted_vllm/qwen2.5-7b-instruct (the chart's "
        "vLLM; in local mode llama.cpp's server), openai/gpt-4o-mini.",
    )
    api_base: str = Field(
        "",
        description="Base URL of the model's server, e.g. http://vllm:8000/v1 (local mode sets its generator "
        "server's); sent only with models of the same provider as `model`.",
    )
    timeout_s: float = Field(300.0, description="Per-call timeout.")
    attempts: int = Field(4, description="Attempts per call (rate limits, timeouts, 5xx, invalid JSON) before it fails for good.")
    backoff_initial_s: float = Field(1.0, description="First retry wait; doubles per attempt, with jitter (Retry-After wins).")
    backoff_max_s: float = Field(30.0, description="Longest retry wait.")


class StorageSettings(BaseModel):
    """Object storage shared by the trainer and the embedders (env: ``<PREFIX>STORAGE__<NAME>``)."""

    uri: str = Field(
        "",
        description="fsspec URI under which models and run state live: s3://bucket/prefix, gs://..., az://..., "
        "file:///path; empty = file:// under state_dir. Credentials come from the cloud's credential chain or a "
        "Secret, never from here.",
    )


class DataSettings(BaseModel):
    """Where a service may read files that a job or request names (env: ``<PREFIX>DATA__<NAME>``)."""

    roots: list[str] = Field(
        [],
        description="Folders (or files) and object-storage prefixes whose contents jobs and requests may name, as a "
        'JSON list, e.g. ["/data/corpora", "s3://corpora/team-a"]; empty refuses every server path and URI.',
    )
    max_file_bytes: int = Field(2 * 1024**3, description="Largest file (or object) a job or request may name.")
    max_fetch_bytes: int = Field(
        8 * 1024**3, description="Most bytes downloaded for one object-storage URI (all objects under a prefix together)."
    )
    max_fetch_objects: int = Field(100_000, description="Most objects downloaded for one object-storage URI.")


class TlsSettings(BaseModel):
    """TLS of the gRPC server, and of a client calling one (env: ``<PREFIX>TLS__<NAME>``). The chart
    mounts cert-manager's Secret (tls.crt, tls.key, ca.crt); a rotated file is picked up on the next handshake."""

    enabled: bool = Field(False, description="Serve gRPC over TLS only (the health port, if any, stays plaintext).")
    cert_file: str = Field(
        "/etc/embedforge/tls/tls.crt", description="PEM certificate chain: the server's, and a client's own for mTLS."
    )
    key_file: str = Field("/etc/embedforge/tls/tls.key", description="PEM private key of cert_file.")
    ca_file: str = Field(
        "/etc/embedforge/tls/ca.crt",
        description="PEM CA bundle: verifies client certificates (mTLS) and, as a client, the server.",
    )
    require_client_cert: bool = Field(False, description="mTLS: refuse clients without a certificate signed by ca_file.")
    server_name: str = Field(
        "", description="As a client: the name expected in the server's certificate when it differs from the target host."
    )


class AuthSettings(BaseModel):
    """Bearer-token auth of the gRPC API (env: ``<PREFIX>AUTH__<NAME>``); roles per RPC in libs/auth.py."""

    enabled: bool = Field(False, description="Require `authorization: Bearer <token>` on every RPC (needs TLS).")
    tokens_file: str = Field(
        "/etc/embedforge/auth/tokens",
        description="Lines `<client name> <role> <token>` (roles: submit, read, search, admin); re-read when it changes.",
    )
    open_health: bool = Field(True, description="grpc.health.v1 without a token (probes, load balancers).")
    open_reflection: bool = Field(False, description="Server reflection without a token.")


class TelemetrySettings(BaseModel):
    otlp_endpoint: str = Field("", description="OTLP/gRPC collector address; empty disables export.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: str = Field("json", description="json (one object per line) or text.")


class ServiceSettings(BaseSettings):
    """Settings every service has; subclasses add their own and set ``env_prefix``."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")  # unknown variables: see load_settings

    grpc_port: int = Field(50051, description="Port of the service's gRPC server.")
    grpc_host: str = Field("0.0.0.0", description="Interface to bind; local mode uses 127.0.0.1.")
    grpc_max_workers: int = Field(16, description="Threads serving RPCs.")
    grpc_health_port: int = Field(
        0, description="Plaintext port serving only grpc.health.v1 (kubelet probes when TLS is on); 0 = none."
    )
    shutdown_grace_s: float = Field(10.0, description="Drain time for in-flight RPCs on SIGTERM.")
    state_dir: str = Field("/var/lib/embedforge", description="Where the service keeps local state.")
    tls: TlsSettings = TlsSettings()
    auth: AuthSettings = AuthSettings()
    kafka: KafkaSettings = KafkaSettings()
    telemetry: TelemetrySettings = TelemetrySettings()


class UnknownSettingError(ValueError):
    """Variables under a service's prefix that no settings field takes."""


def setting_names(settings_class: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every environment variable a settings class reads, e.g. TASKGEN_KAFKA__BOOTSTRAP_SERVERS."""
    prefix = prefix or str(settings_class.model_config.get("env_prefix", ""))
    for name, field in settings_class.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from setting_names(annotation, f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}"


def unknown_settings(settings_class: type[ServiceSettings], environ: Mapping[str, str]) -> list[str]:
    """One line per variable under the class's prefix that no field takes, with the closest field."""
    prefix = str(settings_class.model_config["env_prefix"]).upper()
    known = set(setting_names(settings_class, prefix))
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(prefix) and upper not in known:
            closest = difflib.get_close_matches(upper, known, n=1, cutoff=0.0)
            problems.append(f"{name}: no such setting" + (f" (closest: {closest[0]})" if closest else ""))
    return problems


Settings = TypeVar("Settings", bound=ServiceSettings)


def load_settings(settings_class: type[Settings]) -> Settings:
    """A service's settings from this process's environment; raises UnknownSettingError
    naming every variable under the service's prefix that no field takes."""
    problems = unknown_settings(settings_class, os.environ)
    if problems:
        raise UnknownSettingError("unknown settings in the environment:\n  " + "\n  ".join(problems))
    return settings_class()
