"""Every PEFTBackbone method, PolyhistorSwin and ViTPyramid trace into ONE graph under ``torch.compile``
(issue #10, "one inference path per module": speed comes from ``torch.compile``, so a method must not
split the backbone into pieces that run between Python fallbacks), and compiled outputs equal eager.

Each method runs on one representative backbone family (every family appears at least once): the
timm ViT (inside mmpretrain's TIMMBackbone) is the cheapest to trace, so most methods run there;
Swin-only paths (windowed attention with prompts or task-wise bias tables) run on the Swins of
mmseg / mmdet / mmpretrain, and the mmpretrain ViT covers its numpy drop-path rates. Methods are
explained (``torch._dynamo.explain``) in training mode; the compiled-vs-eager checks run eval mode
with ``fullgraph=True`` (a break is an error naming it) and ``aot_eager`` (AOT-autograd graphs,
seconds), except one ``inductor`` check (real kernels: ~10 s with a warm inductor cache, 15-30 s cold,
on 2 cores). Break reasons are in the assertion messages.
"""
import copy
import warnings
from typing import List, Tuple

import numpy as np
import pytest
import torch
import torch.nn as nn

import mmpeft  # noqa: F401  (registers the backbones and methods)
from mmpeft.backbones import PolyhistorSwin, build_peft_backbone
from mmpeft.backbones.peft_backbone import _numpy_scalars_to_python
from mmpeft.backbones.vit_pyramid import ViTPyramid

TASKS = ('a', 'b')
# tiny backbones: tracing time grows with the blocks (~0.6 s per ViT block on one core), and the file must
# stay fast. ViTs: one block; two where VPT-shallow carries prompt states from one block to the next.
# Swins: one stage of two blocks (the second shifts its windows); 20 x 28 images give 5 x 7 tokens, padded
# to the 4 x 4 windows.
TIMM_VIT = dict(type='mmpretrain.TIMMBackbone', model_name='vit_tiny_patch16_224', features_only=True,
                out_indices=(0,), img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                dynamic_img_size=True, drop_path_rate=0.1)
TIMM_VIT_2 = dict(TIMM_VIT, depth=2, out_indices=(0, 1))
MMPRETRAIN_VIT = dict(type='mmpretrain.VisionTransformer', img_size=32, patch_size=8, out_indices=(0, 1),
                      arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
                      out_type='featmap', drop_path_rate=0.1)
SWIN = dict(type='mmseg.SwinTransformer', embed_dims=16, depths=(2,), num_heads=(1,), strides=(4,),
            window_size=4, out_indices=(0,))
MMDET_SWIN = dict(SWIN, type='mmdet.SwinTransformer')
MMPRETRAIN_SWIN = dict(type='mmpretrain.SwinTransformer', window_size=4, img_size=32, out_indices=(0,),
                       arch=dict(embed_dims=16, depths=(2,), num_heads=(1,)), pad_small_map=True)
BACKBONES = dict(timm_vit=TIMM_VIT, timm_vit_2=TIMM_VIT_2, mmpretrain_vit=MMPRETRAIN_VIT, swin=SWIN,
                 mmdet_swin=MMDET_SWIN, mmpretrain_swin=MMPRETRAIN_SWIN)

#: (id, backbone, method, forward kwargs), explained in training mode (frozen norms / drop-paths kept in
#: eval by the method's pre-hook); eval mode is what COMPILED runs
CASES = [
    ('FullFinetune', 'timm_vit_2', dict(type='FullFinetune'), {}),  # block 2's drop-path (0.1) active
    ('FrozenBackbone', 'timm_vit', dict(type='FrozenBackbone'), {}),
    ('BitFit', 'timm_vit', dict(type='BitFit'), {}),
    ('LNTuning', 'timm_vit', dict(type='LNTuning'), {}),
    ('LoRA-tasks', 'timm_vit', dict(type='LoRA', rank=2, tasks=TASKS), dict(tasks=list(TASKS))),
    ('LowRankAdapter', 'timm_vit', dict(type='LowRankAdapter', rank=1), {}),
    ('SharedAdapter', 'timm_vit', dict(type='SharedAdapter', tasks=TASKS), dict(task='a')),
    ('AdaptFormer', 'timm_vit', dict(type='AdaptFormer', hidden_dims=8), {}),
    ('PHMLayer', 'timm_vit', dict(type='PHMLayer', phm_dim=2, reduction_ratio=2), {}),
    ('Compacter', 'timm_vit', dict(type='Compacter', phm_dim=2), {}),
    ('CompacterPlusPlus', 'timm_vit', dict(type='CompacterPlusPlus', phm_dim=2, tasks=TASKS), dict(task='b')),
    ('SSF-tasks', 'timm_vit', dict(type='SSF', tasks=TASKS), dict(task='b')),
    ('VPTShallow', 'timm_vit_2', dict(type='VPTShallow', num_tokens=3), {}),  # prompt states carried by hooks
    ('VPT-deep', 'timm_vit', dict(type='VPT', num_tokens=3), {}),
    ('RelativePositionBias-swin', 'swin', dict(type='RelativePositionBias', tasks=TASKS), dict(task='a')),
    ('BitFit-tables-mmdet_swin', 'mmdet_swin', dict(type='BitFit', relative_position_bias=True, tasks=TASKS),
     dict(task='b')),
    ('VPTShallow-mmpretrain_swin', 'mmpretrain_swin', dict(type='VPTShallow', num_tokens=3), {}),
    ('LoRA-mmpretrain_vit', 'mmpretrain_vit', dict(type='LoRA', rank=2), {}),
    # task-conditioned adapters: weights generated per call by a backbone pre-hook, read by the sites
    ('Hyperformer-tasks-mmdet_swin', 'mmdet_swin',
     dict(type='Hyperformer', tasks=TASKS, reduction_ratio=4, embed_dims_task=8), dict(tasks=list(TASKS))),
    ('Polyhistor-timm_vit', 'timm_vit', dict(type='Polyhistor', tasks=TASKS, reduction_ratio=4, rank=2,
                                             embed_dims_task=8), dict(task='a')),
    ('PolyhistorLite-mmpretrain_swin', 'mmpretrain_swin',
     dict(type='PolyhistorLite', tasks=TASKS, embed_dims_task=8), dict(task='b')),
    ('TaskAdapters-tasks-swin', 'swin', dict(type='TaskAdapters', tasks=TASKS, reduction_ratio=4),
     dict(tasks=list(TASKS))),
    # several methods on one backbone, one task argument
    ('NOAH', 'timm_vit', dict(type='NOAH', adapter_dims=2, lora_rank=2, num_prompts=2), {}),
    ('Combined-tasks', 'timm_vit', dict(type='Combined', tasks=TASKS, methods=[dict(type='LoRA', rank=2),
                                                                               dict(type='SSF')]), dict(task='a')),
]
#: (id, backbone, method, forward kwargs, backend): compiled with fullgraph=True (a graph break is an
#: error naming it) in eval mode, outputs against eager. One inductor check (~15-30 s cold on 2 cores)
COMPILED = [
    ('LoRA', 'timm_vit', dict(type='LoRA', rank=2), {}, 'inductor'),
    ('SSF', 'timm_vit', dict(type='SSF'), {}, 'aot_eager'),
    ('Adapter-both-tasks', 'timm_vit', dict(type='Adapter', position='both', tasks=TASKS), dict(task='b'),
     'aot_eager'),
    ('VPTDeep-tasks-swin', 'swin', dict(type='VPTDeep', num_tokens=3, tasks=TASKS), dict(task='b'), 'aot_eager'),
]

POLYHISTOR_TINY = dict(embed_dims=16, depths=(2,), num_heads=(1,), strides=(4,), window_size=4, out_indices=(0,),
                       tasks=('semseg', 'parts', 'sal'))
POLYHISTOR_MODES = dict(
    hyperformer=dict(mode='hyperformer', reduction_ratio=4, embed_dims_task=8),
    polyhistor=dict(mode='polyhistor', reduction_ratio=4, rank=2, embed_dims_task=8),
    polyhistor_lite=dict(mode='polyhistor_lite', reduction_ratio=2, rank='n/4', embed_dims_task=8),
)
TINY_VIT = dict(depth=1, embed_dim=32, num_heads=2, img_size=64)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Tracing state (compiled code, guards, recompile counts) of one case must not leak into the next."""
    torch._dynamo.reset()
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on the shared 2-core machine
    yield
    torch.set_num_threads(before)
    torch._dynamo.reset()


def _images(kind: str, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    size = (20, 28) if kind.endswith('swin') else (32, 40)  # ViTs: 4 x 5 patches of 8
    return torch.randn(batch, 3, *size, generator=g)


def _build(kind: str, method: dict) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = build_peft_backbone(copy.deepcopy(BACKBONES[kind]), copy.deepcopy(method))
        model.init_weights()
    return model


def _perturb_injected(model: nn.Module) -> None:
    """Move every injected parameter off its init: zero up-projections / unit scales would make a method
    the identity, and a compiled graph that dropped it would still match eager."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(name == n or name.startswith(n + '.') for n in model.peft.injected):
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _explain(model, *args, **kwargs) -> Tuple[object, str]:
    """``torch._dynamo.explain`` of one call, and an assertion message listing the breaks and where."""
    ex = torch._dynamo.explain(model)(*args, **kwargs)
    lines = []
    for r in ex.break_reasons:
        # innermost first, without torch.nn's call machinery between the user frames
        frames = [f for f in r.user_stack if '/torch/nn/' not in f.filename][-3:][::-1]
        where = ' <- '.join(f'{f.filename.rsplit("site-packages/", 1)[-1]}:{f.lineno} ({f.line})' for f in frames)
        lines.append(f'{r.reason.splitlines()[0]} at {where}')
    return ex, '\n'.join(lines)


def _leaves(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out
    return [t for v in values for t in _leaves(v)]


def _assert_close(compiled, eager, atol: float = 1e-5) -> None:
    a, b = _leaves(compiled), _leaves(eager)
    assert len(a) == len(b) and len(a) > 0
    for u, v in zip(a, b):
        assert u.shape == v.shape, (u.shape, v.shape)
        diff = (u - v).abs().max().item()
        assert diff <= atol, f'compiled output differs from eager by {diff:.2e} (> {atol})'


# --------------------------------------------------------------------------------------------- no breaks
@pytest.mark.parametrize('case_id,kind,method,kwargs', CASES, ids=[c[0] for c in CASES])
def test_method_traces_into_one_graph(case_id, kind, method, kwargs):
    model = _build(kind, method)
    model.train()
    if 'tasks' in kwargs:  # several tasks in one call: the attachment's loop over tasks, traced whole
        ex, reasons = _explain(model.peft.forward_tasks, _images(kind), kwargs['tasks'])
    else:
        ex, reasons = _explain(model, _images(kind), **kwargs)
    assert ex.graph_break_count == 0, f'{case_id} on {kind}: {ex.graph_break_count} graph breaks:\n{reasons}'
    assert ex.graph_count == 1, f'{case_id} on {kind}: {ex.graph_count} graphs captured, expected 1'


def test_every_registered_method_and_family_is_covered():
    from mmpeft.registry import PEFT_METHODS
    cases = CASES + [c[:4] for c in COMPILED]
    missing = sorted(set(PEFT_METHODS.module_dict) - {c[2]['type'] for c in cases})
    assert not missing, f'PEFT methods without a graph-break case: {missing}; add them to CASES'
    assert {c[1] for c in cases} == set(BACKBONES)


@pytest.mark.parametrize('mode,kwargs', [('hyperformer', {}),
                                         ('polyhistor_lite', dict(tasks=['sal', 'parts'], batched=False))])
def test_polyhistor_swin_traces_into_one_graph(mode, kwargs):
    """All tasks in one batched pass, or one pass per task (unrolled into the same graph); the third mode
    is compiled with fullgraph=True below."""
    torch.manual_seed(0)
    model = PolyhistorSwin(**POLYHISTOR_MODES[mode], **POLYHISTOR_TINY)
    model.init_weights()
    model.train()
    ex, reasons = _explain(model.peft.forward_tasks, _images('swin'), **kwargs)
    assert ex.graph_break_count == 0, f'PolyhistorSwin {mode} {kwargs}: {ex.graph_break_count} breaks:\n{reasons}'
    assert ex.graph_count == 1


@pytest.mark.parametrize('finetune', ['linear_probe', 'full'])
def test_vit_pyramid_traces_into_one_graph(finetune):
    torch.manual_seed(0)
    model = ViTPyramid(vit_kwargs=TINY_VIT, finetune=finetune)
    model.train()
    ex, reasons = _explain(model, torch.randn(2, 3, 64, 64))
    assert ex.graph_break_count == 0, f'ViTPyramid {finetune}: {ex.graph_break_count} breaks:\n{reasons}'
    assert ex.graph_count == 1


def test_numpy_drop_path_rates_become_python_floats():
    """mmpretrain's ViT takes its drop-path rates from np.linspace (0 and 0.1 for two layers); traced, a
    numpy scalar is a tensor and mmcv's ``if drop_prob == 0.`` a data-dependent branch."""
    model = _build('mmpretrain_vit', dict(type='FullFinetune'))
    probs = [m.drop_prob for m in model.modules() if type(m).__name__ == 'DropPath']
    assert probs and all(type(p) is float for p in probs), [type(p) for p in probs]
    assert sorted(set(probs)) == pytest.approx([0.0, 0.1])

    m = nn.Linear(2, 2)
    m.rate, m.count, m.flag, m.name = np.float32(0.25), np.int64(3), np.bool_(True), 'kept'
    changed = _numpy_scalars_to_python(nn.Sequential(m))
    assert sorted(changed) == ['0.count', '0.flag', '0.rate']
    assert (type(m.rate), m.rate, type(m.count), m.count, m.flag, m.name) == (float, 0.25, int, 3, True, 'kept')


# --------------------------------------------------------------------------------------------- compiled == eager
@pytest.mark.parametrize('case_id,kind,method,kwargs,backend', COMPILED, ids=[c[0] for c in COMPILED])
def test_compiled_method_matches_eager(case_id, kind, method, kwargs, backend):
    model = _build(kind, method)
    model.eval()
    _perturb_injected(model)
    x = _images(kind)
    with torch.no_grad():
        eager = model(x, **kwargs)
        compiled = torch.compile(model, backend=backend, fullgraph=True)(x, **kwargs)
    _assert_close(compiled, eager)


def test_compiled_training_step_matches_eager():
    """Gradients too: task-wise LoRA in training mode, both tasks in one call, through AOT autograd.

    The compiled call comes first, on a model fresh in training mode: the method's pre-hook that puts the
    frozen drop-paths (rate 0.1 in block 2) in eval runs inside the traced forward, and the graph must
    follow it; were the drop-paths traced as active, the outputs would differ at random."""
    model = _build('timm_vit_2', dict(type='LoRA', rank=2, tasks=TASKS))
    model.train()
    _perturb_injected(model)
    x = _images('timm_vit_2')
    trainable = [p for p in model.parameters() if p.requires_grad]
    drop_paths = [m for m in model.modules() if type(m).__name__ == 'DropPath']
    assert drop_paths and all(m.training for m in drop_paths)

    def loss_and_grads(fn):
        loss = sum(o.square().mean() for o in _leaves(fn(x, list(TASKS))))
        return [loss.detach()] + list(torch.autograd.grad(loss, trainable))

    compiled = loss_and_grads(torch.compile(model.peft.forward_tasks, backend='aot_eager', fullgraph=True))
    assert not any(m.training for m in drop_paths)
    eager = loss_and_grads(model.peft.forward_tasks)
    assert all(g.abs().sum() > 0 for g in eager[1:])  # both tasks' A and B receive gradient
    _assert_close(compiled, eager)


def test_compiled_polyhistor_swin_matches_eager():
    torch.manual_seed(0)
    model = PolyhistorSwin(**POLYHISTOR_MODES['polyhistor'], **POLYHISTOR_TINY)
    model.init_weights()
    model.eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the generated LayerNorm starts at zero: adapters would be the identity
        for p in model.adapters.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    x = _images('swin')
    with torch.no_grad():
        eager = model.peft.forward_tasks(x)
        compiled = torch.compile(model.peft.forward_tasks, backend='aot_eager', fullgraph=True)(x)
    assert list(compiled) == list(eager) == list(POLYHISTOR_TINY['tasks'])
    _assert_close(compiled, eager)
