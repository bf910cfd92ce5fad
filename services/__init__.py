"""The five EmbedForge services; each folder is one process and one container image."""
