"""Adapters against plain torch: the output scale s and the input each form reads."""
import torch
import torch.nn.functional as F
from peft_checks import build

from mmpeft.peft.layout import find_blocks, get_module


def _randomise_injected(peft, seed: int) -> dict:
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if p.requires_grad:
                p.normal_()
    return dict(peft.named_parameters())


def test_adaptformer_parallel_scaled_branch_reads_the_mlp_input():
    # AdaptFormer: MLP(x) + 0.1 * (W_up relu(W_down x + b_d) + b_u), x the MLP's own input
    peft, plain = build('mmpretrain_vit', dict(type='AdaptFormer', hidden_dims=8))
    params = _randomise_injected(peft, 0)
    blk = find_blocks(peft)[1]
    name = f'{blk.name}.adapter_mlp'
    down, db = params[f'{name}.down'][0], params[f'{name}.down_bias'][0]
    up, ub = params[f'{name}.up'][0], params[f'{name}.up_bias'][0]
    x = torch.randn(2, 5, blk.dims)
    with torch.no_grad():
        expected = get_module(plain, blk.mlp)(x) + 0.1 * (F.relu(x @ down.T + db) @ up.T + ub)
        got = get_module(peft, blk.mlp)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_sequential_adapter_with_norm_and_scale_reads_the_sublayer_output():
    # sequential: f + s * A(LN(f)), f = MLP(x); s = 0.5
    peft, plain = build('mmpretrain_vit', dict(type='Adapter', reduction_ratio=4, scale=0.5))
    params = _randomise_injected(peft, 1)
    blk = find_blocks(peft)[0]
    name = f'{blk.name}.adapter_mlp'
    p = {k: params[f'{name}.{k}'][0] for k in ('down', 'down_bias', 'up', 'up_bias',
                                                 'norm_weight', 'norm_bias')}
    x = torch.randn(2, 5, blk.dims)
    with torch.no_grad():
        f = get_module(plain, blk.mlp)(x)
        h = F.layer_norm(f, (blk.dims,), p['norm_weight'], p['norm_bias'])
        expected = f + 0.5 * (F.relu(h @ p['down'].T + p['down_bias']) @ p['up'].T + p['up_bias'])
        got = get_module(peft, blk.mlp)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
