"""LoRA: trainable set, identity at the start, one step, merge round trip, keys, errors, counts."""
import copy

import pytest
import torch
from peft_checks import (
    TASKS,
    build,
    check_step,
    check_trainable_is_injected,
    encoder_trainable_millions,
    images,
    max_diff,
    outputs,
    perturb,
)

from mmpeft.peft.layout import find_blocks

KINDS = ['swin', 'mmpretrain_vit', 'timm_vit']


@pytest.mark.parametrize('kind', KINDS)
def test_lora_targets_and_trainable_set(kind):
    peft, _ = build(kind, dict(type='LoRA', rank=2, targets=('q', 'v', 'proj', 'fc1', 'fc2')))
    n_blocks = len(find_blocks(peft))
    trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * 5 * n_blocks  # A and B per target per block
    assert all('lora_' in n for n in trainable)
    check_step(peft, images(kind))


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('targets', [('qkv',), ('q', 'v', 'proj', 'fc2')])
def test_lora_merge_round_trip(kind, targets):
    peft, plain = build(kind, dict(type='LoRA', rank=2, targets=targets))
    perturb(peft)
    peft.eval()
    x = images(kind)
    with torch.no_grad():
        before = outputs(peft, x)
        assert max_diff(before, outputs(plain, x)) > 1e-3  # the update does something
        merged = copy.deepcopy(peft)
        merged.peft.merge_and_unload()
        after = outputs(merged, x)
    assert max_diff(before, after) < 1e-5
    # the merged backbone is the plain architecture: same keys, loads strictly, same outputs
    assert set(merged.state_dict()) == set(plain.state_dict())
    plain.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        assert max_diff(outputs(plain, x), before) < 1e-5
    # the unmerged copy is untouched by merging the deepcopy
    with torch.no_grad():
        assert max_diff(outputs(peft, x), before) == 0


def test_lora_merge_one_task_of_several():
    peft, plain = build('swin', dict(type='LoRA', rank=2, tasks=TASKS[:2]))
    perturb(peft)
    x = images('swin')
    with torch.no_grad():
        want = outputs(peft, x, 'parts')
        with pytest.raises(ValueError, match='task'):
            copy.deepcopy(peft).peft.merge_and_unload()
        merged = copy.deepcopy(peft)
        merged.peft.merge_and_unload(task='parts')
        assert max_diff(outputs(merged, x), want) < 1e-5
        assert 'peft' not in vars(merged)  # merged and unloaded: the plain backbone


def test_lora_norm_variant_counts_and_refuses_merge():
    peft, plain = build('swin', dict(type='LoRA', rank=2, norm=True))
    check_trainable_is_injected(peft)
    with torch.no_grad():
        assert max_diff(outputs(peft, images('swin')), outputs(plain, images('swin'))) == 0
    check_step(peft, images('swin'))
    assert not peft.peft.mergeable
    with pytest.raises(ValueError, match='cannot be merged'):
        peft.peft.merge_and_unload()


@pytest.mark.parametrize('cfg, match', [
    (dict(targets=('qkv', 'q')), 'already covers'),
    (dict(targets=('query',)), 'unknown LoRA target'),
    (dict(rank=0), 'rank'),
    (dict(num_tasks=2, tasks=['a']), 'disagrees'),
])
def test_lora_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        build('swin', dict(type='LoRA', **cfg))


def test_lora_counts_swin_t_4_tasks():
    """Polyhistor Table 1: LoRA 0.32M. Plain LoRA (rank 4 on qkv) is 0.283M; the paper's count adds a
    LayerNorm per branch (norm=True: 0.318M), see mmpeft.peft.lora."""
    plain = encoder_trainable_millions(dict(type='LoRA', num_tasks=4))
    assert abs(plain - 16 * 4416 * 4 / 1e6) < 1e-6  # r (d + 3d) per block, sum_blocks d = 4416
    paper_like = encoder_trainable_millions(dict(type='LoRA', norm=True, num_tasks=4))
    assert abs(paper_like / 0.32 - 1) < 0.05
