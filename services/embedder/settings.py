from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class EmbedderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDDER_", env_nested_delimiter="__", extra="ignore")
