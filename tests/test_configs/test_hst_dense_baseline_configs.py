"""The dense baseline rows of HST Tables 4 (COCO, 3x+MS detectors and ViT-L Mask R-CNN 1x) and 5 (ADE20K
Semantic FPN 80k) as configs: configs/baselines/{method}_{family}.py (table: configs/baselines/dense-tables.md).

Checked per row:

- the resolved config is the HST row of the same detector / schedule with only the backbone (the ViT + the
  method + [29]'s pyramid), the neck's input widths, the trainable-set check and, for the no-decay keys,
  the optimiser changed (the ViT-L rows: the ViT-B 1x baseline rows' base with the ViT-L);
- built at full size on the meta device as ``count_params.py``'s ``model_counts`` builds it (its
  ``build_device`` and ``count_params``): the encoder's and
  neck's trainable counts equal the counts by hand, the heads are the HST row's (as pinned), and the whole
  model's trainable count is within 3% of the paper's #Param, which the header comment quotes;
- the row's TrainableParamsHook passes on that model, with the optimiser the config builds;
- one row per family, shrunk, takes a loss step with gradients on exactly the trainable parameters (ATSS:
  but its unread stride-4 module).
"""
import copy
import functools
import json
import os.path as osp
import re
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from tools_import import _load

import mmpeft  # noqa: F401
from mmpeft_testing import metafiles_read_once

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
count_params_py = _load('count_params', 'tools/analysis_tools/count_params.py')

# family: the HST row of the same detector / schedule (the rows inherit it, the ViT-L rows the ViT-B 1x
# baseline base; its heads are the rows' heads)
FAMILIES = {
    'mask-rcnn_vit-b_3x-ms_coco': 'configs/hst/mask-rcnn_vit-b_hst_3x-ms_coco.py',
    'cascade-mask-rcnn_vit-b_3x-ms_coco': 'configs/hst/cascade-mask-rcnn_vit-b_hst_3x-ms_coco.py',
    'atss_vit-b_3x-ms_coco': 'configs/hst/atss_vit-b_hst_3x-ms_coco.py',
    'fpn_vit-b_80k_ade20k-512x512': 'configs/hst/fpn_vit-b_hst_80k_ade20k-512x512.py',
    'mask-rcnn_vit-l_1x_coco': 'configs/hst/mask-rcnn_vit-l_hst_1x_coco.py',
}
# the paper's #Param (M) per row. Table 4 gives Mask R-CNN one #Param column for 1x and 3x+MS.
PAPER = {
    'mask-rcnn_vit-b_3x-ms_coco': {'full-ft': 113.6, 'linear-probe': 27.8, 'vpt-deep': 28.4, 'adaptformer': 29.0,
                                   'ssf': 28.0, 'lora': 28.4},
    'cascade-mask-rcnn_vit-b_3x-ms_coco': {'full-ft': 151.4, 'linear-probe': 65.6, 'vpt-deep': 66.2,
                                           'adaptformer': 66.8, 'ssf': 65.6, 'lora': 66.2},
    'atss_vit-b_3x-ms_coco': {'full-ft': 101.3, 'linear-probe': 15.6, 'vpt-deep': 16.1, 'adaptformer': 16.7,
                              'ssf': 15.8, 'lora': 16.2},
    'fpn_vit-b_80k_ade20k-512x512': {'full-ft': 97.7, 'linear-probe': 11.9, 'vpt-deep': 12.5, 'adaptformer': 13.1,
                                     'ssf': 12.1, 'lora': 12.5},
    'mask-rcnn_vit-l_1x_coco': {'full-ft': 337.3, 'linear-probe': 33.6, 'lora-64': 39.84},
}
ROWS = [(fam, m) for fam, rows in PAPER.items() for m in rows]
METHOD_TYPES = {'full-ft': 'FullFinetune', 'linear-probe': 'FrozenBackbone', 'vpt-deep': 'VPTDeep',
                'adaptformer': 'AdaptFormer', 'ssf': 'SSF', 'lora': 'LoRA', 'lora-64': 'LoRA'}


# ------------------------------------------------------------------ counts by hand
def vit(d: int, depth: int, mlp: int) -> int:
    """A timm ViT /16 at 224 without head: patch embedding, class token, 197 positions, blocks, final norm."""
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    return (3 * 256 * d + d) + d + 197 * d + depth * block + 2 * d


def pyramid(d: int) -> int:
    """[29]'s modules: fpn1 = deconv, LayerNorm2d, GELU, deconv; fpn2 = deconv (2x2, d -> d); fpn3 / fpn4 none."""
    return 3 * (d * d * 4 + d) + 2 * d


def method_part(method: str, d: int, depth: int, mlp: int) -> int:
    return {
        'full-ft': vit(d, depth, mlp),
        'linear-probe': 0,
        'vpt-deep': depth * 64 * d,  # 64 prompts per block
        'adaptformer': depth * (d * 64 + 64 + 64 * d + d),  # bottleneck 64 beside each MLP
        # scale + shift after patch embedding, every op of a block (norm1, qkv, proj, norm2, fc1, fc2), norm
        'ssf': 2 * (d + depth * (d + 3 * d + d + d + mlp + d) + d),
        'lora': depth * 2 * (d * 16 + 16 * d),  # rank 16 on q and v
        'lora-64': depth * 2 * (d * 64 + 64 * d),  # rank 64 on q and v
    }[method]


def fpn_neck(d: int, levels: int, outs_by_conv: int = 0) -> int:
    """mmdet / mmseg FPN to 256 channels: a 1x1 lateral and a 3x3 output conv per used level, plus
    ``outs_by_conv`` extra 3x3 convs (ATSS's 'on_output')."""
    return levels * (d * 256 + 256) + (levels + outs_by_conv) * (256 * 256 * 9 + 256)


VIT_B, VIT_L = (768, 12, 3072), (1024, 24, 4096)
NECK = {'mask-rcnn_vit-b_3x-ms_coco': fpn_neck(768, 4), 'cascade-mask-rcnn_vit-b_3x-ms_coco': fpn_neck(768, 4),
        'atss_vit-b_3x-ms_coco': fpn_neck(768, 3, 2),  # start_level=1: strides 8-32, two extra convs
        'fpn_vit-b_80k_ade20k-512x512': fpn_neck(768, 4), 'mask-rcnn_vit-l_1x_coco': fpn_neck(1024, 4)}


def row_path(family: str, method: str) -> str:
    return osp.join(ROOT, 'configs', 'baselines', f'{method}_{family}.py')


# ------------------------------------------------------------------ loading
@pytest.fixture(scope='module', autouse=True)
def read_metafiles_once():
    with metafiles_read_once():
        yield


@functools.lru_cache(maxsize=None)
def load(path: str) -> Config:
    return Config.fromfile(path)


@functools.lru_cache(maxsize=None)
def pinned() -> dict:
    with open(osp.join(ROOT, 'configs', 'param_counts.json')) as f:
        return json.load(f)['counts']


def without(cfg: Config, keys) -> dict:
    d = copy.deepcopy(cfg.to_dict())
    for k in keys:
        d.pop(k, None)
    d['optim_wrapper'].pop('paramwise_cfg', None)
    return d


# ------------------------------------------------------------------ tests
def test_every_row_file_is_listed():
    """No row on disk that the paper table here does not name, and dense-tables.md names every row."""
    import glob
    on_disk = {osp.basename(p) for fam in PAPER
               for p in glob.glob(osp.join(ROOT, 'configs', 'baselines', f'*_{fam}.py'))}
    assert on_disk == {osp.basename(row_path(f, m)) for f, m in ROWS}
    with open(osp.join(ROOT, 'configs', 'baselines', 'dense-tables.md')) as f:
        table = f.read()
    for name in on_disk:
        assert f'`{name}`' in table, f'configs/baselines/dense-tables.md does not list {name}'


@pytest.mark.parametrize('family,method', ROWS)
def test_row_is_the_hst_row_with_another_backbone(family, method):
    row = load(row_path(family, method))
    m = row.model
    # the header names the paper's #Param
    with open(row_path(family, method)) as f:
        header = f.read().split('_base_')[0]
    assert f'#Param {PAPER[family][method]}M trainable' in header
    # the backbone: PEFTBackbone over the ViT pyramid, the method of the row, the in21k weights
    assert m.backbone.type == 'PEFTBackbone' and m.backbone.method.type == METHOD_TYPES[method]
    inner = m.backbone.backbone
    large = 'vit-l' in family
    assert inner.type == 'ViTPyramid' and inner.finetune == 'full' and inner.out_indices == (0, 1, 2, 3)
    assert inner.vit_name == ('vit_large_patch16_224' if large else 'vit_base_patch16_224')
    assert inner.init_cfg.checkpoint == f'pretrain/jx_vit_{"large" if large else "base"}_patch16_224_in21k.pth'
    assert m.data_preprocessor.mean == [127.5] * 3 and m.data_preprocessor.std == [127.5] * 3
    hooks = [h for h in row.custom_hooks if h.type == 'TrainableParamsHook']
    assert len(hooks) == 1 and not any('side_network' in p for p in hooks[0].get('expect_trainable', []))
    if large:  # the ViT-B 1x baseline rows' base, with the ViT-L
        assert m.neck.in_channels == [1024] * 4
        return
    # everything else is the HST row's: data, schedule, optimiser (less its meta-token decay key), heads
    hst = load(osp.join(ROOT, FAMILIES[family]))
    skip = ('model', 'custom_hooks', 'find_unused_parameters') + tuple(
        k for k in set(row) | set(hst) if k.startswith(('hst_', 'peft_vit_')))
    assert without(row, skip) == without(hst, skip)
    for key in set(m) | set(hst.model):
        if key not in ('backbone', 'neck'):
            assert m.get(key) == hst.model.get(key), key
    assert m.neck == dict(hst.model.neck, in_channels=[768] * 4)
    keys = row.optim_wrapper.paramwise_cfg.custom_keys
    assert keys.norm == dict(decay_mult=0.) and 'meta_tokens' not in keys
    assert (row.get('find_unused_parameters') is True) == family.startswith('atss')  # fpn1 unused by ATSS


@pytest.mark.parametrize('family,method', ROWS)
def test_trainable_count_matches_the_paper(family, method):
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    from mmpeft.hooks import TrainableParamsHook
    from mmpeft.registry import MODELS
    path = row_path(family, method)
    cfg = load(path)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('init_cfg', None)
    # as count_params.model_counts builds it (meta device: shapes only)
    with DefaultScope.overwrite_default_scope(cfg.default_scope), count_params_py.build_device('meta'):
        model = MODELS.build(model_cfg)
    c = count_params_py.count_params(model)

    d, depth, mlp = VIT_L if 'vit-l' in family else VIT_B
    assert c['Encoder']['total'] == vit(d, depth, mlp) + pyramid(d) + (
        0 if method in ('full-ft', 'linear-probe') else method_part(method, d, depth, mlp))
    backbone = method_part(method, d, depth, mlp) + pyramid(d)  # full-ft: the ViT and the pyramid
    assert c['Encoder']['trainable'] == backbone, method
    assert c['Neck']['trainable'] == c['Neck']['total'] == NECK[family]
    # the heads are the HST row's (as pinned in configs/param_counts.json)
    assert c['Heads']['trainable'] == c['Heads']['total'] == pinned()[FAMILIES[family]]['Heads']['trainable']
    if method == 'full-ft':
        assert c['All']['trainable'] == c['All']['total']
    ours, paper = c['All']['trainable'] / 1e6, PAPER[family][method]
    assert abs(ours - paper) <= 0.03 * paper, f'{family} {method}: {ours:.2f}M vs paper {paper}M'

    # the row's trainable-set check passes, with the optimiser the config builds
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    held = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    hook = [h for h in cfg.custom_hooks if h.type == 'TrainableParamsHook'][0]
    runner = SimpleNamespace(model=model, optim_wrapper=optim, logger=MMLogger.get_current_instance())
    TrainableParamsHook(**{k: v for k, v in hook.items() if k != 'type'}).before_train(runner)
    if method not in ('full-ft', 'linear-probe'):  # the method's own modules are the rest of the trainable set
        pattern = re.compile(r'backbone\.(fpn[12]\.|vit\..*\.(vpt|adapter_mlp|ssf|lora_[qv])\.)')
        assert all(pattern.match(n) for n, p in model.backbone.named_parameters(prefix='backbone')
                   if p.requires_grad)


# one row per family, shrunk (4-layer width-32 ViT, narrow necks / heads): a loss step trains the declared set
SHRUNK = [('mask-rcnn_vit-b_3x-ms_coco', 'vpt-deep'), ('cascade-mask-rcnn_vit-b_3x-ms_coco', 'lora'),
          ('atss_vit-b_3x-ms_coco', 'ssf'), ('fpn_vit-b_80k_ade20k-512x512', 'adaptformer'),
          ('mask-rcnn_vit-l_1x_coco', 'lora-64')]


@pytest.mark.parametrize('family,method', SHRUNK)
def test_shrunk_row_trains_the_declared_set(family, method):
    """The same classes with a 4-layer width-32 ViT and narrow necks / heads (the shrinking of
    test_hst_configs.py); after one loss step exactly the trainable parameters have gradients, except
    ATSS's stride-4 module fpn1, which its neck (strides 8-32) does not read."""
    from test_hst_configs import TINY_VIT, _shrink_channels, _shrink_counts, build, det_batch, seg_batch
    cfg = load(row_path(family, method))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.backbone.update(vit_kwargs=TINY_VIT, init_cfg=None)
    if model_cfg.backbone.method.get('hidden_dims', 0) > TINY_VIT['embed_dim']:
        model_cfg.backbone.method.hidden_dims = TINY_VIT['embed_dim'] // 2  # a bottleneck < d
    if model_cfg.backbone.method.get('rank', 0) > TINY_VIT['embed_dim']:
        model_cfg.backbone.method.rank = 8  # LoRA-64 shrunk with the ViT: a rank < d
    model_cfg.neck.in_channels = [TINY_VIT['embed_dim']] * 4
    for key in [k for k in model_cfg if k not in ('backbone', 'data_preprocessor')]:
        _shrink_channels(model_cfg[key])
    for key in ('train_cfg', 'test_cfg'):
        _shrink_counts(model_cfg.get(key))
    seg = model_cfg.type == 'EncoderDecoder'
    if seg:
        model_cfg.data_preprocessor.size = (64, 64)
    model = build(cfg, model_cfg)
    model.train()
    data = seg_batch(1) if seg else det_batch(1, with_mask='mask' in family)
    batch = model.data_preprocessor(data, training=True)
    loss, _ = model.parse_losses(model(**batch, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    unused = {n for n in trainable if n.startswith('backbone.fpn1.')} if family.startswith('atss') else set()
    assert with_grad == trainable - unused
    assert not with_grad & {n for n, p in model.named_parameters() if not p.requires_grad}
    injected = model.backbone.peft.injected
    assert injected and {n for n in trainable if n.startswith('backbone.vit.')} == {
        n for n in trainable if any(n.startswith(f'backbone.{i}.') for i in injected)}
