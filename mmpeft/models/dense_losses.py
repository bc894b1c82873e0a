"""The per-task losses of the Polyhistor benchmark (Sec. 5.1): cross-entropy, balanced BCE, normals L1.

Each takes logits / predictions and ground truth at the same resolution and returns a scalar averaged over
valid pixels; with no valid pixel the loss is ``0`` but still connected to the prediction (so DDP sees a
gradient, zero, for every head).
"""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import MODELS


def _check(pred: Tensor, gt: Tensor, channels: int = None, name: str = '') -> None:
    if pred.dim() != 4 or gt.shape[0] != pred.shape[0] or gt.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f'{name}: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} '
                         f'must be (B, C, H, W) and (B, [C,] H, W) of the same size')
    if channels is not None and pred.shape[1] != channels:
        raise ValueError(f'{name}: expected {channels} prediction channels, got {pred.shape[1]}')


@MODELS.register_module()
class DenseCrossEntropyLoss(nn.Module):
    """Per-pixel cross-entropy, mean over pixels whose label is not ``ignore_index`` (semseg, parts).

    ``pred (B, C, H, W)`` logits, ``gt (B, H, W)`` long class ids.
    """

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, gt: Tensor) -> Tensor:
        _check(pred, gt, name=type(self).__name__)
        loss = F.cross_entropy(pred, gt.long(), ignore_index=self.ignore_index, reduction='sum')
        return loss / (gt != self.ignore_index).sum().clamp(min=1)


@MODELS.register_module()
class BalancedBCELoss(nn.Module):
    """Class-balanced binary cross-entropy (saliency), as the multi-task dense prediction literature uses.

    With ``P`` salient and ``N`` non-salient valid pixels in the batch, positives weigh ``w = N / (P + N)``
    and negatives ``1 - w``; the weighted BCE is averaged over valid pixels.
    ``pred (B, 1, H, W)`` logits, ``gt (B, H, W)`` in {0, 1, ``ignore_index``}.
    """

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, gt: Tensor) -> Tensor:
        _check(pred, gt, 1, type(self).__name__)
        logits = pred[:, 0]
        valid = (gt != self.ignore_index).float()
        pos = (gt == 1).float() * valid
        n_valid = valid.sum()
        w_pos = (n_valid - pos.sum()) / n_valid.clamp(min=1)  # share of negatives
        # log(sigmoid(x)) and log(1 - sigmoid(x)) = log(sigmoid(-x)), numerically stable
        loss = -(w_pos * pos * F.logsigmoid(logits) + (1 - w_pos) * (valid - pos) * F.logsigmoid(-logits))
        return loss.sum() / n_valid.clamp(min=1)


@MODELS.register_module()
class NormalsL1Loss(nn.Module):
    """L1 between L2-normalised predicted normals and ground truth, over valid pixels (gt not all zero).

    Averaged over the 3 components of every valid pixel. ``pred, gt (B, 3, H, W)``.
    """

    def forward(self, pred: Tensor, gt: Tensor) -> Tensor:
        _check(pred, gt, 3, type(self).__name__)
        valid = (gt.abs().sum(dim=1, keepdim=True) > 0).float()
        diff = (F.normalize(pred, dim=1) - gt).abs() * valid
        return diff.sum() / (3 * valid.sum()).clamp(min=1)
