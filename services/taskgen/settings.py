from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class TaskgenSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TASKGEN_", env_nested_delimiter="__", extra="ignore")
