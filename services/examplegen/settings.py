from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class ExamplegenSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLEGEN_", env_nested_delimiter="__", extra="ignore")
