"""LoRA against plain torch: y = W x + b + s * B A x, on exactly the targeted rows of qkv."""
import pytest
import torch
from peft_checks import build

from mmpeft.peft.layout import find_blocks, get_module


def _randomise_lora(peft, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if 'lora_' in n:
                p.normal_()


def _branch_params(peft, owner: str, attr: str):
    params = dict(peft.named_parameters())
    return params[f'{owner}.{attr}.A'][0], params[f'{owner}.{attr}.B'][0]


@pytest.mark.parametrize('target,rows', [('q', 0), ('k', 1), ('v', 2)])
def test_lora_row_block_equals_plain_torch(target, rows):
    # s = alpha / r = 6 / 2 = 3 (the LoRA paper's convention)
    peft, _ = build('mmpretrain_vit', dict(type='LoRA', rank=2, alpha=6.0, targets=(target,)))
    _randomise_lora(peft, 1)
    blk = find_blocks(peft)[1]
    linear = get_module(peft, blk.qkv)
    owner = blk.qkv.rpartition('.')[0]
    A, B = _branch_params(peft, owner, f'lora_{target}')
    d = linear.in_features
    x = torch.randn(2, 5, d)
    expected = x @ linear.weight.T + linear.bias
    lo, hi = rows * d, (rows + 1) * d
    expected[..., lo:hi] += 3.0 * (x @ A.T @ B.T)
    with torch.no_grad():
        got = linear(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the other row blocks are exactly the frozen projection
    other = [i for i in range(3) if i != rows]
    for i in other:
        torch.testing.assert_close(got[..., i * d:(i + 1) * d],
                                   (x @ linear.weight.T + linear.bias)[..., i * d:(i + 1) * d])


def test_lora_scaling_and_fused_qkv_equal_plain_torch():
    peft, _ = build('mmpretrain_vit', dict(type='LoRA', rank=2, scaling=0.25, targets=('qkv',)))
    _randomise_lora(peft, 2)
    blk = find_blocks(peft)[0]
    linear = get_module(peft, blk.qkv)
    owner, _, local = blk.qkv.rpartition('.')
    A, B = _branch_params(peft, owner, f'lora_{local}')
    x = torch.randn(3, 4, linear.in_features)
    expected = x @ linear.weight.T + linear.bias + 0.25 * (x @ A.T @ B.T)
    with torch.no_grad():
        torch.testing.assert_close(linear(x), expected, rtol=1e-5, atol=1e-5)
