"""HSTViT(with_cp=True): activation checkpointing of the ViT and Side blocks.

The reference is the same backbone without checkpointing (same weights via the state dict): outputs
and every trainable parameter's gradient must agree, in train mode with stochastic depth on both
networks (so the recomputation has to replay the same random masks). That checkpointing happened is
seen from outside: the bytes of tensors autograd keeps for the backward pass (counted by a plain
``saved_tensors_hooks`` pair, unique storages, parameters left out) drop.
"""
import copy
import weakref
from typing import Dict, Tuple

import pytest
import torch
import torch.nn as nn

import mmpeft  # noqa: F401
from mmpeft.backbones import HSTViT

TINY_VIT = dict(depth=4, embed_dim=64, num_heads=2, img_size=64)
TINY_DIMS = [16, 24, 32, 48]


def tiny_pair(**kwargs) -> Tuple[HSTViT, HSTViT]:
    """The same tiny HSTViT without and with checkpointing (identical weights), in train mode."""
    cfg = dict(vit_kwargs=TINY_VIT, embed_dims=TINY_DIMS, **kwargs)
    torch.manual_seed(0)
    plain = HSTViT(**cfg)
    torch.manual_seed(1)  # different init on purpose: the state dict must make them equal
    cp = HSTViT(with_cp=True, **cfg)
    cp.load_state_dict(plain.state_dict())
    return plain.train(), cp.train()


def run_step(model: nn.Module, x: torch.Tensor, weights) -> Tuple[list, Dict[str, torch.Tensor]]:
    """One forward (fixed RNG seed, for drop path) and backward of ``sum(w_j * out_j)``."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    outs = model(x)
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return [o.detach() for o in outs], grads


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd holds for the backward after ``model(x)`` (not parameters)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    refs = []

    def pack(t):
        refs.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
    storages = {}
    for r in refs:
        t = r()
        if t is not None:  # still referenced (by the graph) at the end of the forward pass
            s = t.untyped_storage()
            if s.data_ptr() not in params:
                storages[s.data_ptr()] = s.nbytes()
    del outs
    return sum(storages.values())


@pytest.mark.parametrize('kwargs', [
    dict(drop_path_rate=0.2),                                  # drop path on the Side and ViT blocks
    dict(num_meta_tokens=0, drop_path_rate=0.0),               # no Meta-Register tokens
    dict(out_type='pooled', drop_path_rate=0.1),               # classification output, BN1d pooled norm
])
def test_outputs_and_gradients_equal_without_checkpointing(kwargs):
    plain, cp = tiny_pair(**kwargs)
    x = torch.randn(2, 3, 80, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        shapes = [o.shape for o in plain(x)]
    weights = [torch.randn(s, generator=torch.Generator().manual_seed(9 + j)) for j, s in enumerate(shapes)]
    outs0, grads0 = run_step(plain, x, weights)
    outs1, grads1 = run_step(cp, x, weights)
    assert len(outs0) == len(outs1)
    for a, b in zip(outs0, outs1):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    assert grads0.keys() == grads1.keys()
    # the trainable set reaches into the ViT (its block norms, the meta tokens) and the side network
    assert any(n.startswith('vit.blocks.') for n in grads0) and any(n.startswith('side_network.') for n in grads0)
    # most gradients are non-zero, so the comparison tests something (some are zero by design: a key
    # bias shifts every Meta-Global logit alike; with one Meta-Global token the attention ignores its query)
    zero = [n for n, g in grads0.items() if not g.any()]
    assert len(zero) < 0.25 * len(grads0), zero
    assert not [n for n in zero if n.startswith('vit.')], zero
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=0, atol=1e-6, msg=lambda m, n=n: f'{n}: {m}')


def test_checkpointing_keeps_fewer_bytes_for_the_backward():
    plain, cp = tiny_pair()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    without = saved_activation_bytes(plain, x)
    with_cp = saved_activation_bytes(cp, x)
    # inside a checkpointed block only its inputs are kept; the blocks hold most activations of the net
    assert 0 < with_cp < 0.6 * without, (with_cp, without)


def test_no_grad_and_eval_run_the_plain_forward():
    plain, cp = tiny_pair()
    plain.eval()
    cp.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for a, b in zip(plain(x), cp(x)):
            torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_same_parameters_and_state_dict_keys():
    plain, cp = tiny_pair()
    assert list(plain.state_dict()) == list(cp.state_dict())
    assert [(n, p.requires_grad) for n, p in plain.named_parameters()] == \
        [(n, p.requires_grad) for n, p in cp.named_parameters()]
    assert HSTViT(vit_kwargs=TINY_VIT, embed_dims=TINY_DIMS).with_cp is False  # off by default


def test_parallel_execution_refuses_checkpointing_naming_both_options():
    with pytest.raises(ValueError, match=r"with_cp=True .*execution='parallel'"):
        HSTViT(vit_kwargs=TINY_VIT, embed_dims=TINY_DIMS, execution='parallel', with_cp=True)


def test_a_deep_copy_checkpoints_its_own_blocks():
    # e.g. mmengine's EMA model is a deepcopy: its blocks must run (and recompute) the copy's weights
    plain, cp = tiny_pair()
    ema = copy.deepcopy(cp)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(1.1)
    plain.load_state_dict(ema.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    weights = [torch.ones(()) for _ in range(4)]
    outs0, grads0 = run_step(plain, x, weights)
    outs1, grads1 = run_step(ema, x, weights)
    for a, b in zip(outs0, outs1):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=0, atol=1e-5, msg=lambda m, n=n: f'{n}: {m}')
