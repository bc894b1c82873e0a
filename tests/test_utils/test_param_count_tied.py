"""count_params: shared (tied) tensors are counted once, parts follow the first name component."""
import torch.nn as nn

from mmpeft.utils.param_count import count_params


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.a = nn.Linear(4, 4)            # 16 + 4
        self.backbone.b = nn.Linear(4, 4)            # its weight is a's: only the bias (4) is new
        self.backbone.b.weight = self.backbone.a.weight
        self.decode_head = nn.Linear(4, 2)           # 8 + 2
        self.decode_head.bias.requires_grad_(False)


def test_tied_tensor_counted_once():
    c = count_params(_Tied())
    assert c['Encoder'] == dict(trainable=24, total=24)
    assert c['Heads'] == dict(trainable=8, total=10)
    assert c['All'] == dict(trainable=32, total=34)
