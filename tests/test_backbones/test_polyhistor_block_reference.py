"""PolyhistorSwin's adapted Swin block against plain torch (eq. 1: the adapter reads the sub-layer
output h, and its branch is added to h before the block's residual). The block is mmseg's own, run
with the weights a backbone call would have generated for it."""
import torch
import torch.nn.functional as F

from mmpeft.backbones import PolyhistorSwin
from mmpeft.peft.hypernet import AdapterParams

TINY = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0)


def _params(d: int, n: int, seed: int) -> AdapterParams:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(1, *s, generator=g) * 0.5  # noqa: E731
    return AdapterParams(r(d, n), r(n), r(n, d), r(d), r(d), r(d))


def _branch(h: torch.Tensor, p: AdapterParams) -> torch.Tensor:
    """LN_{gamma, beta}(gelu(h W_down + b_down) W_up + b_up), written out for one task."""
    u = F.gelu(h @ p.w_down[0] + p.b_down[0]) @ p.w_up[0] + p.b_up[0]
    return F.layer_norm(u, (u.shape[-1],)) * p.gamma[0] + p.beta[0]


def test_adapted_block_equals_plain_torch():
    torch.manual_seed(0)
    model = PolyhistorSwin(mode='polyhistor_lite', reduction_ratio=2, embed_dims_task=8, **TINY).eval()
    block = model.stages[2].blocks[1]               # a shifted-window block
    d, hw = 64, (4, 4)
    x = torch.randn(2, hw[0] * hw[1], d)
    pa, pf = _params(d, 8, 1), _params(d, 8, 2)
    with torch.no_grad():
        with model.peft.disabled():                   # the toolbox's own sub-layers, no adapter
            h = block.attn(block.norm1(x), hw)       # attention sub-layer
            x1 = x + h + _branch(h, pa)
            f = block.ffn(block.norm2(x1), identity=0.0)  # the FFN sub-layer without its residual
        expected = x1 + f + _branch(f, pf)
        with model.method.call.using((0,), {'stage2_block1_attn': pa, 'stage2_block1_ffn': pf}):
            got = block(x, hw)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_site_outside_a_backbone_call_is_named():
    model = PolyhistorSwin(mode='polyhistor', reduction_ratio=2, rank=1, embed_dims_task=8, **TINY).eval()
    block = model.stages[0].blocks[0]
    try:
        block(torch.randn(1, 256, 16), (16, 16))
    except RuntimeError as e:
        assert "'stage0_block0_attn' ran outside a call of its backbone" in str(e)
    else:
        raise AssertionError('an adapter site without generated weights must not run as the identity')
