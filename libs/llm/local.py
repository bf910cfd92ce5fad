"""Offline LLM provider: a transformers causal LM in this process, registered in litellm
as the custom provider ``local``, so ``complete("local/smollm2", ...)`` takes the same
path as any remote model.

Concurrent requests are batched dynamically: a worker thread takes the first waiting
request, collects more for at most ``batch_wait_s`` (up to ``max_batch``), and runs one
``generate`` over all of them (left padding, chat template). Each row keeps its own
temperature, token limit and optional JSON schema; schemas are enforced with xgrammar
(a token bitmask per row), so even a 135M model answers with valid JSON.

Environment: EMBEDFORGE_LLM_DTYPE (bfloat16|float32, default bfloat16),
EMBEDFORGE_LLM_THREADS (torch threads, default: cores - 1), EMBEDFORGE_LLM_MAX_BATCH (16),
EMBEDFORGE_LLM_BATCH_WAIT_MS (30), EMBEDFORGE_LLM_TOP_P (0.95).
"""

import asyncio
import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import litellm
import torch
from litellm import CustomLLM
from opentelemetry import metrics, trace

from libs.llm.sources import ALIASES, resolve_model
from libs.modeling.loading import load_pretrained

log = logging.getLogger(__name__)
tracer = trace.get_tracer("embedforge.llm.local")
meter = metrics.get_meter("embedforge.llm.local")
batch_size_histogram = meter.create_histogram("llm.local.batch_size", description="Requests per batched generate")

PROVIDER = "local"
TOP_K = 64


@dataclass
class LocalRequest:
    messages: list[dict]
    max_tokens: int
    temperature: float
    json_schema: dict | None = None
    json_object: bool = False
    future: Future = field(default_factory=Future)


@dataclass
class LocalResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class RowSampling:
    """Per-row temperature (0 = greedy), then top-k (64) and nucleus (top-p) filtering.

    A row left with no usable score (NaN logits, or nothing its grammar allows) is ended with
    ``eos_id`` instead of failing the whole batch in sampling: its answer comes back cut short,
    and the caller's validation and retries deal with it.
    """

    def __init__(self, temperatures: list[float], top_p: float, eos_id: int):
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32)
        self.top_p = top_p
        self.eos_id = eos_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        broken = ~scores.amax(dim=-1).isfinite()  # one reduction: a NaN anywhere, or no finite score
        if broken.any():
            log.warning("rows without a usable next token are ended", extra={"rows": int(broken.sum())})
            scores[broken] = float("-inf")
            scores[broken, self.eos_id] = 0.0
        greedy = self.temperatures <= 0
        scores = scores / self.temperatures.clamp(min=1e-4)[:, None]
        if greedy.any():
            best = scores[greedy].argmax(dim=-1, keepdim=True)
            forced = torch.full_like(scores[greedy], float("-inf")).scatter(-1, best, 0.0)
            scores[greedy] = forced
        # Nucleus over the TOP_K best tokens: a full sort of a 150k vocabulary per step costs
        # more than the model's forward pass on CPU.
        top_scores, order = scores.topk(min(TOP_K, scores.shape[-1]), dim=-1)
        if self.top_p < 1.0:
            probs = top_scores.softmax(dim=-1)
            drop = (probs.cumsum(dim=-1) - probs) > self.top_p
            top_scores = top_scores.masked_fill(drop, float("-inf"))
        return torch.full_like(scores, float("-inf")).scatter(-1, order, top_scores)


class GrammarConstraint:
    """Masks each constrained row's logits to tokens its grammar allows (xgrammar)."""

    def __init__(self, grammars: list, vocab_size: int):
        import xgrammar as xgr

        self.xgr = xgr
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self.started = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.started:
            for row, matcher in enumerate(self.matchers):
                if matcher is not None and not matcher.is_terminated():
                    if not matcher.accept_token(int(input_ids[row, -1])):
                        self.matchers[row] = None  # the row already stopped (its token limit); padding follows
        self.started = True
        if not any(m is not None and not m.is_terminated() for m in self.matchers):
            return scores
        scores = scores.float()
        self.xgr.reset_token_bitmask(self.bitmask)
        for row, matcher in enumerate(self.matchers):
            if matcher is not None and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, row)
        self.xgr.apply_token_bitmask_inplace(scores, self.bitmask, vocab_size=scores.shape[-1])
        return scores


class RowTokenLimit:
    """Stops each row at its own ``max_tokens``, and every row once ``aborted`` is set."""

    def __init__(self, limits: list[int], prompt_length: int, aborted: threading.Event):
        self.limits = torch.tensor(limits)
        self.prompt_length = prompt_length
        self.aborted = aborted

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.aborted.is_set():
            return torch.ones(input_ids.shape[0], dtype=torch.bool)
        return (input_ids.shape[1] - self.prompt_length) >= self.limits


class EngineStopped(RuntimeError):
    """The engine was shut down (the process is stopping): the request was not answered."""


class LocalEngine:
    """One loaded model and its batching worker thread."""

    def __init__(self, name: str, max_batch: int | None = None, batch_wait_s: float | None = None, dtype: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.max_batch = max_batch or int(os.environ.get("EMBEDFORGE_LLM_MAX_BATCH", "16"))
        self.batch_wait_s = batch_wait_s if batch_wait_s is not None else float(os.environ.get("EMBEDFORGE_LLM_BATCH_WAIT_MS", "30")) / 1000
        self.top_p = float(os.environ.get("EMBEDFORGE_LLM_TOP_P", "0.95"))
        # One core is left to the service's I/O threads: on a busy 2-core box, 2 OpenMP
        # threads spin against each other and a decode step gets ~10x slower.
        threads = int(os.environ.get("EMBEDFORGE_LLM_THREADS", "0")) or max(1, (os.cpu_count() or 2) - 1)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self.dtype = getattr(torch, dtype or os.environ.get("EMBEDFORGE_LLM_DTYPE", "bfloat16"))
        started = time.perf_counter()
        path = resolve_model(name)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        self.model = load_pretrained(AutoModelForCausalLM, path, self.dtype).eval()
        config_eos = self.model.generation_config.eos_token_id
        eos = set(config_eos if isinstance(config_eos, list) else [config_eos] if config_eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(eos)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.repetition_penalty = float(getattr(self.model.generation_config, "repetition_penalty", None) or 1.0)
        self._compiler = None
        self._grammars: dict[str, object] = {}
        self.batch_sizes: list[int] = []  # size of every batched generate, in order
        self._queue: queue.Queue[LocalRequest] = queue.Queue()
        self._aborted = threading.Event()
        self._submit_lock = threading.Lock()  # no request enters the queue after abort's wake-up
        self._worker = threading.Thread(target=self._serve, name=f"local-llm-{name}", daemon=True)
        self._worker.start()
        log.info("local model loaded", extra={"model": name, "path": str(path), "dtype": str(self.dtype), "load_s": round(time.perf_counter() - started, 2)})

    def submit(self, request: LocalRequest) -> Future:
        with self._submit_lock:
            if self._aborted.is_set():
                request.future.set_exception(EngineStopped(f"local model {self.name} is shut down"))
            else:
                self._queue.put(request)
        return request.future

    def abort(self) -> None:
        """Stop the generate in flight within a decode step, fail every waiting and later request
        with :class:`EngineStopped` (a stopping process must not wait minutes for a long batch)
        and end the worker thread."""
        with self._submit_lock:
            self._aborted.set()
            self._queue.put(LocalRequest([], 0, 0.0))  # wakes the worker if it is idle

    def generate(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.7, json_schema: dict | None = None) -> LocalResult:
        """Blocking convenience around :meth:`submit`."""
        return self.submit(LocalRequest(messages, max_tokens, temperature, json_schema)).result()

    def _grammar(self, request: LocalRequest):
        if request.json_schema is None and not request.json_object:
            return None
        import xgrammar as xgr

        if self._compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size, stop_token_ids=self.eos_ids)
            self._compiler = xgr.GrammarCompiler(info, max_threads=1)
        key = json.dumps(request.json_schema, sort_keys=True) if request.json_schema is not None else "<json>"
        if key not in self._grammars:
            if request.json_schema is None:
                self._grammars[key] = self._compiler.compile_builtin_json_grammar()
            else:
                self._grammars[key] = self._compiler.compile_json_schema(request.json_schema, any_whitespace=False)
        return self._grammars[key]

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            if self._aborted.is_set():
                self._fail_waiting(batch)
                return
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if self._aborted.is_set():
                self._fail_waiting(batch)
                return
            if not batch:
                continue
            try:
                results = self._run(batch)
                if self._aborted.is_set():
                    raise EngineStopped(f"local model {self.name} is shut down")
            except Exception as exc:  # noqa: BLE001 - fail the requests, keep serving
                if not isinstance(exc, EngineStopped):
                    log.exception("local generation failed", extra={"model": self.name, "batch": len(batch)})
                for request in batch:
                    request.future.set_exception(exc)
                continue
            for request, result in zip(batch, results):
                request.future.set_result(result)

    def _fail_waiting(self, batch: list[LocalRequest]) -> None:
        while True:
            for request in batch:
                future = request.future
                if future.done() or not (future.running() or future.set_running_or_notify_cancel()):
                    continue
                future.set_exception(EngineStopped(f"local model {self.name} is shut down"))
            try:
                batch = [self._queue.get_nowait()]
            except queue.Empty:
                return

    def _run(self, batch: list[LocalRequest]) -> list[LocalResult]:
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        batch_size_histogram.record(len(batch), {"model": self.name})
        self.batch_sizes.append(len(batch))
        with tracer.start_as_current_span("llm.local.generate", attributes={"llm.model": self.name, "llm.batch_size": len(batch)}):
            prompts = [self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in batch]
            encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            prompt_length = encoded["input_ids"].shape[1]
            limits = [max(1, r.max_tokens) for r in batch]
            processors = []
            grammars = [self._grammar(r) for r in batch]
            if any(g is not None for g in grammars):
                processors.append(GrammarConstraint(grammars, self.model.config.vocab_size))
            processors.append(RowSampling([r.temperature for r in batch], self.top_p, self.eos_ids[0]))
            config = GenerationConfig(
                max_new_tokens=max(limits),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                repetition_penalty=self.repetition_penalty,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
            )
            with torch.inference_mode():
                output = self.model.generate(
                    **encoded,
                    generation_config=config,
                    logits_processor=LogitsProcessorList(processors),
                    stopping_criteria=StoppingCriteriaList([RowTokenLimit(limits, prompt_length, self._aborted)]),
                )
        results = []
        attention = encoded["attention_mask"]
        for row, request in enumerate(batch):
            generated = output[row, prompt_length:].tolist()
            tokens = []
            finish = "length"
            for token in generated:
                if token in self.eos_ids:
                    finish = "stop"
                    break
                tokens.append(token)
            tokens = tokens[: limits[row]]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results.append(LocalResult(text, int(attention[row].sum()), len(tokens), finish))
        return results


_engines: dict[str, LocalEngine] = {}
_engines_lock = threading.Lock()


def get_engine(name: str) -> LocalEngine:
    """The process-wide engine for ``name``, loaded on first use."""
    name = ALIASES.get(name, name)
    with _engines_lock:
        if name not in _engines:
            _engines[name] = LocalEngine(name)
        return _engines[name]


def abort_engines() -> None:
    """Abort every loaded engine (a service is stopping) and forget it, so a service built
    later in the same process loads its model afresh instead of finding it stopped."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.abort()


def _schema_of(response_format) -> tuple[dict | None, bool]:
    if not response_format:
        return None, False
    if hasattr(response_format, "model_json_schema"):
        return response_format.model_json_schema(), False
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return spec.get("schema") or spec, False
    return None, kind == "json_object"


class LocalProvider(CustomLLM):
    """litellm custom provider serving ``local/<model>`` from :class:`LocalEngine`."""

    def completion(self, model: str, messages: list, api_base, custom_prompt_dict, model_response, print_verbose, encoding, api_key, logging_obj, optional_params: dict, acompletion=None, litellm_params=None, logger_fn=None, headers=None, timeout=None, client=None):
        schema, json_object = _schema_of(optional_params.get("response_format"))
        max_tokens = int(optional_params.get("max_tokens") or optional_params.get("max_completion_tokens") or 256)
        temperature = float(optional_params.get("temperature", 0.7) if optional_params.get("temperature") is not None else 0.7)
        engine = get_engine(model)
        request = LocalRequest([{"role": m["role"], "content": m["content"]} for m in messages], max_tokens, temperature, schema, json_object)
        future = engine.submit(request)
        wait_s = float(timeout) if isinstance(timeout, (int, float)) else None
        try:
            result: LocalResult = future.result(timeout=wait_s)
        except TimeoutError as exc:
            future.cancel()
            raise litellm.Timeout(message=f"local model {model} did not answer within {wait_s}s", model=model, llm_provider=PROVIDER) from exc
        model_response.choices[0].message.content = result.text
        model_response.choices[0].finish_reason = result.finish_reason
        model_response.model = f"{PROVIDER}/{model}"
        model_response.usage = litellm.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens, total_tokens=result.prompt_tokens + result.completion_tokens)
        return model_response

    async def acompletion(self, *args, **kwargs):
        return await asyncio.to_thread(self.completion, *args, **kwargs)


_registered = False
_register_lock = threading.Lock()


def register_local_provider() -> None:
    """Make ``local/<model>`` resolvable by litellm (idempotent)."""
    global _registered
    with _register_lock:
        if _registered:
            return
        litellm.custom_provider_map = [p for p in litellm.custom_provider_map if p.get("provider") != PROVIDER]
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": LocalProvider()})
        _registered = True
