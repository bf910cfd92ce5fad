from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class CuratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CURATOR_", env_nested_delimiter="__", extra="ignore")
