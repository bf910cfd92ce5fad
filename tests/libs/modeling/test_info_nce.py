"""InfoNCE against a hand-computed example, and its Matryoshka average."""

import math

import torch

from libs.modeling.losses import info_nce, matryoshka_info_nce


def test_info_nce_matches_hand_computed_value():
    # Two queries; documents: both positives, then one hard negative (all unit vectors).
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    documents = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    t = 0.5
    # Cosines: q0 -> (1, 0.6, 0.8), q1 -> (0, 0.8, 0.6); positives are rows 0 and 1.
    loss_q0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0.6 / t) + math.exp(0.8 / t)))
    loss_q1 = -math.log(math.exp(0.8 / t) / (math.exp(0 / t) + math.exp(0.8 / t) + math.exp(0.6 / t)))
    loss = info_nce(queries, documents, torch.tensor([0, 1]), temperature=t)
    assert math.isclose(float(loss), (loss_q0 + loss_q1) / 2, rel_tol=1e-6)


def test_info_nce_uses_cosine_so_vector_length_does_not_matter():
    torch.manual_seed(0)
    q, d = torch.randn(3, 8), torch.randn(5, 8)
    positives = torch.tensor([0, 1, 2])
    assert torch.allclose(info_nce(q, d, positives, 0.02), info_nce(7 * q, 0.1 * d, positives, 0.02))


def test_matryoshka_loss_averages_full_and_truncated_widths():
    torch.manual_seed(0)
    q, d = torch.randn(3, 8), torch.randn(6, 8)
    positives = torch.tensor([0, 1, 2])
    expected = (info_nce(q, d, positives, 0.05) + info_nce(q[:, :4], d[:, :4], positives, 0.05)) / 2
    assert torch.allclose(matryoshka_info_nce(q, d, positives, 0.05, dims=(4,)), expected)
