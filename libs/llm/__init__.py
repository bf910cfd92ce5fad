"""LLM access for every service: litellm by model name.

    from libs.llm import complete, UsageAccumulator, LlmError
    answer = complete("hosted_vllm/qwen2.5-coder-0.5b-instruct", messages, json_schema=schema, max_tokens=128, api_base=api_base)

Model names are litellm's: ``openai/gpt-4o-mini``, ``anthropic/...``, or ``hosted_vllm/<name>``
for an OpenAI-compatible server of our own: the chart's vLLM in the cluster, llama.cpp's
server in local mode (:mod:`libs.local.llm_server`, GGUF weights from :mod:`libs.llm.sources`).
"""

from libs.llm.client import Completion, LlmError, Usage, UsageAccumulator, call_options, complete, set_max_concurrency
from libs.llm.sources import ModelSourceError, gguf_file, register_model_path, resolve_model

__all__ = [
    "Completion",
    "LlmError",
    "ModelSourceError",
    "Usage",
    "UsageAccumulator",
    "call_options",
    "complete",
    "gguf_file",
    "register_model_path",
    "resolve_model",
    "set_max_concurrency",
]
