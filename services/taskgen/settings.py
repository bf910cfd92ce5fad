from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.settings import DataSettings, LlmSettings, ServiceSettings


class TaskgenSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TASKGEN_", env_nested_delimiter="__", extra="ignore")

    llm: LlmSettings = Field(
        LlmSettings(timeout_s=600.0), description="The brainstorm model (used when a job names none) and how it is called."
    )
    brainstorm_max_tokens: int = Field(1024, description="Answer budget of one brainstorm call.")
    brainstorm_temperature: float = Field(1.0, description="Sampling temperature of brainstorm calls (diversity).")
    brainstorm_batch: int = Field(20, description="Tasks asked for per brainstorm call (the paper asks for about 20).")
    max_rounds_per_category: int = Field(20, description="Brainstorm calls per category before giving up on its target.")
    data: DataSettings = DataSettings()
