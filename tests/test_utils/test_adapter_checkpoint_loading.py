"""Adapters where mmengine loads checkpoints: ``tools/test.py CONFIG ADAPTER_DIR``, ``load_from=ADAPTER_DIR``.

The demo model (BitFit on a small mmseg Swin, SegFormer head) with its Swin initialised from a
pretrained file written here is trained 2 iterations by the runner; the adapter exported from it is
then evaluated by the real ``tools/test.py`` (a subprocess) and by a runner with ``load_from``, on a
freshly built model whose base weights come from its own pretrained init (or an explicit base
checkpoint). References: the trained runner's own test metrics and per-image logits (dumped by
mmengine's ``DumpResults``), and its model's outputs on a fixed input.
"""
import copy
import json
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmpeft  # noqa: F401
from mmpeft.registry import MODELS
from mmpeft.utils.adapter_io import AdapterMismatchError, export_adapter
from mmpeft_testing import run_as_main, tiny_seg_cfg


def _swin_file(cfg: Config, path: str, seed: int) -> str:
    """A 'pretrained' file for the demo's Swin: its plain state dict at a seeded random init, with
    every tensor moved off its init value (LayerNorm weights too), as mmseg checkpoints hold it."""
    init_default_scope('mmseg')
    swin_cfg = copy.deepcopy(cfg.model.backbone.backbone)
    torch.manual_seed(seed)
    swin = MODELS.build(swin_cfg)
    swin.init_weights()
    g = torch.Generator().manual_seed(seed)
    sd = {k: (v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v)
          for k, v in swin.state_dict().items()}
    torch.save(dict(state_dict=sd), path)
    return path


def _test_cfg(cfg: Config, work_dir: str, dump: str, **overrides) -> Config:
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.test_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                          dict(type='DumpResults', out_file_path=dump)]
    cfg.merge_from_dict(overrides)
    return cfg


def _logits(dump: str) -> list:
    with open(dump, 'rb') as f:  # written by this test's own runs
        return [r['seg_logits']['data'] for r in pickle.load(f)]


def _same_logits(dump: str, ref: list) -> float:
    got = _logits(dump)
    assert len(got) == len(ref) == 4  # the 4 validation images
    return max((a - b).abs().max().item() for a, b in zip(got, ref))


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _out(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(X, mode='tensor')


@pytest.fixture(scope='module')
def trained(seg_data_root, tmp_path_factory):
    """Train 2 iterations on the pretrained Swin, test, export. Returns paths and references."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp('adapter_ckpt')
    cfg = tiny_seg_cfg(seg_data_root, str(tmp / 'work'), iters=2)
    pretrained = _swin_file(cfg, str(tmp / 'pretrained_swin.pth'), seed=11)
    other = _swin_file(cfg, str(tmp / 'other_swin.pth'), seed=12)
    cfg.model.backbone.backbone.init_cfg = dict(type='Pretrained', checkpoint=pretrained)
    config_file = str(tmp / 'bitfit_swin_pretrained.py')
    cfg.dump(config_file)
    cfg = Config.fromfile(config_file)
    runner = Runner.from_cfg(_test_cfg(cfg, cfg.work_dir, str(tmp / 'ref.pkl')))
    runner.train()
    metrics = runner.test()
    model = runner.model
    out = _out(model)
    adapter = str(tmp / 'adapter')
    export_adapter(model, adapter, cfg)
    return dict(cfg=cfg, config_file=config_file, adapter=adapter, metrics=metrics, out=out, tmp=tmp,
                logits=_logits(str(tmp / 'ref.pkl')), other=other, work=cfg.work_dir,
                base=osp.join(cfg.work_dir, 'base_weights.pth'), state=copy.deepcopy(model.state_dict()))


def test_training_changed_what_the_adapter_holds(trained):
    """The check below is not vacuous: the adapter's tensors moved away from the base weights."""
    from safetensors.torch import load_file
    tensors = load_file(osp.join(trained['adapter'], 'adapter.safetensors'))
    base = torch.load(trained['base'], map_location='cpu', weights_only=False)['state_dict']
    biases = [k for k in tensors if k.startswith('backbone.') and k.endswith('.bias')]
    assert biases and all(not k.startswith('backbone.') or k.endswith('bias') for k in tensors)  # BitFit
    moved = [k for k in biases if (tensors[k] - base[k]).abs().max() > 1e-4]
    assert len(moved) == len(biases)


def test_tools_test_with_adapter_folder(trained):
    """``python tools/test.py CONFIG ADAPTER_DIR`` (the command line, run as ``__main__``; a real process
    takes ~10 s more of imports): the trained model's metrics and logits."""
    tmp = trained['tmp']
    dump = str(tmp / 'cli.pkl')
    out = str(tmp / 'cli_metrics.json')
    config_file = str(tmp / 'cli_config.py')
    _test_cfg(trained['cfg'], str(tmp / 'cli'), dump).dump(config_file)
    res = run_as_main('tools/test.py', config_file, trained['adapter'], '--out', out)
    assert res.returncode == 0, res.stderr[-4000:]
    with open(out) as f:
        metrics = json.load(f)
    assert metrics == pytest.approx({k: float(v) for k, v in trained['metrics'].items()}, abs=1e-6)
    assert _same_logits(dump, trained['logits']) < 1e-6
    assert 'loaded adapter' in res.stdout + res.stderr


@pytest.mark.parametrize('which', ['folder', 'adapter_config.json'])
def test_runner_load_from_adapter(trained, tmp_path, which):
    """``load_from=ADAPTER`` (the folder or one of its files): base from the model's own pretrained init."""
    path = trained['adapter'] if which == 'folder' else osp.join(trained['adapter'], which)
    dump = str(tmp_path / 'r.pkl')
    runner = Runner.from_cfg(_test_cfg(trained['cfg'], str(tmp_path / 'w'), dump, load_from=path))
    metrics = runner.test()
    assert metrics == trained['metrics']
    assert _same_logits(dump, trained['logits']) < 1e-6
    state = runner.model.state_dict()
    assert max((state[k] - v).abs().max().item() for k, v in trained['state'].items()
               if v.is_floating_point()) < 1e-6


def test_explicit_base_checkpoint(trained, tmp_path):
    """``adapter_base_checkpoint=BASE`` (the base_weights.pth the training wrote) is the base, even
    when the config's pretrained file is another one."""
    dump = str(tmp_path / 'b.pkl')
    cfg = _test_cfg(trained['cfg'], str(tmp_path / 'w'), dump, load_from=trained['adapter'],
                    adapter_base_checkpoint=trained['base'])
    cfg.model.backbone.backbone.init_cfg.checkpoint = trained['other']
    runner = Runner.from_cfg(cfg)
    assert runner.test() == trained['metrics']
    assert _same_logits(dump, trained['logits']) < 1e-6


def test_wrong_base_is_an_error_naming_the_hashes(trained, tmp_path):
    """Another pretrained file: the adapter is refused, naming the recorded hash, the model's and the fix."""
    with open(osp.join(trained['adapter'], 'adapter_config.json')) as f:
        recorded = json.load(f)['base_hash']
    cfg = _test_cfg(trained['cfg'], str(tmp_path / 'w'), str(tmp_path / 'x.pkl'), load_from=trained['adapter'])
    cfg.model.backbone.backbone.init_cfg.checkpoint = trained['other']
    runner = Runner.from_cfg(cfg)
    with pytest.raises(AdapterMismatchError) as e:
        runner.test()
    msg = str(e.value)
    assert recorded in msg and msg.count('sha256:') == 2 and 'adapter_base_checkpoint' in msg
    # and through the tool, with an explicit wrong base (a full checkpoint holding other Swin weights)
    wrong = torch.load(trained['base'], map_location='cpu', weights_only=False)
    other = torch.load(trained['other'], map_location='cpu', weights_only=False)['state_dict']
    for k, v in other.items():
        wrong['state_dict']['backbone.' + k] = v
    wrong_path = str(tmp_path / 'wrong_base.pth')
    torch.save(wrong, wrong_path)
    res = run_as_main('tools/test.py', trained['config_file'], trained['adapter'], '--adapter-base', wrong_path,
                      '--work-dir', tmp_path / 'cli')
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('mmpeft.utils.adapter_io.AdapterMismatchError') and recorded in last, last


def test_folder_that_is_not_an_adapter(trained, tmp_path):
    """A work_dir given as the checkpoint: the error names the missing adapter file and a checkpoint inside."""
    with pytest.raises(FileNotFoundError) as e:
        Runner.from_cfg(_test_cfg(trained['cfg'], str(tmp_path / 'w'), str(tmp_path / 'x.pkl'),
                                  load_from=trained['work'])).test()
    msg = str(e.value)
    assert 'no adapter.safetensors and no adapter_config.json' in msg and 'iter_2.pth' in msg
    half = tmp_path / 'half'
    half.mkdir()
    (half / 'adapter_config.json').write_text(open(osp.join(trained['adapter'], 'adapter_config.json')).read())
    res = run_as_main('tools/test.py', trained['config_file'], half, '--work-dir', tmp_path / 'cli')
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('FileNotFoundError') and 'has no adapter.safetensors' in last, last
    assert 'adapter_config.json' not in last.split('has no')[1].split('.')[0]


def test_resume_from_adapter_is_refused(trained, tmp_path):
    cfg = _test_cfg(trained['cfg'], str(tmp_path / 'w'), str(tmp_path / 'x.pkl'),
                    load_from=trained['adapter'], resume=True)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='cannot resume from .*adapter.*no optimizer.*resume=False'):
        runner.train()


def test_mmengine_load_checkpoint_unpickles_nothing(trained, monkeypatch):
    """``mmengine.runner.load_checkpoint(model, ADAPTER_DIR)`` on a model holding its base: the trained
    model's outputs, with ``torch.load`` and ``pickle`` unavailable."""
    from mmengine.runner import load_checkpoint
    init_default_scope('mmseg')
    torch.manual_seed(5)
    model = MODELS.build(copy.deepcopy(trained['cfg'].model))
    model.init_weights()
    assert (_out(model) - trained['out']).abs().max() > 1e-3

    def refuse(*args, **kwargs):
        raise AssertionError('an adapter load unpickled something')
    monkeypatch.setattr(torch, 'load', refuse)
    monkeypatch.setattr(pickle, 'load', refuse)
    monkeypatch.setattr(pickle, 'loads', refuse)
    load_checkpoint(model, trained['adapter'])
    assert (_out(model) - trained['out']).abs().max() < 1e-6


def test_train_starts_from_the_adapter(trained, tmp_path):
    """``load_from=ADAPTER`` in training (fine-tuning further): the runner's own init gives the base,
    then the adapter lands; at the start of training the model is the trained one."""
    from mmengine.hooks import Hook

    class Grab(Hook):
        def before_train(self, runner):
            self.state = copy.deepcopy(runner.model.state_dict())

    cfg = _test_cfg(trained['cfg'], str(tmp_path / 'w'), str(tmp_path / 'x.pkl'), load_from=trained['adapter'])
    cfg.train_cfg.max_iters = 0
    runner = Runner.from_cfg(cfg)
    grab = Grab()
    runner.register_hook(grab)
    runner.train()
    assert max((grab.state[k] - v).abs().max().item() for k, v in trained['state'].items()
               if v.is_floating_point()) < 1e-6


def test_revert_restores_mmengine_loading():
    from mmengine.runner import checkpoint as ckpt_mod

    from mmpeft.utils import compat
    patched = (Runner.load_checkpoint, Runner.resume, ckpt_mod._load_checkpoint_to_model,
               ckpt_mod._load_checkpoint_with_prefix)
    assert all(hasattr(f, '__wrapped__') for f in patched)
    compat.revert('delta_checkpoints')
    try:
        now = (Runner.load_checkpoint, Runner.resume, ckpt_mod._load_checkpoint_to_model,
               ckpt_mod._load_checkpoint_with_prefix)
        assert now == tuple(f.__wrapped__ for f in patched)
    finally:
        assert compat.apply() == ['delta_checkpoints']
