"""trainer: fine-tunes embedding models on curated examples and publishes them (forge.models)."""
