"""One way to call any LLM: litellm by model name, with bounded concurrency per model,
retries with exponential backoff and jitter (honouring Retry-After), JSON-schema output
where the backend supports it, and token/cost/latency accounting.

    from libs.llm import complete
    answer = complete("hosted_vllm/qwen2.5-coder-0.5b-instruct", [{"role": "user", "content": "Say hi"}], max_tokens=16, api_base="http://127.0.0.1:8080/v1")
    answer.text, answer.usage.completion_tokens
"""

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import jsonschema
import litellm
from opentelemetry import metrics, trace
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from embedforge.v1 import messages_pb2 as pb
from libs.settings import LlmSettings

log = logging.getLogger(__name__)
litellm.suppress_debug_info = True  # failures are logged once, structured, below
tracer = trace.get_tracer("embedforge.llm")
meter = metrics.get_meter("embedforge.llm")
calls_counter = meter.create_counter("llm.calls", description="LLM calls by model and outcome")
tokens_counter = meter.create_counter("llm.tokens", description="LLM tokens by model and kind")
latency_histogram = meter.create_histogram("llm.latency", unit="s", description="Latency of successful LLM calls")

DEFAULT_MAX_CONCURRENCY = int(os.environ.get("EMBEDFORGE_LLM_MAX_CONCURRENCY", "16"))
DEFAULT_ATTEMPTS = int(os.environ.get("EMBEDFORGE_LLM_ATTEMPTS", "4"))
MAX_RETRY_AFTER_S = 60.0
# Providers whose litellm route forwards `response_format` with a JSON schema
# (OpenAI-compatible structured output; vLLM's and llama.cpp's servers turn it into a grammar).
SCHEMA_PROVIDERS = {"openai", "azure", "hosted_vllm", "openai_like"}


@dataclass
class Usage:
    """Tokens, cost and latency of one call, or the sum of many (``calls``)."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    calls: int = 1

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.model,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
            self.latency_s + other.latency_s,
            self.calls + other.calls,
        )

    def message(self) -> pb.LlmUsage:
        """As the LlmUsage of the topics and APIs (the same fields)."""
        return pb.LlmUsage(**asdict(self))


@dataclass
class Completion:
    """An answer: its text, its usage, and how many attempts it took."""

    text: str
    usage: Usage
    attempts: int = 1
    finish_reason: str = ""


class LlmError(Exception):
    """A call that failed for good. ``reason`` is a short code: rate_limited, timeout,
    server_error, connection_error, invalid_json, bad_request, auth_error or unknown."""

    def __init__(self, reason: str, detail: str, attempts: int = 1, usage: "Usage | None" = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.attempts = attempts
        self.usage = usage  # what the attempts that returned tokens spent


class InvalidJsonOutput(Exception):
    """The model's text is not JSON matching the requested schema (retried like a 5xx)."""


class UsageAccumulator:
    """Thread-safe totals per model, e.g. one per job: ``complete(..., accumulator=acc)``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_model: dict[str, Usage] = {}

    def add(self, usage: Usage) -> None:
        with self._lock:
            current = self._by_model.get(usage.model)
            self._by_model[usage.model] = usage if current is None else current + usage

    def totals(self) -> dict[str, Usage]:
        with self._lock:
            return dict(self._by_model)


_limits_lock = threading.Lock()
_limits: dict[str, threading.BoundedSemaphore] = {}
_limit_sizes: dict[str, int] = {}


def set_max_concurrency(model: str, limit: int) -> None:
    """Bound the number of in-flight calls to ``model`` in this process."""
    with _limits_lock:
        _limit_sizes[model] = limit
        _limits[model] = threading.BoundedSemaphore(limit)


def _semaphore(model: str) -> threading.BoundedSemaphore:
    with _limits_lock:
        if model not in _limits:
            _limits[model] = threading.BoundedSemaphore(_limit_sizes.get(model, DEFAULT_MAX_CONCURRENCY))
        return _limits[model]


def provider_of(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def call_options(settings: LlmSettings, model: str) -> dict:
    """The keyword arguments of :func:`complete` that a service's LLM settings give a call to
    ``model``. The api_base goes only to models of the configured model's provider, so a job
    that names another provider's model never sends its request to the configured server."""
    options = {
        "timeout_s": settings.timeout_s,
        "attempts": settings.attempts,
        "backoff_initial_s": settings.backoff_initial_s,
        "backoff_max_s": settings.backoff_max_s,
    }
    if settings.api_base and provider_of(model) == provider_of(settings.model):
        options["api_base"] = settings.api_base
    return options


def response_format_for(model: str, json_schema: dict) -> dict | None:
    """The `response_format` to send for a schema, or None where the backend cannot take one
    (the prompt still asks for JSON and the answer is validated either way)."""
    provider = provider_of(model)
    supported = provider in SCHEMA_PROVIDERS
    if not supported and any(p.get("provider") == provider for p in litellm.custom_provider_map):
        return None  # another custom handler: nothing known about its structured output
    if not supported:
        try:
            supported = litellm.supports_response_schema(model=model)
        except Exception:  # noqa: BLE001 - unknown models simply get no response_format
            supported = False
    if not supported:
        return None
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": json_schema, "strict": True}}


def validate_json(text: str, json_schema: dict) -> None:
    """Raise InvalidJsonOutput unless ``text`` is JSON that satisfies ``json_schema``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJsonOutput(f"not JSON: {exc}; output starts {text[:80]!r}") from exc
    try:
        jsonschema.validate(value, json_schema)
    except jsonschema.ValidationError as exc:
        raise InvalidJsonOutput(f"schema violation: {exc.message}") from exc


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, InvalidJsonOutput):
        return "invalid_json"
    if isinstance(exc, litellm.RateLimitError) or _status_code(exc) == 429:
        return "rate_limited"
    if isinstance(exc, (litellm.Timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, litellm.AuthenticationError):
        return "auth_error"
    if isinstance(exc, litellm.APIConnectionError):
        return "connection_error"
    code = _status_code(exc)
    if code is not None and code >= 500:
        return "server_error"
    if isinstance(exc, (litellm.BadRequestError, litellm.NotFoundError)) or (code is not None and 400 <= code < 500):
        return "bad_request"
    return "unknown"


RETRYABLE = {"invalid_json", "rate_limited", "timeout", "connection_error", "server_error"}


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After header), if it said."""
    headers = getattr(exc, "litellm_response_headers", None) or getattr(exc, "headers", None)
    response = getattr(exc, "response", None)
    if not headers and response is not None:
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = None
    for name in ("retry-after", "Retry-After", "retry-after-ms"):
        if name in headers:
            value = headers[name]
            if name == "retry-after-ms":
                try:
                    return min(float(value) / 1000.0, MAX_RETRY_AFTER_S)
                except ValueError:
                    return None
            break
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None


def backoff_wait(initial_s: float, max_s: float) -> Callable[[RetryCallState], float]:
    """Retry-After when the server sent one, else exponential backoff with full jitter."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_s(exc) if exc is not None else None
        if asked is not None:
            return asked
        ceiling = min(max_s, initial_s * 2 ** (state.attempt_number - 1))
        return random.uniform(ceiling / 2, ceiling)

    return wait


def _cost(response, model: str) -> float:
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # noqa: BLE001 - unknown price: count tokens, not dollars
        return 0.0


def complete(
    model: str,
    messages: list[dict],
    json_schema: dict | None = None,
    max_tokens: int = 512,
    temperature: float = 0.7,
    timeout_s: float = 120.0,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_initial_s: float = 1.0,
    backoff_max_s: float = 30.0,
    accumulator: UsageAccumulator | None = None,
    validate: bool = True,
    **litellm_kwargs,
) -> Completion:
    """Call ``model`` through litellm and return its answer.

    With ``json_schema`` the backend is asked for schema-constrained output where it can
    be, and the answer must parse and validate, or the call is retried (``validate=False``:
    the schema only steers decoding and the text comes back as it is). Rate limits (429,
    Retry-After honoured), timeouts, connection errors and 5xx are retried up to
    ``attempts`` times with exponential backoff and jitter; then :class:`LlmError` is
    raised with a reason code. The answer's usage (and an LlmError's) sums every attempt
    that returned tokens; each such attempt is also added to ``accumulator``.
    """
    kwargs = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "timeout": timeout_s,
        "num_retries": 0,
        "max_retries": 0,
        **litellm_kwargs,
    }
    if json_schema is not None:
        response_format = response_format_for(model, json_schema)
        if response_format is not None:
            kwargs["response_format"] = response_format
    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=backoff_wait(backoff_initial_s, backoff_max_s),
        retry=retry_if_exception(lambda exc: failure_reason(exc) in RETRYABLE),
        reraise=True,
    )
    with tracer.start_as_current_span("llm.complete", attributes={"llm.model": model, "llm.max_tokens": max_tokens}) as span:
        attempt = 0
        spent = UsageAccumulator()
        accumulators = [spent] + ([accumulator] if accumulator is not None else [])
        try:
            for attempt_state in retrying:
                with attempt_state:
                    attempt = attempt_state.retry_state.attempt_number
                    completion = _call_once(model, messages, json_schema if validate else None, kwargs, accumulators)
                    completion.attempts = attempt
        except Exception as exc:  # noqa: BLE001 - every failure becomes an LlmError with a reason
            reason = failure_reason(exc)
            calls_counter.add(1, {"model": model, "outcome": reason})
            span.set_attribute("llm.error", reason)
            log.warning(
                "llm call failed", extra={"model": model, "reason": reason, "attempts": attempt, "detail": str(exc)[:300]}
            )
            raise LlmError(reason, str(exc)[:1000], attempt, spent.totals().get(model)) from exc
        completion.usage = spent.totals()[model]
        span.set_attribute("llm.attempts", completion.attempts)
        span.set_attribute("llm.completion_tokens", completion.usage.completion_tokens)
        calls_counter.add(1, {"model": model, "outcome": "ok"})
        latency_histogram.record(completion.usage.latency_s, {"model": model})
        return completion


def _call_once(
    model: str, messages: list[dict], json_schema: dict | None, kwargs: dict, accumulators: list[UsageAccumulator]
) -> Completion:
    with _semaphore(model):
        started = time.perf_counter()
        response = litellm.completion(model=model, messages=messages, **kwargs)
        latency = time.perf_counter() - started
    choice = response.choices[0]
    text = choice.message.content or ""
    usage_data = getattr(response, "usage", None)
    usage = Usage(
        model=model,
        prompt_tokens=int(getattr(usage_data, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage_data, "completion_tokens", 0) or 0),
        cost_usd=_cost(response, model),
        latency_s=latency,
    )
    tokens_counter.add(usage.prompt_tokens, {"model": model, "kind": "prompt"})
    tokens_counter.add(usage.completion_tokens, {"model": model, "kind": "completion"})
    for accumulator in accumulators:
        accumulator.add(usage)
    if json_schema is not None:
        validate_json(text, json_schema)
    return Completion(text=text, usage=usage, finish_reason=str(choice.finish_reason or ""))
