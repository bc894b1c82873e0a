"""The model tools as a user runs them (the real command line, run as ``__main__``):

- ``tools/model_converters/merge_delta.py DELTA OUT [--base BASE] [--keep-training-state]``
- ``tools/model_converters/merge_peft.py CONFIG CKPT OUT``
- ``tools/analysis_tools/count_params.py CONFIG_DIR --recursive`` and ``count_params.py CONFIG``

Each result is checked against a reference the tool does not compute: the trained runner's own
model and optimizer state, a plain model built from a hand-written config, counts summed here.
"""
import os.path as osp
import shutil
import subprocess
from typing import List

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmpeft  # noqa: F401
from mmpeft.registry import MODELS
from mmpeft_testing import run_as_main

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAINING_STATE = ('optimizer', 'param_schedulers', 'message_hub')


_cli = run_as_main


def _ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, f'{res.args} exited {res.returncode}:\n{res.stderr[-3000:]}'
    return res.stdout


def _load(path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


# --------------------------------------------------------------------------- merge_delta.py
MERGE_DELTA = 'tools/model_converters/merge_delta.py'


@pytest.fixture(scope='module')
def trained(seg_data_root, tmp_path_factory):
    """4 iterations of the demo (BitFit Swin, DeltaCheckpointHook), once: the delta it wrote and,
    as references, the runner's final model and optimizer state."""
    from mmpeft_testing import tiny_seg_cfg
    cfg = tiny_seg_cfg(seg_data_root, str(tmp_path_factory.mktemp('cli_delta')), iters=4)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    optim = runner.optim_wrapper.state_dict()
    return dict(delta=osp.join(cfg.work_dir, 'iter_4.pth'), base=osp.join(cfg.work_dir, 'base_weights.pth'),
                model=model, optim=optim)


def _assert_weights_are(state_dict: dict, reference: dict) -> None:
    assert set(state_dict) == set(reference)
    for k, v in reference.items():
        assert state_dict[k].dtype == v.dtype and torch.equal(state_dict[k], v), k


def test_merge_delta_recorded_base(trained, tmp_path):
    """DELTA OUT: the recorded base + delta are the trained weights bit for bit; no training state."""
    out = tmp_path / 'merged.pth'
    stdout = _ok(_cli(MERGE_DELTA, trained['delta'], out))
    assert str(out) in stdout and trained['base'] in stdout
    ckpt = _load(out)
    _assert_weights_are(ckpt['state_dict'], trained['model'])
    assert not set(TRAINING_STATE) & set(ckpt)


def test_merge_delta_explicit_base_keeps_training_state(trained, tmp_path):
    """--base (a copy elsewhere under another name) is the base used, and --keep-training-state
    carries the runner's optimizer state, schedulers and message hub."""
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    delta, base = tmp_path / 'a' / 'delta.pth', tmp_path / 'b' / 'my_base.pth'
    shutil.copy(trained['delta'], delta)
    shutil.copy(trained['base'], base)
    out = tmp_path / 'full.pth'
    _ok(_cli(MERGE_DELTA, delta, out, '--base', base, '--keep-training-state'))
    ckpt = _load(out)
    assert ckpt['meta']['mmpeft_delta']['base'] == str(base)
    _assert_weights_are(ckpt['state_dict'], trained['model'])
    assert set(TRAINING_STATE) <= set(ckpt)
    ref = trained['optim']
    assert ckpt['optimizer']['param_groups'] == ref['param_groups']
    assert set(ckpt['optimizer']['state']) == set(ref['state']) and ref['state']
    for i, state in ref['state'].items():
        for k, v in state.items():
            assert torch.equal(ckpt['optimizer']['state'][i][k], v), (i, k)
    assert ckpt['message_hub']['runtime_info']['iter'] == 3  # saved after the 4th iteration (0-based)
    assert len(ckpt['param_schedulers']) == 1


def test_merge_delta_wrong_base_is_refused(trained, tmp_path):
    """--base holding other frozen weights (same keys and shapes): an error naming the file, the
    hashes and the fix; nothing is written."""
    base = _load(trained['base'])
    key = next(k for k in base['state_dict'] if k.endswith('qkv.weight'))
    base['state_dict'][key] = base['state_dict'][key] + 1
    wrong = tmp_path / 'other_base.pth'
    torch.save(base, wrong)
    out = tmp_path / 'merged.pth'
    res = _cli(MERGE_DELTA, trained['delta'], out, '--base', wrong)
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith('ValueError') and str(wrong) in err and 'hash' in err and '--base' in err, err
    assert not out.exists()


# --------------------------------------------------------------------------- merge_peft.py
VIT = dict(type='mmpretrain.VisionTransformer', arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                                         feedforward_channels=64),
           img_size=32, patch_size=8, out_type='cls_token')
PLAIN = dict(type='ImageClassifier', backbone=VIT, head=dict(type='LinearClsHead', num_classes=5, in_channels=32))


def test_merge_peft_gives_the_plain_model(tmp_path):
    """A trained-looking LoRA classifier becomes a plain checkpoint that a model built from the plain
    config (written here by hand) loads strictly, with the PEFT model's outputs."""
    peft_model = dict(PLAIN, backbone=dict(type='PEFTBackbone', backbone=VIT,
                                           method=dict(type='LoRA', rank=2, targets=('qkv', 'fc2'))))
    config = tmp_path / 'lora.py'
    config.write_text(f"default_scope = 'mmpretrain'\ncustom_imports = dict(imports=['mmpeft'])\n"
                      f'model = {peft_model!r}\n')
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    model.init_weights()
    with torch.no_grad():  # trained-looking LoRA factors (B starts at zero: nothing to merge)
        for n, p in model.named_parameters():
            if 'lora' in n:
                p.normal_(std=0.1)
    assert any('lora' in n for n, _ in model.named_parameters())
    ckpt, out = tmp_path / 'trained.pth', tmp_path / 'plain.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    _ok(_cli('tools/model_converters/merge_peft.py', config, ckpt, out))

    state = _load(out)['state_dict']
    assert not [k for k in state if 'lora' in k or 'peft' in k]
    plain = MODELS.build(PLAIN)
    plain.load_state_dict(state, strict=True)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model.eval()(x, mode='tensor'), plain.eval()(x, mode='tensor')
    assert (want - plain_without_lora(model, x)).abs().max() > 1e-3  # LoRA changes the output...
    assert (want - got).abs().max() < 1e-5  # ...and the merged plain model reproduces it


def plain_without_lora(model, x: torch.Tensor) -> torch.Tensor:
    """The classifier's output with its LoRA factors zeroed: the frozen weights alone."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if 'lora' in n}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in saved:
                p.zero_()
        out = model(x, mode='tensor')
        for n, p in model.named_parameters():
            if n in saved:
                p.copy_(saved[n])
    return out


# --------------------------------------------------------------------------- count_params.py
COUNT = 'tools/analysis_tools/count_params.py'
BASE_CFG = f'''default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmpeft'])
vit = {dict(VIT, arch=dict(embed_dims=256, num_layers=2, num_heads=4, feedforward_channels=1024))!r}
model = dict(type='ImageClassifier', backbone=dict(type='PEFTBackbone', backbone=vit, method=dict(type='BitFit')),
             head=dict(type='LinearClsHead', num_classes=1000, in_channels=256))
'''
CONFIGS = {
    '_base_/vit.py': BASE_CFG,  # a base, not a row
    'lora.py': "_base_ = ['./_base_/vit.py']\n"
               "model = dict(backbone=dict(method=dict(_delete_=True, type='LoRA', rank=16, targets=('qkv', 'fc2'))))\n",  # noqa: E501
    'more/bitfit_small_head.py': "_base_ = ['../_base_/vit.py']\nmodel = dict(head=dict(num_classes=100))\n",
    'broken.py': "default_scope = 'mmpretrain'\nmodel = dict(type='NoSuchClassifier')\n",
}


@pytest.fixture(scope='module')
def config_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('count_cfgs')
    for rel, text in CONFIGS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _hand_counts(config) -> dict:
    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(str(config)).model)
    enc = [p for p in model.backbone.parameters() if p.requires_grad]
    return dict(enc_trainable=sum(p.numel() for p in enc),
                enc_total=sum(p.numel() for p in model.backbone.parameters()),
                trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                total=sum(p.numel() for p in model.parameters()))


def _m(n: int) -> str:
    return f'{n / 1e6:.2f}'


def _rows(stdout: str) -> List[List[str]]:
    return [[c.strip() for c in ln.strip('|').split('|')] for ln in stdout.splitlines()
            if ln.startswith('|') and not ln.startswith('| ---')]


def test_count_params_folder_table(config_dir):
    rows = _rows(_ok(_cli(COUNT, config_dir, '--recursive')))
    assert rows[0] == ['config', 'Encoder trainable (M)', 'All trainable (M)', 'All total (M)']
    table = {r[0]: r[1:] for r in rows[1:]}
    assert set(table) == {'lora.py', 'more/bitfit_small_head.py', 'broken.py'}  # `_base_` skipped
    for rel in ('lora.py', 'more/bitfit_small_head.py'):
        c = _hand_counts(config_dir / rel)
        assert table[rel] == [_m(c['enc_trainable']), _m(c['trainable']), _m(c['total'])], rel
    assert table['lora.py'] != table['more/bitfit_small_head.py']
    # the broken config is a row naming its error, not a crash that hides the other rows
    assert table['broken.py'][:2] == ['error', 'error'] and 'NoSuchClassifier' in table['broken.py'][2]


def test_count_params_one_config(config_dir):
    out = _ok(_cli(COUNT, config_dir / 'lora.py'))
    c = _hand_counts(config_dir / 'lora.py')
    parts = {r[0]: r[1:] for r in _rows(out)[1:]}
    assert parts['Encoder'] == [_m(c['enc_trainable']), _m(c['enc_total']),
                                f"{100 * c['enc_trainable'] / c['enc_total']:.2f}"]
    assert parts['All'] == [_m(c['trainable']), _m(c['total']), f"{100 * c['trainable'] / c['total']:.2f}"]
    assert f"Encoder / All trainable (M): {_m(c['enc_trainable'])} / {_m(c['trainable'])}" in out


def test_count_params_missing_config_is_named(tmp_path):
    res = _cli(COUNT, tmp_path / 'nope.py')
    assert res.returncode != 0 and f"{tmp_path / 'nope.py'} does not exist" in res.stderr
