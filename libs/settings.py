"""Service settings from environment variables (pydantic-settings).

Every service subclasses :class:`ServiceSettings` with its own prefix, e.g.
``TASKGEN_GRPC_PORT=50051`` or ``CURATOR_KAFKA__BOOTSTRAP_SERVERS=kafka:9092``
(nested groups use ``__``). Defaults are the cluster defaults; local mode and
tests override them through the environment like any deployment would.
"""

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap_servers: str = Field("localhost:9092", description="Comma-separated host:port list.")
    security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL/SASL_SSL.")
    session_timeout_ms: int = Field(45000, description="Consumer group session timeout; local mode uses 6000.")
    heartbeat_interval_ms: int = Field(3000, description="Consumer heartbeat; local mode uses 1000.")
    max_poll_records: int = Field(100, description="Records per poll: the commit batch size.")
    max_poll_interval_ms: int = Field(600000, description="Longest processing of one poll batch before the group reassigns its partitions.")
    max_message_bytes: int = Field(8 * 1024 * 1024, description="Largest produced/fetched message.")
    topic_prefix: str = Field("", description="Prepended to every topic name (test isolation, multi-tenant clusters).")

    def client_kwargs(self) -> dict:
        """Connection arguments shared by producers, consumers and admin clients."""
        kwargs: dict = {"bootstrap_servers": self.bootstrap_servers.split(","), "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.ssl_cafile:
            kwargs["ssl_cafile"] = self.ssl_cafile
        return kwargs


class TelemetrySettings(BaseModel):
    otlp_endpoint: str = Field("", description="OTLP/gRPC collector address; empty disables export.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: str = Field("json", description="json (one object per line) or text.")


class ServiceSettings(BaseSettings):
    """Settings every service has; subclasses add their own and set ``env_prefix``."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    grpc_port: int = Field(50051, description="Port of the service's gRPC server.")
    grpc_host: str = Field("0.0.0.0", description="Interface to bind; local mode uses 127.0.0.1.")
    grpc_max_workers: int = Field(16, description="Threads serving RPCs.")
    shutdown_grace_s: float = Field(10.0, description="Drain time for in-flight RPCs on SIGTERM.")
    state_dir: str = Field("/var/lib/embedforge", description="Where the service keeps local state.")
    kafka: KafkaSettings = KafkaSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
