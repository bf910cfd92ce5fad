"""curator: validates, repairs and deduplicates raw examples (forge.examples.curated / .rejected)."""
