"""gRPC server base: health checking, reflection, tracing/metrics and error-mapping
interceptors, and a graceful stop that drains in-flight calls.

Handlers raise the exceptions below (or ``ValueError`` for bad input); the interceptor
turns them into status codes with the message, so servicers hold only domain logic.
"""

import logging
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from libs.limits import MAX_MESSAGE_BYTES, LimitsInterceptor

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


class ResourceExhausted(RpcError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


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


@dataclass(frozen=True)
class GrpcService:
    """One gRPC service to serve: its generated ``add_..._to_server`` function, servicer and full name."""

    add_to_server: Callable
    servicer: object
    name: str


class GrpcServer:
    """A gRPC server with health checking and reflection for the given services."""

    def __init__(self, services: list[GrpcService], host: str, port: int, max_workers: int = 16):
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=[ObservabilityInterceptor(), LimitsInterceptor()],
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
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise RuntimeError(f"cannot bind gRPC server to {host}:{port}")

    def start(self) -> None:
        self.server.start()

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            self.health.set(name, status)

    def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, refuse new calls, and let in-flight calls finish within grace_s."""
        self.set_serving(False)
        self.server.stop(grace_s).wait()


def traced_channel(target: str) -> grpc.Channel:
    """A client channel that sends the active trace context as metadata."""
    return grpc.intercept_channel(
        grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]),
        _TraceContextClientInterceptor(),
    )


class _TraceContextClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    @staticmethod
    def _with_context(details):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata = list(details.metadata or ()) + list(carrier.items())
        return _ClientCallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression)

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


def wait_until_serving(target: str, timeout_s: float = 60.0, service: str = "") -> None:
    """Poll grpc.health.v1 until ``service`` reports SERVING, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
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
