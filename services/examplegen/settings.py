from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.settings import DataSettings, KafkaSettings, LlmSettings, ServiceSettings


class ExamplegenKafkaSettings(KafkaSettings):
    max_poll_records: int = Field(
        16,
        description="Tasks or corpus chunks per poll: a poll's examples are generated together, up to `concurrency` "
        "in flight (batched by the model's server).",
    )
    max_poll_interval_ms: int = Field(1_800_000, description="A poll's generation may take many minutes on CPU.")


class ExamplegenSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLEGEN_", env_nested_delimiter="__", extra="ignore")

    kafka: ExamplegenKafkaSettings = ExamplegenKafkaSettings()
    llm: LlmSettings = Field(
        LlmSettings(), description="The generator model (used when a task or chunk names none) and how it is called."
    )
    max_tokens: int = Field(
        1024,
        description="Upper bound on answer tokens. Templates derive their budget from num_words; num_words values "
        "whose budget exceeds this bound are not sampled.",
    )
    temperature: float = Field(0.8, description="Sampling temperature of example generation.")
    concurrency: int = Field(
        16, description="Examples in flight at once (the model's server batches them: local mode's has 16 slots)."
    )
    language_alpha: float = Field(0.5, description="Language weight = CC-100 size ** alpha over the XLM-R list.")
    data: DataSettings = DataSettings()
