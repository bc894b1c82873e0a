"""Adapters as safetensors + JSON (mmpeft.utils.adapter_io, tools/model_converters/export_adapter.py).

A tiny mmseg EncoderDecoder (Swin + LoRA, a trainable FCN head with BatchNorm) is "trained" (its
trainable tensors and the head's BN statistics moved), exported, and attached to a freshly built
model of another random init that got the base weights: the outputs must equal the trained model's.
"""
import copy
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint
from safetensors.torch import load_file, save_file

import mmpeft  # noqa: F401
import mmpeft.utils.adapter_io  # noqa: F401  (registers the PEFTAdapter initializer)
from mmpeft.registry import MODELS
from mmpeft.utils.adapter_io import AdapterMismatchError, export_adapter, load_adapter
from mmpeft_testing import run_as_main

SWIN = dict(type='mmseg.SwinTransformer', embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
            window_size=4, drop_path_rate=0.)
LORA = dict(type='LoRA', rank=2, targets=('qkv', 'fc2'))
CONFIG = '''
default_scope = 'mmseg'
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(type='EncoderDecoder',
             data_preprocessor=dict(type='SegDataPreProcessor', size=(32, 32)),
             backbone=dict(type='PEFTBackbone', backbone={swin}, method={method}),
             decode_head=dict(type='FCNHead', in_channels=128, in_index=3, channels=8, num_convs=1,
                              concat_input=False, num_classes=3, norm_cfg=dict(type='BN', requires_grad=True)))
'''


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(tmp_path, method=LORA, name='cfg.py') -> Config:
    path = str(tmp_path / name)
    with open(path, 'w') as f:
        f.write(CONFIG.format(swin=SWIN, method=method))
    return Config.fromfile(path)


def _build(cfg: Config, seed: int, init_cfg=None):
    init_default_scope('mmseg')
    model_cfg = copy.deepcopy(cfg.model)
    if init_cfg is not None:
        model_cfg.init_cfg = init_cfg
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def _out(model) -> torch.Tensor:
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model(x, mode='tensor')


@pytest.fixture
def trained(tmp_path):
    """(cfg, trained model, base checkpoint path, adapter folder)."""
    cfg = _cfg(tmp_path)
    model = _build(cfg, seed=0)
    base = str(tmp_path / 'base.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), base)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        bn = model.decode_head.convs[0].bn
        bn.running_mean.add_(0.3)
        bn.running_var.mul_(1.7)
        bn.num_batches_tracked.add_(5)
    out_dir = str(tmp_path / 'adapter')
    export_adapter(model, out_dir, cfg)
    return cfg, model, base, out_dir


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _fresh_on_base(cfg, base, seed=3):
    model = _build(cfg, seed)
    model.load_state_dict(torch.load(base, map_location='cpu', weights_only=False)['state_dict'])
    return model


def test_files_hold_trainable_tensors_and_config(trained):
    cfg, model, _, out_dir = trained
    tensors = load_file(osp.join(out_dir, 'adapter.safetensors'))
    with open(osp.join(out_dir, 'adapter_config.json')) as f:
        meta = json.load(f)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # LoRA branches of the backbone and the head; the head's BN statistics; no frozen Swin weight
    bn = 'decode_head.convs.0.bn.'
    assert set(tensors) == trainable | {bn + 'running_mean', bn + 'running_var', bn + 'num_batches_tracked'}
    assert any('lora' in k for k in tensors) and not any(k.startswith('backbone.patch_embed') for k in tensors)
    assert meta['trainable_count'] == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert meta['methods'] == {'backbone.method': {'type': 'LoRA', 'rank': 2, 'targets': ['qkv', 'fc2']}}
    assert meta['mmpeft_version'] == mmpeft.__version__
    assert meta['model']['backbone']['backbone']['embed_dims'] == 16
    assert sorted(meta['tensors']) == sorted(tensors)
    assert meta['base_hash'].startswith('sha256:')
    for k, v in tensors.items():
        assert torch.equal(v, model.state_dict()[k])


def test_round_trip_same_outputs(trained):
    cfg, model, base, out_dir = trained
    fresh = _fresh_on_base(cfg, base)
    assert (_out(fresh) - _out(model)).abs().max() > 1e-3  # the adapter is what makes them equal
    load_adapter(fresh, out_dir, cfg=cfg)
    assert (_out(fresh) - _out(model)).abs().max() < 1e-6


def test_init_cfg_attaches_after_base(trained, tmp_path):
    cfg, model, base, out_dir = trained
    fresh = _build(cfg, seed=5, init_cfg=dict(type='PEFTAdapter', path=out_dir, base_checkpoint=base))
    assert (_out(fresh) - _out(model)).abs().max() < 1e-6
    with pytest.raises(ValueError, match='base_checkpoint'):
        _build(cfg, seed=5, init_cfg=[dict(type='Pretrained', checkpoint=base), dict(type='PEFTAdapter', path=out_dir)])


def test_wrong_base_is_an_error_naming_both_hashes(trained):
    cfg, _, _, out_dir = trained
    recorded = _json(osp.join(out_dir, 'adapter_config.json'))['base_hash']
    other = _build(cfg, seed=9)  # another random base
    with pytest.raises(AdapterMismatchError) as e:
        load_adapter(other, out_dir)
    msg = str(e.value)
    assert recorded in msg and msg.count('sha256:') == 2 and 'Load the base weights first' in msg


@pytest.mark.parametrize('method', [dict(LORA, rank=4), dict(type='BitFit')])
def test_wrong_method_is_an_error_naming_both(trained, tmp_path, method):
    _, _, base, out_dir = trained
    cfg = _cfg(tmp_path, method=method, name='other.py')
    other = _build(cfg, seed=0)
    with pytest.raises(AdapterMismatchError) as e:
        load_adapter(other, out_dir)
    msg = str(e.value)
    assert "'rank': 2" in msg.replace('"', "'") and method['type'] in msg
    if method['type'] == 'LoRA':
        assert '"rank": 4' in msg


def test_method_config_checked_when_given(trained, tmp_path):
    cfg, _, base, out_dir = trained
    fresh = _fresh_on_base(cfg, base)
    other_cfg = copy.deepcopy(cfg)
    other_cfg.model.backbone.method = dict(LORA, dropout=0.0)  # same modules, config differs
    with pytest.raises(AdapterMismatchError, match='dropout'):
        load_adapter(fresh, out_dir, cfg=other_cfg)


def test_missing_tensor_is_an_error_naming_it(trained):
    cfg, model, base, out_dir = trained
    path = osp.join(out_dir, 'adapter.safetensors')
    tensors = load_file(path)
    gone = sorted(k for k in tensors if 'lora' in k)[0]
    del tensors[gone]
    save_file(tensors, path)
    with pytest.raises(AdapterMismatchError, match='missing from the file: ' + gone.replace('.', r'\.')):
        load_adapter(_fresh_on_base(cfg, base), out_dir)
    # consistent config too (both edited): the model's trainable tensor is missing from the adapter
    cfg_path = osp.join(out_dir, 'adapter_config.json')
    meta = _json(cfg_path)
    del meta['tensors'][gone]
    with open(cfg_path, 'w') as f:
        json.dump(meta, f)
    with pytest.raises(AdapterMismatchError, match='missing from the adapter: ' + gone.replace('.', r'\.')):
        load_adapter(_fresh_on_base(cfg, base), out_dir)


def test_export_cli(trained, tmp_path):
    cfg, model, base, _ = trained
    ckpt = str(tmp_path / 'trained.pth')
    save_checkpoint(dict(meta=dict(epoch=1), state_dict=model.state_dict()), ckpt)
    out_dir = str(tmp_path / 'cli_adapter')
    res = run_as_main('tools/model_converters/export_adapter.py', cfg.filename, ckpt, out_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'adapter.safetensors' in res.stdout
    fresh = _fresh_on_base(cfg, base)
    load_adapter(fresh, out_dir)
    assert (_out(fresh) - _out(model)).abs().max() < 1e-6
    res = run_as_main('tools/model_converters/export_adapter.py', cfg.filename, str(tmp_path / 'nope.pth'), out_dir)
    assert res.returncode == 1 and 'nope.pth' in res.stderr


def test_export_cli_from_delta_checkpoint(trained, tmp_path):
    """A delta checkpoint (trainable tensors + changed buffers over a hashed base) exports the same adapter."""
    from mmpeft.utils.delta import make_delta_meta, tensor_hash
    cfg, model, base, full_dir = trained
    base_sd = torch.load(base, map_location='cpu', weights_only=False)['state_dict']
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    sd = model.state_dict()
    buffers = [k for k in sd if k not in trainable and not torch.equal(sd[k], base_sd[k])]
    assert len(buffers) == 3  # the head's BN statistics
    meta = make_delta_meta(base, {k: list(v.shape) for k, v in sd.items() if k not in trainable}, trainable,
                           buffers, base_hash=tensor_hash(base_sd))
    delta = str(tmp_path / 'delta.pth')
    save_checkpoint(dict(meta=dict(mmpeft_delta=meta), state_dict={k: sd[k] for k in trainable + buffers}), delta)
    out_dir = str(tmp_path / 'delta_adapter')
    res = run_as_main('tools/model_converters/export_adapter.py', cfg.filename, delta, out_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_file(osp.join(out_dir, 'adapter.safetensors')), load_file(osp.join(full_dir, 'adapter.safetensors'))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert (_json(osp.join(out_dir, 'adapter_config.json'))['base_hash']
            == _json(osp.join(full_dir, 'adapter_config.json'))['base_hash'])


def test_backbone_that_is_the_method_is_checked_by_its_settings(tmp_path):
    """PolyhistorSwin carries its method settings itself (no method= dict): another rank is named."""
    def build(rank):
        init_default_scope('mmseg')
        torch.manual_seed(0)
        model_cfg = dict(type='MultiTaskDenseModel',
                         decode_head=dict(type='AllMLPHead', in_channels=[16, 32, 64, 128], channels=16,
                                          dropout_ratio=0.0),
                         backbone=dict(type='PolyhistorSwin', mode='polyhistor', reduction_ratio=4, rank=rank,
                                       embed_dims_task=8, embed_dims=16, depths=(1, 1, 2, 1),
                                       num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0))
        model = MODELS.build(model_cfg)
        model.init_weights()
        return model, model_cfg
    model, model_cfg = build(rank=2)
    meta = export_adapter(model, str(tmp_path / 'poly'), dict(model=model_cfg))
    assert meta['method_fingerprints']['backbone']['rank'] == 2
    same, _ = build(rank=2)
    load_adapter(same, str(tmp_path / 'poly'))
    other, _ = build(rank=3)
    with pytest.raises(AdapterMismatchError, match='"rank": 3'):
        load_adapter(other, str(tmp_path / 'poly'))
