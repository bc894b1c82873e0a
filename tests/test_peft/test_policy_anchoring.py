"""Trainable patterns are anchored at the start of parameter names (as the README says)."""
import torch.nn as nn

from mmpeft.peft.policy import apply_trainable


def test_pattern_matches_only_at_the_start_of_names():
    model = nn.Module()
    model.head = nn.Linear(2, 2)
    model.backbone = nn.Module()
    model.backbone.head = nn.Linear(2, 2)          # 'head' inside the name must not match
    model.backbone.norm = nn.LayerNorm(2)
    enabled = apply_trainable(model, ['head', r'backbone\..*norm'])
    assert enabled == ['head.weight', 'head.bias', 'backbone.norm.weight', 'backbone.norm.bias']
    assert not model.backbone.head.weight.requires_grad
    assert not model.backbone.head.bias.requires_grad
