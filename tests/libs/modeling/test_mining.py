"""Hard-negative mining: rank window, sample N, positive-aware false-negative filter."""

import torch

from libs.modeling.data import TrainExample
from libs.modeling.mining import MiningConfig, lexical_tokens, lexical_top_k, mine_hard_negatives, nearest_passages


class VectorTable:
    """An embedder stand-in with fixed vectors per text (the mining logic is what is tested)."""

    def __init__(self, table):
        self.table = table

    def query_prompt(self, instruction):
        return f"{instruction}: " if instruction else ""

    def encode(self, texts, batch_size=64, prompts=()):
        texts = [p + t for p, t in zip(prompts, texts)] if prompts else texts
        return torch.nn.functional.normalize(torch.tensor([self.table[t] for t in texts], dtype=torch.float), dim=-1)


TABLE = {
    "q": [1.0, 0.0],
    "pos": [0.9, 0.436],  # cos ~0.90 with q
    "near duplicate": [0.95, 0.312],  # scores above 95% of the positive: a likely false negative
    "hard": [0.7, 0.714],
    "medium": [0.5, 0.866],
    "easy": [0.0, 1.0],
}


def test_mining_drops_candidates_scoring_near_the_positive():
    example = TrainExample("q", "pos")
    (mined,) = mine_hard_negatives(
        VectorTable(TABLE), [example], list(TABLE)[1:], MiningConfig(range_start=0, negatives=10, keep_existing=False)
    )
    assert "near duplicate" not in mined.negatives and "pos" not in mined.negatives
    assert set(mined.negatives) == {"hard", "medium", "easy"}


def test_mining_samples_n_from_the_rank_window():
    example = TrainExample("q", "pos")
    config = MiningConfig(range_start=2, range_end=4, negatives=1, keep_existing=False, positive_ratio=1.5)
    (mined,) = mine_hard_negatives(VectorTable(TABLE), [example], list(TABLE)[1:], config)
    # ranks: near duplicate, pos, hard, medium, easy -> window [2, 4) is hard, medium
    assert len(mined.negatives) == 1 and mined.negatives[0] in {"hard", "medium"}


def test_mining_keeps_existing_negatives_first():
    example = TrainExample("q", "pos", negatives=("easy",))
    (mined,) = mine_hard_negatives(VectorTable(TABLE), [example], list(TABLE)[1:], MiningConfig(range_start=0, negatives=2))
    assert mined.negatives[0] == "easy" and len(mined.negatives) == 2


def test_round_trip_keeps_a_corpus_query_only_if_its_passage_ranks_in_the_top_k():
    corpus = list(TABLE)[1:]  # pos ranks second for q, after the near duplicate
    written_from_pos = TrainExample("q", "pos")
    assert mine_hard_negatives(VectorTable(TABLE), [written_from_pos], corpus, MiningConfig(round_trip_k=1)) == []
    (kept,) = mine_hard_negatives(VectorTable(TABLE), [written_from_pos], corpus, MiningConfig(round_trip_k=2))
    assert kept.query == "q" and kept.negatives
    # A positive that is not a corpus document (an LLM-written one) is not round-trip checked.
    table = TABLE | {"written": [0.0, -1.0]}
    (synthetic,) = mine_hard_negatives(VectorTable(table), [TrainExample("q", "written")], corpus, MiningConfig(round_trip_k=1))
    assert synthetic.positive == "written"


def test_hybrid_round_trip_keeps_a_query_whose_passage_bm25_ranks_in_the_top_k():
    table = {
        "where is the lighthouse of alexandria": [1.0, 0.0],
        "The lighthouse of Alexandria stood on the island of Pharos.": [0.0, 1.0],  # the model ranks it last
        "A harbour city on the Mediterranean coast.": [0.9, 0.436],
        "An ancient wonder of the world.": [0.7, 0.714],
    }
    query, positive, *others = table
    corpus = [positive, *others]
    example = TrainExample(query, positive)
    dense_only = MiningConfig(round_trip_k=1, round_trip_lexical=False)
    assert mine_hard_negatives(VectorTable(table), [example], corpus, dense_only) == []
    (kept,) = mine_hard_negatives(VectorTable(table), [example], corpus, MiningConfig(round_trip_k=1))
    assert kept.positive == positive


def test_lexical_tokens_are_words_and_single_cjk_characters():
    assert lexical_tokens("Where is Pharos? 法罗斯岛") == ["where", "is", "pharos", *"法罗斯岛"]
    beijing, shanghai = "北京是中国的首都。", "上海是一座港口城市。"
    assert lexical_top_k([beijing, shanghai], ["中国的首都是哪里", "no shared token"], 1) == [{beijing}, set()]


def test_nearest_passages_pools_every_query_s_rank_r_before_any_rank_r_plus_1():
    table = {
        "q1": [1.0, 0.0, 0.0],
        "q2": [0.0, 1.0, 0.0],
        "first for q1": [0.9, 0.0, 0.1],
        "second for q1": [0.8, 0.0, 0.6],
        "first for q2": [0.0, 0.9, 0.1],
        "second for q2": [0.0, 0.8, 0.6],
        "far": [0.0, 0.0, 1.0],
    }
    corpus = [text for text in table if not text.startswith("q")]
    pooled = nearest_passages(VectorTable(table), ["q1", "q2"], corpus, 3)
    assert pooled[:2] in (["first for q1", "first for q2"], ["first for q2", "first for q1"])
    assert len(pooled) == 3 and pooled[2].startswith("second for")
    assert nearest_passages(VectorTable(table), ["q1"], corpus + corpus, 10) == corpus  # a small corpus: all of it, once
