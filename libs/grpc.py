"""gRPC server base: health checking, reflection, tracing/metrics, error-mapping and auth
interceptors, TLS with certificate reload, and a graceful stop that drains in-flight calls;
and the one way clients open a channel (:func:`traced_channel`).

Handlers raise the exceptions below (or ``ValueError`` for bad input); the interceptor
turns them into status codes with the message, so servicers hold only domain logic.
"""

import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from libs.auth import HEALTH_METHODS, REFLECTION_METHODS, TokenStore, allowed_roles, bearer_token
from libs.limits import MAX_MESSAGE_BYTES, LimitsInterceptor
from libs.settings import AuthSettings, TlsSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("embedforge.grpc")
meter = metrics.get_meter("embedforge.grpc")
rpc_counter = meter.create_counter("rpc.server.requests", description="RPCs handled, by method and status code")
rpc_duration = meter.create_histogram("rpc.server.duration", unit="s", description="RPC handling time")


class RpcError(Exception):
    code = grpc.StatusCode.INTERNAL


class InvalidArgument(RpcError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RpcError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(RpcError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(RpcError):
    code = grpc.StatusCode.UNAVAILABLE


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, RpcError):
        return exc.code, str(exc)
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error (logged by the service)"


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """A server span per RPC (continuing the caller's trace), metrics, and error mapping."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        carrier = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}

        def observe(behavior: Callable, streaming_response: bool) -> Callable:
            def unary(request_or_iterator, context):
                with self._span(method, carrier) as span:
                    started = time.perf_counter()
                    try:
                        return behavior(request_or_iterator, context)
                    except Exception as exc:  # noqa: BLE001 - mapped to a status code
                        self._abort(span, method, exc, context)
                    finally:
                        rpc_duration.record(time.perf_counter() - started, {"rpc.method": method})

            def stream(request_or_iterator, context) -> Iterator:
                with self._span(method, carrier) as span:
                    started = time.perf_counter()
                    try:
                        yield from behavior(request_or_iterator, context)
                    except Exception as exc:  # noqa: BLE001 - mapped to a status code
                        self._abort(span, method, exc, context)
                    finally:
                        rpc_duration.record(time.perf_counter() - started, {"rpc.method": method})

            return stream if streaming_response else unary

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                observe(handler.unary_unary, False), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                observe(handler.unary_stream, True), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                observe(handler.stream_unary, False), handler.request_deserializer, handler.response_serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            observe(handler.stream_stream, True), handler.request_deserializer, handler.response_serializer
        )

    @staticmethod
    def _span(method: str, carrier: dict[str, str]):
        service, _, name = method.lstrip("/").partition("/")
        return tracer.start_as_current_span(
            method.lstrip("/"),
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )

    @staticmethod
    def _abort(span, method: str, exc: Exception, context: grpc.ServicerContext):
        if isinstance(exc, grpc.RpcError) or context.code() not in (None, grpc.StatusCode.OK):
            raise exc  # the handler already set a status (context.abort)
        code, message = _status_of(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("unhandled error in %s", method)
        span.set_status(Status(StatusCode.ERROR, message))
        rpc_counter.add(1, {"rpc.method": method, "rpc.grpc.status_code": code.name})
        context.abort(code, message)


class AuthInterceptor(grpc.ServerInterceptor):
    """Bearer-token auth: no or an unknown token is UNAUTHENTICATED, a role the method does not
    allow (libs.auth.METHOD_ROLES) is PERMISSION_DENIED; ``open_methods`` need no token."""

    def __init__(self, tokens: TokenStore, open_methods: frozenset[str]):
        self.tokens = tokens
        self.open_methods = open_methods

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method in self.open_methods:
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is None:
            return _refusal(
                handler, grpc.StatusCode.UNAUTHENTICATED, "missing bearer token: send metadata `authorization: Bearer <token>`"
            )
        client = self.tokens.identify(token)
        if client is None:
            log.warning("refused an unknown token", extra={"rpc.method": method})
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        roles = allowed_roles(method)
        if client.role not in roles:
            log.warning(
                "refused a call outside the client's role",
                extra={"rpc.method": method, "client": client.name, "role": client.role},
            )
            allowed = ", ".join(sorted(roles))
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"client {client.name!r} has role {client.role}; {method} needs one of: {allowed}",
            )
        return handler


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that fails every call with ``code``."""

    def refuse(request_or_iterator, context):
        context.abort(code, message)

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)


class _CertificateFiles:
    """The server's key pair and CA from files, re-read on the next TLS handshake after any of them changes."""

    def __init__(self, tls: TlsSettings):
        self.paths = [Path(tls.key_file), Path(tls.cert_file)] + ([Path(tls.ca_file)] if tls.require_client_cert else [])
        self.stamp = self._stamp()
        self.initial = self._configuration()

    def _stamp(self) -> tuple:
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in map(os.stat, self.paths))

    def _configuration(self):
        key, cert, *ca = (path.read_bytes() for path in self.paths)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca[0] if ca else None)

    def fetch(self):
        """Called by gRPC before each handshake: a new configuration, or None to keep the current one."""
        try:
            stamp = self._stamp()
            if stamp == self.stamp:
                return None
            configuration = self._configuration()
        except OSError as exc:  # mid-rotation: keep serving the previous certificate
            log.warning("keeping the previous TLS certificate: %s", exc)
            return None
        self.stamp = stamp
        log.info("TLS certificate reloaded", extra={"cert_file": str(self.paths[1])})
        return configuration


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """TLS credentials from the settings' files, reloaded when they change; mTLS if required."""
    files = _CertificateFiles(tls)
    return grpc.dynamic_ssl_server_credentials(files.initial, files.fetch, require_client_authentication=tls.require_client_cert)


@dataclass(frozen=True)
class GrpcService:
    """One gRPC service to serve: its generated ``add_..._to_server`` function, servicer and full name."""

    add_to_server: Callable
    servicer: object
    name: str

    @classmethod
    def generated(cls, grpc_module, pb_module, name: str, servicer: object) -> "GrpcService":
        """Service ``name`` (e.g. "TaskgenService") of a generated ``*_pb2_grpc`` / ``*_pb2`` module pair."""
        add_to_server = getattr(grpc_module, f"add_{name}Servicer_to_server")
        return cls(add_to_server, servicer, pb_module.DESCRIPTOR.services_by_name[name].full_name)


class GrpcServer:
    """A gRPC server with health checking and reflection for the given services; over TLS and
    with token auth when the settings say so, plus a plaintext health-only port if ``health_port``."""

    def __init__(
        self,
        services: list[GrpcService],
        host: str,
        port: int,
        max_workers: int = 16,
        tls: TlsSettings = TlsSettings(),
        auth: AuthSettings = AuthSettings(),
        health_port: int = 0,
    ):
        if auth.enabled and not tls.enabled:
            raise ValueError("auth.enabled needs tls.enabled: bearer tokens must not cross the network in plaintext")
        interceptors: list[grpc.ServerInterceptor] = [ObservabilityInterceptor()]
        if auth.enabled:
            open_methods = (HEALTH_METHODS if auth.open_health else frozenset()) | (
                REFLECTION_METHODS if auth.open_reflection else frozenset()
            )
            interceptors.append(AuthInterceptor(TokenStore(auth.tokens_file), open_methods))
        interceptors.append(LimitsInterceptor())  # after auth: an unauthenticated call learns nothing of the bounds
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)],
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        for service in services:
            service.add_to_server(service.servicer, self.server)
        self.service_names = [s.name for s in services]
        reflection.enable_server_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        address = f"{host}:{port}"
        self.port = (
            self.server.add_secure_port(address, server_credentials(tls))
            if tls.enabled
            else self.server.add_insecure_port(address)
        )
        if self.port == 0:
            raise RuntimeError(f"cannot bind gRPC server to {address}")
        self.health_server: grpc.Server | None = None
        self.health_port = 0
        if health_port:
            self.health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(f"{host}:{health_port}")
            if self.health_port == 0:
                raise RuntimeError(f"cannot bind the health port {host}:{health_port}")

    def start(self) -> None:
        self.server.start()
        if self.health_server:
            self.health_server.start()

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            self.health.set(name, status)

    def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, refuse new calls, and let in-flight calls finish within grace_s."""
        self.set_serving(False)
        self.server.stop(grace_s).wait()
        if self.health_server:
            self.health_server.stop(0).wait()


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """TLS trusting ``tls.ca_file``, presenting ``cert_file``/``key_file`` when both are set (mTLS)."""
    with_cert = bool(tls.cert_file and tls.key_file)
    return grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca_file).read_bytes() if tls.ca_file else None,
        private_key=Path(tls.key_file).read_bytes() if with_cert else None,
        certificate_chain=Path(tls.cert_file).read_bytes() if with_cert else None,
    )


def traced_channel(target: str, tls: TlsSettings = TlsSettings(), token: str = "") -> grpc.Channel:
    """A client channel that sends the active trace context as metadata; over TLS when
    ``tls.enabled``, then with ``authorization: Bearer <token>`` on every call if a token is given
    (a token on a plaintext channel is refused)."""
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    if tls.enabled:
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(target, channel_credentials(tls), options=options)
    elif token:
        raise ValueError("a bearer token needs TLS (tls.enabled): it must not cross the network in plaintext")
    else:
        channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, _MetadataClientInterceptor((("authorization", f"Bearer {token}"),) if token else ()))


class _MetadataClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the trace context and ``fixed`` metadata (the bearer token) to every call. The token
    goes here rather than in grpc.access_token_call_credentials: that plugin runs in a gRPC
    thread per call and added ~9% to Embed's p50 (benchmarks/security.py), this adds ~1%."""

    def __init__(self, fixed: tuple[tuple[str, str], ...]):
        self.fixed = fixed

    def _with_context(self, details):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata = [*(details.metadata or ()), *carrier.items(), *self.fixed]
        return _ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_context(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_context(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._with_context(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._with_context(details), request_iterator)


@dataclass(frozen=True)
class _ClientCallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: list
    credentials: object
    wait_for_ready: bool | None
    compression: object


def wait_until_serving(
    target: str, timeout_s: float = 60.0, service: str = "", tls: TlsSettings = TlsSettings(), token: str = ""
) -> None:
    """Poll grpc.health.v1 until ``service`` reports SERVING, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    with traced_channel(target, tls, token) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} not SERVING after {timeout_s}s")
            time.sleep(0.2)
