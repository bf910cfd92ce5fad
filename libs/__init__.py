"""Code shared by every EmbedForge service: contracts, Kafka, gRPC, telemetry, settings."""
