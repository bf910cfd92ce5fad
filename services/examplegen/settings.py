from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.settings import KafkaSettings, ServiceSettings


class ExamplegenKafkaSettings(KafkaSettings):
    max_poll_records: int = Field(4, description="Tasks per poll: a poll's examples are generated together (batched by the local provider).")
    max_poll_interval_ms: int = Field(1_800_000, description="A poll's generation may take many minutes on CPU.")


class ExamplegenSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLEGEN_", env_nested_delimiter="__", extra="ignore")

    kafka: ExamplegenKafkaSettings = ExamplegenKafkaSettings()
    generator_model: str = Field("local/qwen2.5-coder-0.5b-instruct", description="litellm model used when a task or chunk names none.")
    llm_api_base: str = Field("", description="Base URL for remote models that need one (hosted_vllm/..., an OpenAI-compatible server).")
    max_tokens: int = Field(1024, description="Upper bound on answer tokens. Templates derive their budget from num_words; num_words values whose budget exceeds this bound are not sampled.")
    temperature: float = Field(0.8, description="Sampling temperature of example generation.")
    llm_timeout_s: float = Field(300.0, description="Per-call timeout.")
    llm_attempts: int = Field(4, description="Attempts per example (rate limits, timeouts, 5xx, invalid JSON) before it is published as failed.")
    llm_backoff_initial_s: float = Field(1.0, description="First retry wait; doubles per attempt, with jitter (Retry-After wins).")
    llm_backoff_max_s: float = Field(30.0, description="Longest retry wait.")
    concurrency: int = Field(16, description="Examples in flight at once (the local provider batches them).")
    language_alpha: float = Field(0.5, description="Language weight = CC-100 size ** alpha over the XLM-R list.")
    corpus_task: str = Field(
        "Given a question about {domain}, retrieve passages from the documents that answer it",
        description="Task description corpus-grounded queries are conditioned on ({domain} is the job's).",
    )
    preload_model: bool = Field(False, description="Load the default local generator at start-up instead of on the first task.")
