"""The multi-task configs: each parses and builds; our pinned trainable-parameter counts of the
full-size Swin-T models beside the Polyhistor paper (Tables 1, 2, 5, 6); a shrunken end-to-end train +
val run.

The authoritative count check is exact: tests/test_configs/test_pinned_param_counts.py builds every
config (and the ablation variants below) and compares with configs/param_counts.json to the parameter.
Here the pinned numbers are compared with the paper within a documented band, so a re-pin that moves a
count away from the paper fails too."""
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmpeft  # noqa: F401
from mmpeft.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'polyhistor', '*.py'))
                 + glob.glob(osp.join(ROOT, 'configs', 'hyperformer', '*.py')))
T_POLY = 'configs/polyhistor/polyhistor_swin-t_pascal-context-mt-512x512.py'
T_LITE = 'configs/polyhistor/polyhistor-lite_swin-t_pascal-context-mt-512x512.py'
T_HYPER = 'configs/hyperformer/hyperformer_swin-t_pascal-context-mt-512x512.py'
T_DEC = 'configs/polyhistor/decoders-only_swin-t_pascal-context-mt-512x512.py'
T_MTFT = 'configs/polyhistor/mt-full-ft_swin-t_pascal-context-mt-512x512.py'
T_ST = 'configs/polyhistor/st-full-ft-{}_swin-t_pascal-context-mt-512x512.py'
TASKS = ('semseg', 'parts', 'sal', 'normals')

with open(osp.join(ROOT, 'configs', 'param_counts.json')) as f:
    PINNED = json.load(f)['counts']

# (name, pinned key: config [--cfg-options], paper Encoder / All in M, band): Tables 1, 2, 5, 6. The
# bands document how far unstated details (e.g. hyper-network biases, see the methods' docstrings)
# take our exact counts from the paper's.
PAPER_ROWS = [
    ('polyhistor r=n/4 (default)', T_POLY, (6.41, 8.96), 0.05),
    ('hyperformer rho=8 (default)', T_HYPER, (72.77, 75.32), 0.05),
    ('polyhistor-lite k=64 (default)', T_LITE, (0.41, 2.96), 0.10),
    ('polyhistor-lite k=32', f'{T_LITE} model.backbone.embed_dims_task=32', (0.29, 2.84), 0.10),
    ('polyhistor-lite k=16', f'{T_LITE} model.backbone.embed_dims_task=16', (0.23, 2.78), 0.10),
    ('polyhistor r=1', f'{T_POLY} model.backbone.rank=1', (2.38, 4.93), 0.08),
    ('polyhistor r=n/8', f'{T_POLY} model.backbone.rank=n/8', (4.08, 6.63), 0.08),
    ('polyhistor r=n/2', f'{T_POLY} model.backbone.rank=n/2', (11.08, 13.63), 0.08),
    ('hyperformer rho=16', f'{T_HYPER} model.backbone.reduction_ratio=16', (37.69, 40.24), 0.08),
    ('hyperformer rho=32', f'{T_HYPER} model.backbone.reduction_ratio=32', (20.15, 22.70), 0.08),
    ('multi-task full fine-tuning', T_MTFT, (27.51, 30.06), 0.01),
    ('decoders only', T_DEC, (0.0, 2.55), 0.01),
    ('single-task full fine-tuning (4 models)', tuple(T_ST.format(t) for t in TASKS), (110.07, 112.62), 0.01),
]


@pytest.mark.parametrize('name,keys,paper,band', PAPER_ROWS, ids=[r[0] for r in PAPER_ROWS])
def test_pinned_counts_beside_the_paper(name, keys, paper, band):
    keys = (keys,) if isinstance(keys, str) else keys
    enc = sum(PINNED[k]['Encoder']['trainable'] for k in keys) / 1e6
    total = sum(PINNED[k]['All']['trainable'] for k in keys) / 1e6
    assert enc == pytest.approx(paper[0], rel=band, abs=0.005), f'{name}: encoder {enc:.3f}M vs paper {paper[0]}M'
    assert total == pytest.approx(paper[1], rel=band), f'{name}: all {total:.3f}M vs paper {paper[1]}M'


def test_single_task_configs_have_one_task():
    """Table 1's single-task row adds four single-task models: each config trains one task (its one
    head is checked when test_every_config_parses_and_builds runs it)."""
    for task in TASKS:
        assert list(Config.fromfile(osp.join(ROOT, T_ST.format(task))).model.tasks) == [task]


def shrink(cfg, data_root=None):
    """Tiny Swin (width 32, depths 1-1-2-1, window 4), small heads, no pretrained weights, 64x64 data."""
    backbone = cfg.model.backbone.backbone if cfg.model.backbone.type == 'PEFTBackbone' else cfg.model.backbone
    backbone.update(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4, init_cfg=None)
    if backbone.type == 'PolyhistorSwin':
        backbone.embed_dims_task = 8
    cfg.model.decode_head.update(in_channels=[32, 64, 128, 256], channels=16)
    if data_root is not None:
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            loader = cfg[key]
            loader.update(batch_size=2, num_workers=0, persistent_workers=False)
            loader.dataset.data_root = data_root
            for step in loader.dataset.pipeline:
                if step['type'] == 'MultiTaskResize':
                    step['scale'] = (64, 64)
    return cfg


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p) for p in CONFIGS])
def test_every_config_parses_and_builds(path):
    init_default_scope('mmseg')
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['mmpeft'], allow_failed_imports=False)
    assert cfg.train_dataloader.batch_size == 12 and cfg.train_cfg.max_epochs == 60
    assert cfg.optim_wrapper.optimizer == dict(type='Adam', lr=1e-4, weight_decay=1e-4)
    backbone = cfg.model.backbone.get('backbone', cfg.model.backbone)
    assert backbone.init_cfg.checkpoint.startswith('pretrain/swin_')
    model = MODELS.build(shrink(cfg).model)
    tasks = list(cfg.model.tasks)
    out = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert list(out) == tasks and all(v.shape[-2:] == (16, 16) for v in out.values())


@pytest.fixture(scope='module')
def pascal_root(tmp_path_factory):
    from mmpeft.datasets import generate_synthetic_pascal_mt
    return generate_synthetic_pascal_mt(str(tmp_path_factory.mktemp('data') / 'PASCAL_MT'),
                                        num_train=4, num_val=2, size=(48, 64), seed=0)


@pytest.mark.parametrize('path', [osp.join(ROOT, T_LITE), osp.join(ROOT, T_ST.format('sal'))],
                         ids=['polyhistor-lite', 'single-task-sal'])
def test_shrunken_config_trains_and_evaluates(path, pascal_root, tmp_path):
    from mmengine.runner import Runner
    cfg = shrink(Config.fromfile(path), pascal_root)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    runner = Runner.from_cfg(cfg)
    trainable_before = {n for n, p in runner.model.named_parameters() if p.requires_grad}
    runner.train()
    metrics = runner.val_loop.run()
    tasks = list(cfg.model.tasks)
    expected = dict(semseg='semseg/mIoU', parts='parts/mIoU', sal='sal/maxIoU', normals='normals/mean')
    assert all(expected[t] in metrics for t in tasks)
    assert {n for n, p in runner.model.named_parameters() if p.requires_grad} == trainable_before
    optimized = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']}
    assert optimized == {id(p) for p in runner.model.parameters() if p.requires_grad}
