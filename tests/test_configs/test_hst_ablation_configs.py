"""The HST ablation rows (paper Tables 6, 7, 8) as configs: configs/hst/ablations/ (issue #13).

Each row is written here from the paper's tables as the ``HSTViT`` options it switches (Table 8's
component columns, Table 6's N, Table 7's token choice) and, where the paper prints one, its #Param.
Checked:

- the folder holds one config per row and benchmark (VTAB-1k on the CIFAR-100 task, Mask R-CNN 1x), and
  each resolves to the full HST row of its benchmark with exactly the row's options changed (and, where
  the trainable set changes, the trainable-set hook's patterns);
- every config, built at full size on the meta device, trains the full row's count plus the row's change
  counted by hand (token, LayerNorm and linear sizes), and is within 3% of the paper: Table 8's #Param
  (VTAB-1k), else the paper's full-HST count (0.78M / 30.6M) plus that hand change;
- its trainable set passes the config's own ``TrainableParamsHook`` and is the row's (by name);
- a shrunk model of each row gives a gradient to every trainable tensor (DDP needs all of them used);
- README.md's table prints the measured counts, and its 19-task sweep options turn the CIFAR-100 task
  config into the row's config.
"""
import argparse
import copy
import functools
import os
import os.path as osp
import re
import shlex

import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope

import mmpeft  # noqa: F401
from mmpeft_testing import metafiles_read_once

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ABL = osp.join(ROOT, 'configs', 'hst', 'ablations')
FULL = {'vtab': osp.join(ROOT, 'configs', 'hst', 'vtab1k', 'vit-b_hst_vtab1k-cifar100.py'),
        'coco': osp.join(ROOT, 'configs', 'hst', 'mask-rcnn_vit-b_hst_1x_coco.py')}

# ViT-B/16: width D, 12 layers, 3 per side stage; Table 1's side widths per benchmark
D, LAYERS, PER_STAGE = 768, 12, 3
DIMS = {'vtab': [32, 48, 64, 72], 'coco': [64, 128, 256, 384]}
# the paper's full-HST #Param: Table 2 (VTAB-1k) / Table 4 (ViT-B Mask R-CNN 1x)
PAPER_FULL = {'vtab': 0.78e6, 'coco': 30.6e6}
RELEASED_CIFAR100 = 772_140  # the authors' released CIFAR-100 HST model (all trainable tensors)
VTAB_CLASSES = [100, 102, 47, 102, 37, 10, 397, 2, 10, 45, 5, 8, 6, 6, 4, 16, 16, 18, 9]  # Table 2's tasks

# row slug: (table, row, HSTViT options, Table 8's #Param or None) -- from the paper's tables
ROWS = {
    'hst-mr32': (6, 'N = 32', dict(num_meta_tokens=32), None),
    'hst-mr64': (6, 'N = 64', dict(num_meta_tokens=64), None),
    'hst-globalt-only': (7, 'only GlobalT', dict(num_meta_tokens=0), None),
    'hsn-only': (8, 'ViT-B w/. HSN', dict(tune_vit_norms=False, share_bridge=False, use_global_token=False,
                                          use_fine_grained=False), 1.07e6),
    'hst-a': (8, 'HST.a', dict(share_bridge=False, use_global_token=False, use_fine_grained=False), 1.10e6),
    'hst-b': (8, 'HST.b', dict(use_global_token=False, use_fine_grained=False), 0.78e6),
    'hst-c': (8, 'HST.c', dict(use_fine_grained=False), 0.78e6),
    'hst-d': (8, 'HST.d', dict(use_global_token=False), 0.78e6),  # = Table 7 "only Meta-Register"
}
CASES = [(slug, bench) for slug in ROWS for bench in ('vtab', 'coco')]


def path_of(slug: str, bench: str) -> str:
    name = f'vit-b_{slug}_vtab1k-cifar100.py' if bench == 'vtab' else f'mask-rcnn_vit-b_{slug}_1x_coco.py'
    return osp.join(ABL, name)


def hand_change(options: dict, bench: str) -> int:
    """Trainable parameters the row's options add to (or take from) the full HST model, by hand."""
    dims = DIMS[bench]
    n = options.get('num_meta_tokens', 1)
    change = LAYERS * (n - 1) * D                                   # Meta-Register tokens (L, N, D)
    if n == 0:
        change -= sum(PER_STAGE * 2 * d for d in dims)              # LayerNorm on each layer's register token
    if options.get('share_bridge') is False:
        change += sum((PER_STAGE - 1) * (D * d + d) for d in dims)  # a D -> d_j linear per layer, not per stage
    if options.get('tune_vit_norms') is False:
        change -= LAYERS * 2 * 2 * D                                # norm1 / norm2 weight and bias
    return change                                                   # GlobalT / FG injection: no parameters


@pytest.fixture(scope='module', autouse=True)
def read_metafiles_once():
    with metafiles_read_once():
        yield


@functools.lru_cache(maxsize=None)
def load(path: str) -> Config:
    return Config.fromfile(path)


@functools.lru_cache(maxsize=None)
def build_meta(path: str):
    """The config's whole model at full size on the meta device (no weights read or allocated); built
    once per config (the tests only read it)."""
    from mmpeft.registry import MODELS
    cfg = load(path)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.pop('init_cfg', None)
    if 'data_preprocessor' not in model_cfg and cfg.get('data_preprocessor'):
        model_cfg.data_preprocessor = copy.deepcopy(cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.default_scope), torch.device('meta'):
        return MODELS.build(model_cfg)


@functools.lru_cache(maxsize=None)
def trainable(path: str) -> int:
    model = build_meta(path)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------- files
def test_folder_holds_one_config_per_row_and_benchmark():
    on_disk = {f for f in os.listdir(ABL) if f.endswith('.py')}
    assert on_disk == {osp.basename(path_of(s, b)) for s, b in CASES}


@pytest.mark.parametrize('slug,bench', CASES)
def test_config_is_the_full_row_with_the_rows_options(slug, bench):
    """Resolved, the config equals the full HST row of its benchmark with the row's backbone options,
    and its trainable-set hook is the full row's without the patterns the row removes."""
    _, row, options, _ = ROWS[slug]
    got = copy.deepcopy(load(path_of(slug, bench)).to_dict())
    want = copy.deepcopy(load(FULL[bench]).to_dict())
    want['model']['backbone'].update(options)
    (hook_got, ), (hook_want, ) = got.pop('custom_hooks'), want.pop('custom_hooks')
    assert got == want, row
    if options.get('num_meta_tokens') == 0:
        hook_want['expect_trainable'].remove(r'backbone\.meta_tokens')
    if options.get('tune_vit_norms') is False:
        hook_want['expect_frozen'][-1] = r'backbone\.vit\.blocks\.\d+\.(attn|mlp|norm1|norm2)\.'
    assert hook_got == hook_want, row
    # the header names the table, the row and (Table 8) the paper's #Param
    header = open(path_of(slug, bench)).read().split('_base_')[0]
    assert f'Table {ROWS[slug][0]}' in header and row in header, row


# ------------------------------------------------------------------------------------------ counts
def test_full_rows_are_the_papers_models():
    """The base of every row: the released CIFAR-100 model's count (paper 0.78M) and Table 4's 30.6M."""
    assert trainable(FULL['vtab']) == RELEASED_CIFAR100
    assert abs(trainable(FULL['coco']) - PAPER_FULL['coco']) <= 0.03 * PAPER_FULL['coco']


@pytest.mark.parametrize('slug,bench', CASES)
def test_trainable_count_is_the_papers(slug, bench):
    _, row, options, paper = ROWS[slug]
    got = trainable(path_of(slug, bench))
    change = hand_change(options, bench)
    assert got - trainable(FULL[bench]) == change, row
    # the paper: Table 8's #Param is the VTAB-1k model's; elsewhere its full count plus the hand change
    ref = paper if (paper is not None and bench == 'vtab') else PAPER_FULL[bench] + change
    assert abs(got - ref) <= 0.03 * ref, f'{row} ({bench}): {got:,} vs paper {ref:,.0f}'
    if bench == 'vtab':
        # the VTAB-1k mean: the 19 tasks' heads (72 -> classes) instead of CIFAR-100's
        mean_head = sum(73 * c for c in VTAB_CLASSES) / len(VTAB_CLASSES)
        mean = got - 73 * 100 + mean_head
        assert abs(mean - ref) <= 0.03 * ref, f'{row}: 19-task mean {mean:,.0f} vs paper {ref:,.0f}'


@pytest.mark.parametrize('slug,bench', CASES)
def test_trainable_set_is_the_rows(slug, bench):
    from types import SimpleNamespace

    from mmengine.logging import MMLogger

    from mmpeft.hooks import TrainableParamsHook
    _, row, options, _ = ROWS[slug]
    cfg = load(path_of(slug, bench))
    model = build_meta(path_of(slug, bench))
    names = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert ('meta_tokens' in names) == (options.get('num_meta_tokens', 1) > 0), row
    norms = {n for n in names if re.fullmatch(r'vit\.blocks\.\d+\.norm[12]\.(weight|bias)', n)}
    assert len(norms) == (0 if options.get('tune_vit_norms') is False else LAYERS * 4), row
    linears = {n for n in names if re.fullmatch(r'bridge\.linears\.\d+\.weight', n)}
    assert len(linears) == (LAYERS if options.get('share_bridge') is False else 4), row
    assert {n.split('.')[0] for n in names} <= {'vit', 'meta_tokens', 'bridge', 'side_network'}, row
    (hook, ) = cfg.custom_hooks
    args = {k: v for k, v in hook.items() if k != 'type'}
    runner = SimpleNamespace(model=model, logger=MMLogger.get_current_instance())
    TrainableParamsHook(check_optimizer=False, **args).before_train(runner)


# --------------------------------------------------------------------------- shrunk rows: gradients
@pytest.mark.parametrize('slug', list(ROWS))
def test_every_trainable_tensor_gets_a_gradient(slug):
    """The row's backbone, shrunk (8 ViT layers of width 32, 2 per stage so sharing matters), one
    forward / backward: each trainable tensor has a gradient, no frozen one has."""
    from mmpeft.registry import MODELS
    bb = copy.deepcopy(load(path_of(slug, 'coco')).model.backbone)
    bb.update(vit_kwargs=dict(depth=8, embed_dim=32, num_heads=2, img_size=64), init_cfg=None,
              embed_dims=[8, 16, 16, 32], num_heads=[1, 1, 2, 2], stem_norm_cfg=None)
    torch.manual_seed(0)
    m = MODELS.build(bb)
    assert len(m.bridge.linears) == (8 if ROWS[slug][2].get('share_bridge') is False else 4)
    m.train()
    sum(o.square().mean() for o in m(torch.randn(2, 3, 64, 64))).backward()
    for n, p in m.named_parameters():
        assert (p.grad is not None) == p.requires_grad, f'{slug}: {n} requires_grad={p.requires_grad}'


# ------------------------------------------------------------------------------------------ README
def readme() -> str:
    with open(osp.join(ABL, 'README.md')) as f:
        return f.read()


def test_readme_prints_the_measured_counts():
    rows = {}
    for line in readme().splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) == 8 and re.fullmatch(r'[\d,]+', cells[3]):
            rows[cells[1]] = (int(cells[3].replace(',', '')), int(cells[6].replace(',', '')))
    assert rows.pop('full HST') == (trainable(FULL['vtab']), trainable(FULL['coco']))
    want = {ROWS[s][1]: (trainable(path_of(s, 'vtab')), trainable(path_of(s, 'coco'))) for s in ROWS}
    want['HST.d (= 7, only Meta-Register)'] = want.pop('HST.d')
    assert rows == want


def test_readme_sweep_options_make_each_row_from_the_task_config():
    """Each sweep line's --cfg-options applied to the CIFAR-100 task config give the row's config."""
    text = readme().replace('\\\n', ' ')
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    seen = set()
    for line in text.splitlines():
        if 'tools/hst/run_vtab.sh' not in line:
            continue
        words = shlex.split(line)
        at = words.index('tools/hst/run_vtab.sh')
        assert words[at + 1:at + 3] == ['configs/hst/vtab1k/vit-b_hst_vtab1k-', '2'], line
        slug = words[0].split('=')[1].rsplit('/', 1)[1]  # WORK_ROOT=work_dirs/hst-ablations/<row>
        slug = slug if slug in ROWS else f'hst-{slug}'
        assert slug in ROWS and slug not in seen, line
        seen.add(slug)
        cfg = Config.fromfile(FULL['vtab'])
        cfg.merge_from_dict(parser.parse_args(['--cfg-options', *words[at + 3:]]).cfg_options)
        assert cfg.to_dict() == load(path_of(slug, 'vtab')).to_dict(), slug
    assert seen == set(ROWS)
