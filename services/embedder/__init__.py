"""embedder: serves the current model over gRPC and loads documents into Qdrant."""
