from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class TaskgenSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TASKGEN_", env_nested_delimiter="__", extra="ignore")

    brainstorm_model: str = Field("local/qwen2.5-coder-0.5b-instruct", description="litellm model used when a job names none.")
    llm_api_base: str = Field("", description="Base URL for remote models that need one (hosted_vllm/..., an OpenAI-compatible server).")
    brainstorm_max_tokens: int = Field(1024, description="Answer budget of one brainstorm call.")
    brainstorm_temperature: float = Field(1.0, description="Sampling temperature of brainstorm calls (diversity).")
    brainstorm_batch: int = Field(20, description="Tasks asked for per brainstorm call (the paper asks for about 20).")
    max_rounds_per_category: int = Field(20, description="Brainstorm calls per category before giving up on its target.")
    llm_timeout_s: float = Field(600.0, description="Per-call timeout.")
    llm_attempts: int = Field(4, description="Attempts per brainstorm call (rate limits, timeouts, 5xx).")
