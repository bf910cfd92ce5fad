"""LLM access for every service: litellm by model name, plus an offline local provider.

    from libs.llm import complete, UsageAccumulator, LlmError
    answer = complete("local/smollm2", messages, json_schema=schema, max_tokens=128)

Model names are litellm's: ``openai/gpt-4o-mini``, ``hosted_vllm/Qwen/Qwen2.5-7B-Instruct``,
``anthropic/...``, or ``local/<name>`` for a model run in this process (see
:mod:`libs.llm.local` and :mod:`libs.llm.sources`).
"""

from libs.llm.client import Completion, LlmError, Usage, UsageAccumulator, call_options, complete, set_max_concurrency
from libs.llm.local import get_engine, register_local_provider
from libs.llm.sources import ModelSourceError, register_model_path, resolve_model

__all__ = [
    "Completion",
    "LlmError",
    "ModelSourceError",
    "Usage",
    "UsageAccumulator",
    "call_options",
    "complete",
    "get_engine",
    "register_local_provider",
    "register_model_path",
    "resolve_model",
    "set_max_concurrency",
]
