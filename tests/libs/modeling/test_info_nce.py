"""InfoNCE against a hand-computed example, its Matryoshka average, and the mask of positive copies."""

import math

import torch

from libs.modeling.losses import info_nce, matryoshka_info_nce, positive_copy_mask


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


def test_a_copy_of_the_positive_is_masked_like_a_removed_column():
    # Documents: q0's positive, q1's positive, a copy of q0's positive text (e.g. another
    # example's positive or a hard negative with the same text), then a real negative.
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    documents = torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.8, 0.6]])
    keys = torch.tensor([11, 22, 11, 33])
    t = 0.5
    mask = positive_copy_mask(keys, torch.tensor([0, 1]))
    # Row 0 leaves out column 2 (copy of its positive); row 1 keeps it: a different text from its positive.
    assert mask.tolist() == [[False, False, True, False], [False, False, False, False]]
    loss_q0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0.6 / t) + math.exp(0.8 / t)))
    loss_q1 = -math.log(math.exp(0.8 / t) / (math.exp(0 / t) + math.exp(0.8 / t) + math.exp(0 / t) + math.exp(0.6 / t)))
    loss = info_nce(queries, documents, torch.tensor([0, 1]), temperature=t, mask=mask)
    assert math.isclose(float(loss), (loss_q0 + loss_q1) / 2, rel_tol=1e-6)
    # Row 0 alone equals the loss with the duplicate column removed.
    alone = info_nce(queries[:1], documents[[0, 1, 3]], torch.tensor([0]), temperature=t)
    assert math.isclose(float(info_nce(queries[:1], documents, torch.tensor([0]), t, mask=mask[:1])), float(alone), rel_tol=1e-6)


def test_the_mask_never_hides_the_positive_and_gradients_stay_finite():
    torch.manual_seed(0)
    q = torch.randn(3, 8, requires_grad=True)
    d = torch.randn(5, 8, requires_grad=True)
    positives = torch.tensor([0, 1, 2])
    keys = torch.tensor([1, 1, 2, 1, 3])  # rows 0 and 1 share a positive text; column 3 is a third copy
    mask = positive_copy_mask(keys, positives)
    assert mask.tolist()[:2] == [[False, True, False, True, False], [True, False, False, True, False]]
    loss = matryoshka_info_nce(q, d, positives, 0.05, dims=(4,), mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q.grad).all() and torch.isfinite(d.grad).all()
    assert d.grad[3].abs().sum() > 0  # row 2 (another text's query) still uses column 3 as a negative
    # A mask over every column hides no positive: each row keeps exactly its own column.
    full = info_nce(q, d, positives, 0.05, mask=torch.ones(3, 5, dtype=torch.bool))
    assert float(full.detach()) == 0.0


def test_no_copy_means_no_mask_and_the_plain_loss():
    assert positive_copy_mask(torch.tensor([1, 2, 3, 4]), torch.tensor([0, 1])) is None
    torch.manual_seed(1)
    q, d = torch.randn(2, 8), torch.randn(4, 8)
    assert torch.equal(info_nce(q, d, torch.tensor([0, 1]), 0.02, mask=None), info_nce(q, d, torch.tensor([0, 1]), 0.02))
