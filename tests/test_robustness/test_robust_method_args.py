"""Method hyper-parameters that cannot work are rejected at build time, naming the argument, the value,
the layer and the fix (issue #9 item 10 and the out_indices / input-channel cases); valid values build.

Tiny mmseg Swin: stage widths 16, 32, 64, 128; the narrowest targeted linear is stage 0's fused qkv
(16 -> 48), so a LoRA update there has rank at most 16.
"""
import warnings

import pytest
import torch
import torch.nn as nn

import mmpeft  # noqa: F401
from mmpeft.backbones import PolyhistorSwin, PretrainedSwin, build_peft_backbone

SWIN = dict(type='mmseg.SwinTransformer', embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
            window_size=4, drop_path_rate=0.)
TINY = {k: v for k, v in SWIN.items() if k != 'type'}


def peft(method: dict) -> nn.Module:
    return build_peft_backbone(dict(SWIN), method)


def test_lora_rank_above_layer_width_is_rejected():
    with pytest.raises(ValueError, match=r"rank=17 .*'stages\.0\.blocks\.0\.attn\.w_msa\.qkv'.*48 x 16.*rank <= 16"):
        peft(dict(type='LoRA', rank=17))
    # q / v row blocks: a 16 x 16 update at stage 0
    with pytest.raises(ValueError, match=r'16 x 16'):
        peft(dict(type='LoRA', rank=20, targets=('q', 'v')))


def test_lora_full_rank_warns_and_builds():
    with pytest.warns(UserWarning, match=r"rank=16 equals the width of \['stages\.0\.blocks\.0\.attn\.w_msa\.qkv'"):
        model = peft(dict(type='LoRA', rank=16))
    a = dict(model.named_parameters())['stages.0.blocks.0.attn.w_msa.lora_qkv.A']
    assert tuple(a.shape) == (1, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        peft(dict(type='LoRA', rank=15))  # below every width: silent


@pytest.mark.parametrize('method,message', [
    (dict(type='Adapter', reduction_ratio=3), r"reduction_ratio=3 does not divide block 'stages\.0\.blocks\.0' "
                                              r"\(width d=16\) \(n = d / rho = 5\.33333\).*hidden_dims"),
    (dict(type='Adapter', reduction_ratio=2.5), r'reduction_ratio=2\.5 does not divide .*d=16.*6\.4'),
    (dict(type='Adapter', reduction_ratio=0.5), r'reduction_ratio=0\.5 gives a bottleneck n=32 wider than .*d=16'),
    (dict(type='Adapter', reduction_ratio=64), r'reduction_ratio=64 leaves no hidden unit .*d=16.*<= 16'),
    (dict(type='AdaptFormer', hidden_dims=64), r"hidden_dims=64 gives a bottleneck n=64 wider than block "
                                               r"'stages\.0\.blocks\.0' \(width d=16\).*hidden_dims <= 16"),
    (dict(type='Adapter', hidden_dims=4, rank=5), r'rank=5 exceeds the bottleneck n=4 .*rank <= 4'),
    (dict(type='LowRankAdapter', rank=9), r'rank=9 exceeds the bottleneck n=8 .*d=16.*rank <= 8'),
    (dict(type='Compacter', phm_dim=3), r"phm_dim=3 does not divide the width d=16 of block 'stages\.0\.blocks\.0'"
                                        r'.*\[1, 2, 4, 8, 16\]'),
    (dict(type='VPTDeep', num_tokens=0), r'num_tokens must be a positive int, got 0'),
    (dict(type='VPTDeep', num_tokens=2.5), r'num_tokens must be a positive int, got 2\.5'),
])
def test_bad_method_size_is_rejected(method, message):
    with pytest.raises(ValueError, match=message):
        peft(method)


def test_valid_sizes_build_what_they_say():
    # rho = 4.0 is a whole ratio: n = 16 / 4 = 4 at stage 0, 128 / 4 = 32 at stage 3
    model = peft(dict(type='Adapter', reduction_ratio=4.0))
    params = dict(model.named_parameters())
    assert tuple(params['stages.0.blocks.0.adapter_mlp.down'].shape) == (1, 4, 16)
    assert tuple(params['stages.3.blocks.0.adapter_mlp.down'].shape) == (1, 32, 128)
    # rank 8 = n at stage 0: allowed
    peft(dict(type='LowRankAdapter', rank=8))


@pytest.mark.parametrize('kwargs,message', [
    (dict(mode='polyhistor', reduction_ratio=2.5), r'reduction_ratio=2\.5 is not allowed.*whole number'),
    (dict(mode='hyperformer', reduction_ratio=0), r'reduction_ratio=0 is not allowed'),
    (dict(mode='polyhistor', reduction_ratio=True), r'reduction_ratio=True is not allowed'),
    (dict(mode='polyhistor', embed_dims_task=8.5), r'embed_dims_task=8\.5 is not allowed'),
    (dict(mode='polyhistor_lite', embed_dims_task=8, scales=(1, 2.5, 4, 8)), r'scales=2\.5 is not allowed'),
    (dict(mode='polyhistor', out_indices=(0, 4)), r'out_indices=\(0, 4\) has \[4\] outside the 4 stages.*0\.\.3'),
    (dict(mode='polyhistor', out_indices=(-1,)), r'out_indices=\(-1,\) has \[-1\]'),
])
def test_polyhistor_swin_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PolyhistorSwin(**dict(TINY, **kwargs))


def test_polyhistor_swin_whole_float_ratio_is_the_int_one():
    a = PolyhistorSwin(mode='polyhistor', reduction_ratio=2.0, rank=2, embed_dims_task=8, **TINY)
    # n = d / 2 by hand: stage-0 adapter (d=16, n=8) generates a 16 x 2n = 16 x 16 weight with rank 2
    gen = a.adapters['stage0_block0_attn'].weight
    assert (gen.d, gen.n, gen.r) == (16, 8, 2) and a.method.reduction_ratio == 2


def test_out_indices_and_channels_of_pretrained_swin():
    with pytest.raises(ValueError, match=r'out_indices=\(1, 5\) has \[5\] outside the 4 stages'):
        PretrainedSwin(out_indices=(1, 5), **TINY)
    swin = PretrainedSwin(out_indices=(3,), **TINY)
    assert [tuple(f.shape) for f in swin(torch.randn(1, 3, 32, 32))] == [(1, 128, 1, 1)]
    for c in (1, 4):
        with pytest.raises(ValueError, match=rf'C = in_channels = 3, got shape \(1, {c}, 32, 32\)'):
            swin(torch.randn(1, c, 32, 32))


@pytest.mark.parametrize('channels', [1, 4])
def test_polyhistor_swin_wrong_channel_count(channels):
    model = PolyhistorSwin(mode='polyhistor', reduction_ratio=4, rank=2, embed_dims_task=8, **TINY)
    with pytest.raises(ValueError, match=rf'C = in_channels = 3, got shape \(2, {channels}, 32, 32\)'):
        model(torch.randn(2, channels, 32, 32), task='sal')
    with pytest.raises(ValueError, match=rf'C = in_channels = 3, got shape \(2, {channels}, 32, 32\)'):
        model.peft.forward_tasks(torch.randn(2, channels, 32, 32), ['sal', 'parts'])
