"""Embedding-model building blocks shared by trainer, embedder and curator."""
