import pytest
import torch

from lightning_mm.models import splice_image_features

IMG = 7


def test_rows_replaced_in_order_and_gradients_flow():
    torch.manual_seed(0)
    ids = torch.tensor([[1, IMG, IMG, 2, 3], [IMG, IMG, IMG, IMG, 4]])
    emb = torch.randn(2, 5, 3, requires_grad=True)
    feats = torch.randn(3, 2, 3, requires_grad=True)  # 3 images x 2 tokens
    out = splice_image_features(emb, ids, feats, IMG)
    flat = feats.reshape(-1, 3)
    torch.testing.assert_close(out[0, 1:3], flat[0:2])
    torch.testing.assert_close(out[1, 0:4], flat[2:6])
    torch.testing.assert_close(out[0, [0, 3, 4]], emb[0, [0, 3, 4]])
    out.sum().backward()
    assert torch.equal(feats.grad, torch.ones_like(feats))
    assert emb.grad[0, 1].abs().sum() == 0 and emb.grad[0, 0].abs().sum() > 0


def test_count_mismatch_names_first_bad_sample():
    ids = torch.tensor([[IMG, IMG, 1], [IMG, 1, 1], [IMG, IMG, 1]])
    emb = torch.zeros(3, 3, 4)
    with pytest.raises(ValueError, match="first mismatching sample: index 1"):
        splice_image_features(emb, ids, torch.zeros(3, 2, 4), IMG)  # 2 tokens/image, sample 1 has 1
    with pytest.raises(ValueError, match="index 2"):
        splice_image_features(emb, ids, torch.zeros(4, 4), IMG)  # 5 tokens, only 4 rows: sample 2 runs short


def test_no_image_tokens_no_features_is_identity():
    emb = torch.randn(2, 3, 4)
    out = splice_image_features(emb, torch.ones(2, 3, dtype=torch.long), torch.zeros(0, 4), IMG)
    assert torch.equal(out, emb)
