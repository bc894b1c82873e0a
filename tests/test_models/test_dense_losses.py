"""Per-task losses: cross-entropy (ignore 255), balanced BCE (saliency), L1 on normalised normals."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmpeft.models import BalancedBCELoss, DenseCrossEntropyLoss, NormalsL1Loss


def test_cross_entropy_ignores_255_and_averages_over_valid_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    gt = torch.randint(0, 5, (2, 4, 4))
    gt[0, :2] = 255
    loss = DenseCrossEntropyLoss()(logits, gt)
    valid = gt != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], gt[valid])
    torch.testing.assert_close(loss, expected)
    # nothing valid: zero, still connected to the prediction
    empty = DenseCrossEntropyLoss()(logits, torch.full_like(gt, 255))
    assert empty.item() == 0.0
    empty.backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0


def test_balanced_bce_weights_positives_by_the_share_of_negatives():
    logits = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    gt = torch.tensor([[[1, 0], [0, 255]]])  # 1 positive, 2 negatives, 1 ignored
    loss = BalancedBCELoss()(logits, gt)
    w = 2 / 3
    sig = torch.sigmoid(logits[0, 0])
    expected = -(w * math.log(sig[0, 0]) + (1 - w) * math.log(1 - sig[0, 1]) + (1 - w) * math.log(1 - sig[1, 0])) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # numerically stable for large logits
    assert torch.isfinite(BalancedBCELoss()(torch.full((1, 1, 2, 2), 200.0), torch.zeros(1, 2, 2, dtype=torch.long)))
    with pytest.raises(ValueError, match='1 prediction channels'):
        BalancedBCELoss()(torch.zeros(1, 2, 2, 2), gt)


def test_normals_l1_normalises_predictions_and_skips_invalid_pixels():
    gt = F.normalize(torch.randn(2, 3, 4, 4), dim=1)
    gt[1, :, :2] = 0  # invalid
    loss = NormalsL1Loss()
    assert loss(gt * 7.0, gt).item() == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    pred = gt.clone()
    pred[1, :, :2] = torch.randn(3, 2, 4)  # anything on invalid pixels
    assert loss(pred, gt).item() == pytest.approx(0.0, abs=1e-6)
    opposite = loss(-gt, gt)
    valid = gt.abs().sum(1) > 0
    expected = (2 * gt.abs()).permute(0, 2, 3, 1)[valid].mean()
    torch.testing.assert_close(opposite, expected)
