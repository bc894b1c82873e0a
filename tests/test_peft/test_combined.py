"""Combined methods and NOAH: counts by hand, what trains, one task argument, bad input named."""
import pytest
import torch

import mmpeft  # noqa: F401
from mmpeft.backbones import build_peft_backbone
from mmpeft.registry import PEFT_METHODS

TIMM_VIT = dict(type='mmpretrain.TIMMBackbone', model_name='vit_tiny_patch16_224', features_only=True,
                out_indices=(1,), img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def trainable(model):
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def test_noah_counts_by_hand_and_trains_its_three_parts():
    torch.manual_seed(0)
    bb = build_peft_backbone(dict(TIMM_VIT), dict(type='NOAH', adapter_dims=3, lora_rank=2, num_prompts=4))
    d, layers = 32, 2
    adapter = layers * (2 * d * 3 + 3 + d)  # W_down, W_up, their biases; no adapter LayerNorm
    lora = layers * 2 * (2 * d * 2)  # q and v: A (r x d) and B (d x r)
    prompts = layers * 4 * d
    names = trainable(bb)
    assert sum(names.values()) == adapter + lora + prompts
    kinds = {'adapter': 0, 'lora': 0, 'vpt': 0}
    for n, c in names.items():
        kinds[next(k for k in kinds if f'.{k}' in n)] += c
    assert kinds == {'adapter': adapter, 'lora': lora, 'vpt': prompts}


def test_noah_full_size_is_table_2s_row():
    """ViT-B/16, 5 / 5 / 5: 12 x (2*768*5 + 5 + 768) + 12 x 2 x 2*768*5 + 12 x 5 x 768 = 331,836."""
    with torch.device('meta'):
        bb = build_peft_backbone(dict(type='mmpretrain.TIMMBackbone', model_name='vit_base_patch16_224',
                                      features_only=False), dict(type='NOAH'))
    assert sum(trainable(bb).values()) == 331_836


def test_combined_shares_one_task_argument():
    torch.manual_seed(0)
    bb = build_peft_backbone(dict(TIMM_VIT), dict(type='Combined', tasks=['a', 'b'], methods=[
        dict(type='LoRA', rank=2), dict(type='Adapter', reduction_ratio=4)]))
    with torch.no_grad():
        for p in bb.parameters():
            if p.requires_grad:
                p.normal_()
    methods = bb.peft.method.methods
    assert all(m.switch is bb.peft.switch for m in methods)
    bb.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = bb(x, task='a')[0], bb(x, task='b')[0]
        with bb.peft.disabled():
            plain = bb(x, task='a')[0]
    assert (a - b).abs().max() > 1e-4 and (a - plain).abs().max() > 1e-4


@pytest.mark.parametrize('cfg,error,match', [
    (dict(methods=[]), ValueError, 'methods is empty'),
    (dict(methods=[dict(type='LoRA', num_tasks=2)]), ValueError, r"sets \['num_tasks'\]"),
    (dict(methods=[dict(type='LNTuning')]), TypeError, 'injects no modules'),
    (dict(methods=['LoRA']), TypeError, r'methods\[0\] must be a method config dict'),
])
def test_bad_combinations_are_named(cfg, error, match):
    with pytest.raises(error, match=match):
        PEFT_METHODS.build(dict(type='Combined', **cfg))
