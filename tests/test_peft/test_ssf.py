"""SSF: scale/shift after every linear, LayerNorm and patch-embedding conv; identity start, step,
merge round trip (also task-wise), and the ViT-B count of the HST comparison rows."""
import copy

import pytest
import torch
import torch.nn as nn
from peft_checks import (
    TASKS,
    build,
    encoder_trainable_millions,
    images,
    max_diff,
    outputs,
    perturb,
)

from mmpeft.peft.ssf import SSF_TYPES

KINDS = ['swin', 'mmpretrain_vit', 'timm_vit']


def test_ssf_covers_every_operation():
    peft, _ = build('swin', dict(type='SSF'))
    ops = {n for n, m in peft.named_modules() if isinstance(m, SSF_TYPES) and n}
    assert {n.rsplit('.', 1)[0] for n in peft.peft.injected} == ops
    # bias-free linear (Swin's patch-merging reduction): a scale, no shift, so that it folds
    red = peft.stages[0].downsample.reduction
    assert red.bias is None and red.ssf.beta is None


@pytest.mark.parametrize('kind', KINDS)
def test_ssf_merge_round_trip(kind):
    peft, plain = build(kind, dict(type='SSF', init_std=0.02))
    perturb(peft)
    x = images(kind)
    with torch.no_grad():
        before = outputs(peft, x)
        merged = copy.deepcopy(peft)
        merged.peft.merge_and_unload()
        assert max_diff(before, outputs(merged, x)) < 1e-5
        assert set(merged.state_dict()) == set(plain.state_dict())
        plain.load_state_dict(merged.state_dict(), strict=True)
        assert max_diff(outputs(plain, x), before) < 1e-5
    assert not any(isinstance(m, nn.Module) and type(m).__name__ == 'ScaleShift' for m in merged.modules())


def test_ssf_merge_task():
    peft, _ = build('swin', dict(type='SSF', tasks=TASKS[:3]))
    perturb(peft)
    x = images('swin')
    with torch.no_grad():
        want = outputs(peft, x, 'sal')
        merged = copy.deepcopy(peft)
        merged.peft.merge_and_unload(task='sal')
        assert max_diff(outputs(merged, x), want) < 1e-5


def test_ssf_vit_b_count():
    """HST Table 2 lists SSF at 0.24M with the VTAB head; the ViT-B/16 backbone part is 0.21M:
    12 blocks x 22d (qkv 3d, proj d, fc1 4d, fc2 d, two norms: scale and shift each) + patch embed + final norm."""
    vit_b = dict(type='mmpretrain.TIMMBackbone', model_name='vit_base_patch16_224', num_classes=0)
    got = encoder_trainable_millions(dict(type='SSF'), vit_b)
    assert got == (12 * 22 * 768 + 2 * 768 + 2 * 768) / 1e6
