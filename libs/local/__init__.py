"""Local mode: a real Kafka-protocol broker on loopback and every service as its own process."""
