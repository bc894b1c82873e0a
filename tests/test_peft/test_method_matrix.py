"""Every registered PEFT method x every backbone family, through the same checks (issue #11).

Families (tiny models of the real toolbox classes, see ``peft_checks``): mmseg, mmdet and mmpretrain
Swin; timm ViT (inside mmpretrain's TIMMBackbone); mmpretrain ViT; mmdet PVT (issue #12: widths
16 / 32 / 80 / 128 = 16 x (1, 2, 5, 8) as PVT-Small's 64 x (1, 2, 5, 8), spatial reduction in stages 1-2,
drop path 0.1). Methods: every entry of
``PEFT_METHODS``, single-task, plus the task-wise (T = 2) form of every method that has one.

Checks, each against a reference the attachment does not compute: the plain toolbox backbone (same
frozen weights), the same model without checkpointing, a freshly built model.

- identity at init, where the method is designed so (all but VPT); the plain output shapes; the
  trainable set is exactly the injected modules; once trained, each task's modules act for that task;
- one SGD step changes only trainable tensors, and every trainable tensor got a gradient (DDP with
  ``find_unused_parameters=False`` is safe);
- every key of the plain backbone is kept; new keys lie under injected modules;
- ``peft.disabled()`` computes the plain backbone; ``peft.detach()`` gives it back bit for bit (keys,
  values, ``requires_grad``, outputs, and the injected modules no longer act); attaching again gives
  the same outputs as the first attachment;
- merge / unmerge round trip for the mergeable methods (LoRA, SSF);
- the delta state dict saved and loaded into a fresh model reproduces the outputs;
- ``with_cp=True``: equal outputs and gradients, fewer bytes saved for backward.
"""
import copy
from typing import Dict, List, Optional

import pytest
import torch
import torch.nn as nn
from peft_checks import BACKBONES, images, max_diff, perturb

import mmpeft  # noqa: F401
from mmpeft.backbones import build_peft_backbone
from mmpeft.peft.attachment import PEFTAttachment
from mmpeft.registry import MODELS, PEFT_METHODS

#: a tiny mmdet PVT v1: one block per stage, widths 16 x num_heads; the test images (32 x 40) give token
#: maps 8 x 10, 4 x 5, 2 x 2, 1 x 1, reduced for the keys / values to 2 x 2 (sr 4, 2) in stages 1-2
PVT = dict(type='mmdet.PyramidVisionTransformer', pretrain_img_size=32, embed_dims=16, num_layers=(1, 1, 1, 1),
           num_heads=(1, 2, 5, 8), sr_ratios=(4, 2, 1, 1), mlp_ratios=(2, 2, 2, 2), drop_path_rate=0.1)
BACKBONES = dict(BACKBONES, pvt=PVT)
FAMILIES = ['swin', 'mmdet_swin', 'mmpretrain_swin', 'timm_vit', 'mmpretrain_vit', 'pvt']
SWINS = {'swin', 'mmdet_swin', 'mmpretrain_swin'}

#: small settings per method (the tiny backbones have widths 16..128 and 32)
SETTINGS: Dict[str, dict] = dict(
    LoRA=dict(rank=2), Adapter=dict(reduction_ratio=4), LowRankAdapter=dict(rank=1, reduction_ratio=4),
    SharedAdapter=dict(reduction_ratio=4), AdaptFormer=dict(hidden_dims=8), PHMLayer=dict(phm_dim=4),
    Compacter=dict(phm_dim=4), CompacterPlusPlus=dict(phm_dim=4), VPT=dict(num_tokens=3),
    VPTDeep=dict(num_tokens=3), VPTShallow=dict(num_tokens=3), SSF=dict(init_std=0.),
    BitFit=dict(), RelativePositionBias=dict(),
    # task-conditioned adapters; the backbone's norms (trained by default, shared by the tasks) left frozen
    # here, so what trains is exactly what the method injected
    Hyperformer=dict(reduction_ratio=4, embed_dims_task=8, train_backbone_norms=False),
    Polyhistor=dict(reduction_ratio=4, rank=1, embed_dims_task=8, train_backbone_norms=False),
    PolyhistorLite=dict(embed_dims_task=8, train_backbone_norms=False),
    TaskAdapters=dict(reduction_ratio=4, train_backbone_norms=False),
    Combined=dict(methods=[dict(type='LoRA', rank=2), dict(type='Adapter', reduction_ratio=4, position='attn')]),
    NOAH=dict(adapter_dims=2, lora_rank=2, num_prompts=2))
SELECTION = ('FullFinetune', 'FrozenBackbone', 'LNTuning')
NOT_IDENTITY = ('VPT', 'VPTDeep', 'VPTShallow', 'NOAH')  # prompts change the attention by design
MERGEABLE = ('LoRA', 'SSF')
#: methods that refuse PVT (the error message part expected): prompts (VPT, NOAH's VPT-deep) cannot join
#: PVT's (H, W)-shaped sequence; SSF cannot reach the projections inside nn.MultiheadAttention
PVT_REFUSED = dict(VPT='VPT does not support mmdet PyramidVisionTransformer',
                   VPTDeep='VPTDeep does not support mmdet PyramidVisionTransformer',
                   VPTShallow='VPTShallow does not support mmdet PyramidVisionTransformer',
                   NOAH='VPTDeep does not support mmdet PyramidVisionTransformer',
                   SSF='SSF does not support mmdet PyramidVisionTransformer')


def registered() -> List[str]:
    return sorted(PEFT_METHODS.module_dict)


def test_the_matrix_covers_every_registered_method():
    assert set(registered()) == set(SETTINGS) | set(SELECTION), 'a new method needs a row in SETTINGS'


#: settings the per-method defaults do not reach: Houlsby placement, a scaled parallel adapter, LoRA on
#: every linear (row blocks of the fused qkv included)
VARIANTS = {
    'Adapter-houlsby': dict(type='Adapter', reduction_ratio=4, position='both'),
    'Adapter-parallel': dict(type='Adapter', reduction_ratio=4, mode='parallel', scale=4.0),
    'LoRA-all-linears': dict(type='LoRA', rank=2, targets=('q', 'v', 'proj', 'fc1', 'fc2')),
    'LoRA-q-v-proj': dict(type='LoRA', rank=2, targets=('q', 'v', 'proj')),  # every attention target PVT has
}


def cases():
    out = []
    for family in FAMILIES:
        rows = [(name, dict(type=name, **SETTINGS.get(name, {}))) for name in registered()]
        for label, cfg in rows + list(VARIANTS.items()):
            for tasks in ([1] if cfg['type'] in SELECTION else [1, 2]):
                out.append(pytest.param(family, cfg['type'], method_cfg(cfg, tasks), tasks,
                                        id=f'{family}-{label}-T{tasks}'))
    return out


def method_cfg(cfg: dict, num_tasks: int) -> dict:
    cfg = copy.deepcopy(cfg)
    if num_tasks > 1:
        cfg['num_tasks'] = num_tasks
    return cfg


def applicable(family: str, name: str, cfg: Optional[dict] = None) -> Optional[str]:
    """Why the pair cannot be built (a regex of the error message part expected), or None."""
    if name == 'RelativePositionBias' and family not in SWINS:
        return 'relative_position_bias_table'
    if family == 'pvt' and name in PVT_REFUSED:
        return PVT_REFUSED[name]
    if family == 'pvt' and name == 'LoRA' and {'fc1', 'fc2'} & set((cfg or {}).get('targets', ())):
        return r"LoRA target 'fc1' needs the 'fc1' linear .*PyramidVisionTransformer.*1x1 convolutions"
    return None


def build(family: str, cfg: dict, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    bb = build_peft_backbone(copy.deepcopy(BACKBONES[family]), copy.deepcopy(cfg), **kwargs)
    bb.init_weights()
    bb.eval()  # mmseg's Swin returns None from train()
    return bb


def plain_copy(family: str, peft: nn.Module) -> nn.Module:
    """The plain toolbox backbone with ``peft``'s frozen tensors and ``requires_grad`` flags: torch picks
    other matmul kernels for weights that require a gradient (even under ``no_grad``; seen in PVT's
    ``nn.MultiheadAttention`` on transposed inputs), so bit-for-bit comparisons need the same flags."""
    plain = MODELS.build(copy.deepcopy(BACKBONES[family]))
    missing, _ = plain.load_state_dict(peft.state_dict(), strict=False)
    assert not missing
    flags = {n: p.requires_grad for n, p in peft.named_parameters()}
    for n, p in plain.named_parameters():
        p.requires_grad_(flags[n])
    plain.eval()
    return plain


def run(model: nn.Module, x: torch.Tensor, task=None) -> List[torch.Tensor]:
    out = model(x) if task is None else model(x, task=task)
    return [o for o in out]


def loss(model: nn.Module, x: torch.Tensor, num_tasks: int) -> torch.Tensor:
    tasks = list(range(num_tasks)) if num_tasks > 1 else [None]
    return sum(sum((o.float() ** 2).mean() for o in run(model, x, t)) for t in tasks)


def trainable(model: nn.Module) -> Dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps from the forward ``fn()`` (which returns the loss) for
    the backward, run afterwards. Only the forward is watched: a checkpointed block's recompute saves its
    activations again in the backward, briefly, and on a tiny model whose saved frozen weights outweigh
    its activations (PVT) counting those would hide what checkpointing keeps out of memory."""
    seen = {}

    def pack(t: torch.Tensor):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.backward()
    return sum(seen.values())


@pytest.mark.parametrize('family,name,cfg,num_tasks', cases())
def test_method_on_family(family, name, cfg, num_tasks):
    why = applicable(family, name, cfg)
    if why is not None:
        with pytest.raises(ValueError, match=why):
            build(family, cfg)
        return
    x = images(family)
    peft = build(family, cfg)
    plain = plain_copy(family, peft)
    tasks = list(range(num_tasks)) if num_tasks > 1 else [None]
    assert isinstance(peft.peft, PEFTAttachment) and peft.peft.num_tasks == num_tasks

    # keys of the plain backbone kept; new keys under injected modules
    plain_keys, keys = set(plain.state_dict()), set(peft.state_dict())
    assert plain_keys <= keys
    prefixes = tuple(n + '.' for n in peft.peft.injected)
    injected = set(peft.peft.injected)  # modules (their keys below them) or parameters (the key itself)
    assert all(k.startswith(prefixes) or k in injected for k in keys - plain_keys)

    # what trains is exactly what the method injected (or, for selection methods, what it selects)
    if peft.peft.injected:
        under = {n for n, _ in peft.named_parameters() if n.startswith(prefixes) or n in injected}
        assert set(trainable(peft)) == under

    with torch.no_grad():
        reference = run(plain, x)
        assert [o.shape for o in run(peft, x, tasks[-1])] == [o.shape for o in reference]
        if name not in NOT_IDENTITY:
            for t in tasks:
                assert max_diff(run(peft, x, t), reference) == 0, f'not the identity at init (task {t})'

    # one step: only trainable tensors move; each trainable tensor got a gradient
    perturb(peft)
    if name == 'FrozenBackbone':
        assert not trainable(peft)
    else:
        peft.train()
        before = {k: v.clone() for k, v in peft.state_dict().items()}
        opt = torch.optim.SGD(peft.parameters(), lr=0.5)
        loss(peft, x, num_tasks).backward()
        unused = [n for n, p in trainable(peft).items() if p.grad is None]
        assert not unused, f'trainable but unused in the forward (DDP would hang): {unused[:4]}'
        opt.step()
        changed = {k for k, v in peft.state_dict().items() if not torch.equal(v, before[k])}
        assert changed and changed <= set(trainable(peft)), sorted(changed - set(trainable(peft)))[:4]
        opt.zero_grad(set_to_none=True)
        peft.eval()

    with torch.no_grad():
        adapted = {t: run(peft, x, t) for t in tasks}
        frozen_now = plain_copy(family, peft)  # the frozen tensors as they are now
        if peft.peft.injected:  # the (trained) method acts, and each task's modules act for that task
            assert max_diff(adapted[tasks[0]], run(frozen_now, x)) > 1e-5
            if num_tasks > 1:
                assert max_diff(adapted[0], adapted[1]) > 1e-5
        # disabled(): the frozen backbone's output
        with peft.peft.disabled():
            for t in tasks:
                assert max_diff(run(peft, x, t), run(frozen_now, x)) == 0

        # merge / unmerge (on PVT the attention runs through the extras class: not mergeable)
        assert peft.peft.mergeable == (name in MERGEABLE and family != 'pvt' and bool(peft.peft._hooks))
        if peft.peft.mergeable:
            weights = {k: v.clone() for k, v in peft.state_dict().items()}
            for t in tasks:
                peft.peft.merge(task=t)
                assert max_diff(run(peft, x), adapted[t]) < 1e-5
                peft.peft.unmerge()
                assert max(float((peft.state_dict()[k] - w).abs().max()) for k, w in weights.items()) < 1e-5
        elif peft.peft.injected:
            with pytest.raises(ValueError, match='cannot be merged'):
                peft.peft.merge(task=tasks[0])

        # the delta state dict into a fresh model reproduces the outputs
        adapted = {t: run(peft, x, t) for t in tasks}  # after unmerge's rounding
        delta = {k: v.detach().clone() for k, v in peft.peft.delta_state_dict().items()}
        assert set(delta) == set(trainable(peft))
        fresh = build(family, cfg, seed=1)  # other random weights everywhere
        missing, _ = fresh.load_state_dict({k: v for k, v in peft.state_dict().items() if k not in delta},
                                           strict=False)
        assert set(missing) == set(delta)
        if delta:
            assert any(max_diff(run(fresh, x, t), adapted[t]) > 0 for t in tasks)
        fresh.load_state_dict(delta, strict=False)
        for t in tasks:
            assert max_diff(run(fresh, x, t), adapted[t]) == 0

        # detach: the plain backbone again, bit for bit; attach again: the same outputs as before
        requires = {n: p.requires_grad for n, p in MODELS.build(copy.deepcopy(BACKBONES[family])).named_parameters()}
        params = dict(peft.named_parameters())
        injected = [[params[n]] if n in params else list(peft.get_submodule(n).parameters())
                    for n in peft.peft.injected]
        state = peft.state_dict()
        peft.peft.detach()
        frozen_now = plain_copy(family, peft)  # merge / unmerge moved the frozen weights by rounding
        assert 'peft' not in vars(peft) and 'forward' not in vars(peft)
        assert [type(m) for m in peft.modules()] == [type(m) for m in plain.modules()]  # toolbox classes
        assert set(peft.state_dict()) == plain_keys
        assert all(torch.equal(v, state[k]) for k, v in peft.state_dict().items())
        assert {n: p.requires_grad for n, p in peft.named_parameters()} == requires
        assert max_diff(run(peft, x), run(frozen_now, x)) == 0
        for group in injected:  # detached modules / parameters no longer act
            for p in group:
                p.add_(1.0)
        assert max_diff(run(peft, x), run(frozen_now, x)) == 0


@pytest.mark.parametrize('family,name,cfg,num_tasks', [c for c in cases() if c.values[1] != 'FrozenBackbone'])
def test_method_under_activation_checkpointing(family, name, cfg, num_tasks):
    """``with_cp=True``: the same outputs and gradients as without, and fewer saved activations."""
    if applicable(family, name, cfg) is not None:
        return
    x = images(family)
    ref = build(family, cfg)
    perturb(ref)
    cp = build(family, cfg, with_cp=True)
    cp.load_state_dict(ref.state_dict())
    assert cp.peft.checkpointed
    for m in (ref, cp):
        m.train()
    torch.manual_seed(2)  # drop path is random where the method trains the whole block (full fine-tuning)
    bytes_ref = saved_bytes(lambda: loss(ref, x, num_tasks))
    torch.manual_seed(2)  # the recompute replays the forward's random state
    bytes_cp = saved_bytes(lambda: loss(cp, x, num_tasks))
    assert bytes_cp < bytes_ref
    g_ref, g_cp = trainable(ref), trainable(cp)
    assert set(g_ref) == set(g_cp)
    for n in g_ref:
        assert g_cp[n].grad is not None, n
        assert torch.allclose(g_cp[n].grad, g_ref[n].grad, atol=1e-6, rtol=1e-5), n
