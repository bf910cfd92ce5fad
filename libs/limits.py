"""Bounds on every request of every API, in one place, checked before a handler runs.

:data:`FIELDS` caps each string/bytes field (characters or bytes) and each repeated or map
field (items) by the field's full proto name; a field not listed gets :data:`DEFAULT`.
:data:`STREAMS` caps a client stream as a whole (messages and serialized bytes).
:class:`LimitsInterceptor` applies both to every request message a server receives, so a
request over a bound fails with INVALID_ARGUMENT (a ValueError, libs.grpc maps it) naming
the field and the bound, and has no effect. Ids are also checked for their format (libs.ids) by the handlers that take them;
the embedder bounds Embed and Search texts with its own settings (EMBEDDER_MAX_*), which it
checks with the instruction counted in.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from libs.ids import MAX_ID_CHARS

# gRPC messages in either direction, on every server and client (libs.grpc).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# List RPCs: page_size 0 takes the default; more than the maximum is refused. A page also stops
# at MAX_PAGE_BYTES, so it fits a client with gRPC's default 4 MiB receive limit.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_PAGE_BYTES = 2 * 1024 * 1024
PATH_CHARS = 1024
MAX_UPLOAD_DOCUMENTS = 10_000


@dataclass(frozen=True)
class Limit:
    """Most characters (bytes for bytes fields) per value and most items per repeated/map field;
    None: bounded by the service's own settings (see the module docstring)."""

    chars: int | None = 1024
    items: int | None = 64


@dataclass(frozen=True)
class StreamLimit:
    messages: int
    bytes: int


DEFAULT = Limit()
ID = Limit(chars=MAX_ID_CHARS)
PATH = Limit(chars=PATH_CHARS)
V1 = "embedforge.v1."
FIELDS: dict[str, Limit] = {
    f"{V1}{name}": limit
    for name, limit in {
        # jobs
        "JobSpec.domain": Limit(chars=10_000),
        "JobSpec.corpus_path": PATH,
        "JobSpec.eval_paths": Limit(chars=PATH_CHARS, items=16),
        "JobSpec.languages": Limit(items=128),
        "JobSpec.categories": Limit(items=16),
        "JobSpec.brainstorm_model": Limit(chars=256),
        "JobSpec.generator_model": Limit(chars=256),
        "JobSpec.collection": ID,
        "JobSpec.name": Limit(chars=256),
        "JobSpec.sample_query": Limit(chars=2000),
        "JobSpec.task": Limit(chars=300),
        "JobSpec.example_queries": Limit(chars=500, items=16),
        "LanguageWeight.language": Limit(chars=16),
        "TrainingSpec.base_model": PATH,
        "TrainingSpec.pooling": Limit(chars=16),
        "TrainingSpec.matryoshka_dims": Limit(items=16),
        "SubmitJobRequest.job_id": ID,
        "GetJobRequest.job_id": ID,
        "WatchJobRequest.job_id": ID,
        "ListJobsRequest.page_token": Limit(chars=512),
        "UploadDocumentsRequest.job_id": ID,
        "UploadDocumentsRequest.documents": Limit(items=1000),
        "Document.doc_id": Limit(chars=512),
        "Document.collection": ID,
        "Document.title": Limit(chars=2000),
        "Document.text": Limit(chars=1_000_000),
        "Document.metadata": Limit(chars=1024, items=32),
        "Document.job_id": ID,
        # runs
        "StartRunRequest.job_id": ID,
        "StartRunRequest.dataset_path": PATH,
        "StartRunRequest.eval_paths": Limit(chars=PATH_CHARS, items=16),
        "StartRunRequest.corpus_path": PATH,
        "StartRunRequest.run_id": ID,
        "GetRunRequest.run_id": ID,
        "WatchRunRequest.run_id": ID,
        "CancelRunRequest.run_id": ID,
        "ListModelsRequest.job_id": ID,
        "ListModelsRequest.page_token": Limit(chars=512),
        # serving: texts and queries are bounded by EMBEDDER_MAX_TEXTS / MAX_TEXT_CHARS / MAX_REQUEST_CHARS
        "EmbedRequest.texts": Limit(chars=None, items=None),
        "EmbedRequest.instruction": Limit(chars=2000),
        "SearchRequest.query": Limit(chars=None),
        "SearchRequest.collection": ID,
        "SearchRequest.filter": Limit(chars=1024, items=32),
        "SearchRequest.instruction": Limit(chars=2000),
        "GetModelInfoRequest.collection": ID,
        # curation
        "GetDatasetStatsRequest.job_id": ID,
        "ListRejectedRequest.job_id": ID,
        "ListRejectedRequest.reason": Limit(chars=64),
        "ExportDatasetRequest.job_id": ID,
        "ImportDatasetRequest.job_id": ID,
        "ImportDatasetRequest.jsonl": Limit(chars=4 * 1024 * 1024),
        "GetGenerationStatsRequest.job_id": ID,
    }.items()
}
STREAMS: dict[str, StreamLimit] = {
    f"{V1}ImportDatasetRequest": StreamLimit(messages=10_000, bytes=256 * 1024 * 1024),
    f"{V1}UploadDocumentsRequest": StreamLimit(messages=10_000, bytes=64 * 1024 * 1024),
}


def check(message: Message, path: str = "") -> None:
    """Raise ValueError for the first field of ``message`` (recursively) over its bound."""
    for field, value in message.ListFields():
        limit = FIELDS.get(field.full_name, DEFAULT)
        name = f"{path}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _check_items(name, len(value), limit)
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                _check_scalar(f"{name} key", key, limit)
                _check_value(f"{name}[{key[:40]!r}]", value_field, item, limit)
        elif field.is_repeated:
            _check_items(name, len(value), limit)
            for index, item in enumerate(value):
                _check_value(f"{name}[{index}]", field, item, limit)
        else:
            _check_value(name, field, value, limit)


def _check_value(name: str, field: FieldDescriptor, value, limit: Limit) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        check(value, f"{name}.")
    else:
        _check_scalar(name, value, limit)


def _check_items(name: str, count: int, limit: Limit) -> None:
    if limit.items is not None and count > limit.items:
        raise ValueError(f"{name} has {count} items; at most {limit.items} are allowed")


def _check_scalar(name: str, value, limit: Limit) -> None:
    if isinstance(value, (str, bytes)) and limit.chars is not None and len(value) > limit.chars:
        unit = "characters" if isinstance(value, str) else "bytes"
        raise ValueError(f"{name} has {len(value)} {unit}; at most {limit.chars} are allowed")


def bounded_stream(requests: Iterator[Message]) -> Iterator[Message]:
    """The messages of a client stream, each checked, the stream within its STREAMS bound."""
    count = total = 0
    for request in requests:
        check(request)
        stream = STREAMS.get(request.DESCRIPTOR.full_name)
        count, total = count + 1, total + request.ByteSize()
        if stream is not None and (count > stream.messages or total > stream.bytes):
            raise ValueError(f"request stream too large: at most {stream.messages} messages and {stream.bytes} bytes are allowed")
        yield request


def page_size(requested: int) -> int:
    """The page size a list RPC serves for the requested one (0 = default)."""
    if not 0 <= requested <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 0 (default {DEFAULT_PAGE_SIZE}) and {MAX_PAGE_SIZE}, got {requested}")
    return requested or DEFAULT_PAGE_SIZE


def paginate(items: list[Message], key: Callable[[Message], str], size: int, token: str) -> tuple[list[Message], str]:
    """One page of ``items`` (ordered by the string ``key``) after ``token``: at most ``size``
    items and MAX_PAGE_BYTES (at least one item), and the next token ("" on the last page). The
    token is the last key served, so items added between calls neither repeat nor hide others."""
    remaining = [item for item in items if key(item) > token] if token else items
    page, total = [], 0
    for item in remaining[:size]:
        total += item.ByteSize()
        if page and total > MAX_PAGE_BYTES:
            break
        page.append(item)
    return page, key(page[-1]) if len(remaining) > len(page) else ""


class LimitsInterceptor(grpc.ServerInterceptor):
    """Checks every request message (unary and streamed) against FIELDS and STREAMS before the
    handler sees it."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None

        def unary_request(behavior: Callable) -> Callable:
            def checked(request, context):
                check(request)
                return behavior(request, context)

            return checked

        def stream_request(behavior: Callable) -> Callable:
            return lambda requests, context: behavior(bounded_stream(requests), context)

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary_request(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                unary_request(handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                stream_request(handler.stream_unary), handler.request_deserializer, handler.response_serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            stream_request(handler.stream_stream), handler.request_deserializer, handler.response_serializer
        )
