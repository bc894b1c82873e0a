"""Delta (trainable-only) checkpoints: save, resume, merge, load, and the errors around them."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.runner import Runner

from mmpeft.utils.delta import DELTA_KEY, is_delta_checkpoint


def _train(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def trained(seg_data_root, tmp_path_factory):
    """4 iterations with DeltaCheckpointHook (demo config: BitFit Swin + All-MLP head), once per module.

    Tests only read ``iter_4.pth`` / ``base_weights.pth`` from its work_dir.
    """
    from mmpeft_testing import tiny_seg_cfg
    cfg = tiny_seg_cfg(seg_data_root, str(tmp_path_factory.mktemp('delta')), iters=4)
    runner = _train(cfg)
    final = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    return cfg, runner, final


def test_delta_holds_only_trainable_and_merges_bit_identical(trained, tmp_path):
    cfg, runner, final = trained
    ckpt_path = osp.join(cfg.work_dir, 'iter_4.pth')
    delta = _load(ckpt_path)
    assert is_delta_checkpoint(delta)
    trainable = {n for n, p in runner.model.named_parameters() if p.requires_grad}
    param_keys = {n for n, _ in runner.model.named_parameters()}
    keys = set(delta['state_dict'])
    assert trainable <= keys
    # besides trainable parameters only buffers that changed (the head's BN statistics)
    extra = keys - trainable
    assert extra and not (extra & param_keys)
    assert all(k.startswith('decode_head.') for k in extra)
    assert 'optimizer' in delta and 'param_schedulers' in delta and 'message_hub' in delta
    n_opt = sum(len(g['params']) for g in delta['optimizer']['param_groups'])
    assert n_opt == len(trainable)
    meta = delta['meta'][DELTA_KEY]
    assert meta['base'] == osp.abspath(osp.join(cfg.work_dir, 'base_weights.pth'))
    assert set(meta['frozen_shapes']) == set(final) - keys

    out = str(tmp_path / 'merged.pth')
    res = subprocess.run([sys.executable, 'tools/model_converters/merge_delta.py', ckpt_path, out],
                         cwd=osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    merged = _load(out)['state_dict']
    assert list(merged) == list(final) or set(merged) == set(final)
    for k, v in final.items():
        assert merged[k].dtype == v.dtype and torch.equal(merged[k], v), k


def test_delta_is_small_for_one_percent_backbone(tmp_path):
    """~1% trainable backbone: the delta (weights only) is < 5% of the full checkpoint."""
    from mmengine.registry import MODELS, init_default_scope

    from mmpeft.utils.delta import make_delta_meta
    init_default_scope('mmseg')
    m = MODELS.build(dict(type='PEFTBackbone', method=dict(type='BitFit'),
                          backbone=dict(type='SwinTransformer', embed_dims=96, depths=(2, 2, 6, 2),
                                        num_heads=(3, 6, 12, 24))))
    sd = m.state_dict()
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    frac = sum(sd[n].numel() for n in trainable) / sum(p.numel() for p in m.parameters())
    assert frac < 0.015
    full, small = tmp_path / 'full.pth', tmp_path / 'delta.pth'
    torch.save(dict(state_dict=sd), full)
    torch.save(dict(state_dict={n: sd[n] for n in trainable},
                    meta={DELTA_KEY: make_delta_meta('b', {k: v.shape for k, v in sd.items()
                                                           if k not in trainable}, trainable, [])}), small)
    assert os.path.getsize(small) < 0.05 * os.path.getsize(full)


def test_resume_from_delta_continues_exactly(trained, make_seg_cfg, tmp_path):
    cfg, runner, final = trained
    # a straight 6-iteration run as reference
    ref = _train(make_seg_cfg(iters=6, work_dir=str(tmp_path / 'ref')))
    ref_sd = ref.model.state_dict()
    # resume the 4-iteration delta and go on to 6
    cfg2 = make_seg_cfg(iters=6, work_dir=cfg.work_dir)
    cfg2.resume = True
    cfg2.load_from = osp.join(cfg.work_dir, 'iter_4.pth')
    resumed = _train(cfg2)
    assert resumed.iter == 6
    sd = resumed.model.state_dict()
    # same trajectory: equal to the uninterrupted run (deterministic seed, CPU)
    for k, v in ref_sd.items():
        assert torch.allclose(sd[k], v, atol=1e-6), k
    # the resumed run writes deltas too, still pointing at the same base
    d6 = _load(osp.join(cfg.work_dir, 'iter_6.pth'))
    assert d6['meta'][DELTA_KEY]['base'] == _load(cfg2.load_from)['meta'][DELTA_KEY]['base']


def test_test_tool_loads_delta(trained):
    cfg, runner, final = trained
    from mmengine.runner.checkpoint import _load_checkpoint
    full = _load_checkpoint(osp.join(cfg.work_dir, 'iter_4.pth'), map_location='cpu')
    assert full['meta'][DELTA_KEY]['expanded']
    for k, v in final.items():
        assert torch.equal(full['state_dict'][k], v), k


def test_delta_on_wrong_base_names_keys(trained, tmp_path):
    cfg, runner, final = trained
    ckpt_path = osp.join(cfg.work_dir, 'iter_4.pth')
    wrong = {k: v for k, v in final.items() if not k.startswith('backbone.stages.3.')}
    wrong['backbone.extra.weight'] = torch.zeros(3)
    wrong_path = str(tmp_path / 'wrong_base.pth')
    torch.save(dict(state_dict=wrong), wrong_path)
    from tools_import import merge_delta
    with pytest.raises(KeyError) as e:
        merge_delta.merge(ckpt_path, str(tmp_path / 'x.pth'), base=wrong_path)
    msg = str(e.value)
    assert 'missing keys' in msg and 'backbone.stages.3.' in msg
    assert 'unexpected keys' in msg and 'backbone.extra.weight' in msg
    # shape mismatch
    bad_shape = dict(final)
    key = next(k for k in final if k.endswith('attn.w_msa.qkv.weight'))
    bad_shape[key] = torch.zeros(1, 1)
    torch.save(dict(state_dict=bad_shape), wrong_path)
    with pytest.raises(KeyError, match='shape mismatch.*' + key.replace('.', r'\.')):
        merge_delta.merge(ckpt_path, str(tmp_path / 'x.pth'), base=wrong_path)


def test_delta_loaded_into_other_model_via_runner(trained, make_seg_cfg, tmp_path):
    """load_from a delta into a model whose frozen weights differ from the delta's base is refused."""
    cfg, runner, final = trained
    cfg2 = make_seg_cfg(iters=1, work_dir=str(tmp_path / 'other'))
    cfg2.model.backbone.backbone.depths = (2, 2, 2, 1)
    cfg2.load_from = osp.join(cfg.work_dir, 'iter_4.pth')
    with pytest.raises((KeyError, ValueError, RuntimeError)) as e:
        _train(cfg2)
    assert 'stages.3' in str(e.value) or 'size mismatch' in str(e.value)


def test_missing_files_are_named(trained, tmp_path):
    cfg, runner, final = trained
    from tools_import import merge_delta
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        merge_delta.merge(str(tmp_path / 'nothere.pth'), str(tmp_path / 'o.pth'))
    # a delta whose base was removed: the error names the base and the delta
    moved = tmp_path / 'moved'
    moved.mkdir()
    delta = _load(osp.join(cfg.work_dir, 'iter_4.pth'))
    delta['meta'][DELTA_KEY]['base'] = str(tmp_path / 'gone' / 'base_weights_x.pth')
    torch.save(delta, moved / 'd.pth')
    with pytest.raises(FileNotFoundError, match='base_weights_x.pth'):
        merge_delta.merge(str(moved / 'd.pth'), str(tmp_path / 'o.pth'))
    # load_from a missing checkpoint through the runner
    cfg3 = cfg.copy()
    cfg3.load_from = str(tmp_path / 'missing_ckpt.pth')
    cfg3.work_dir = str(tmp_path / 'w3')
    with pytest.raises(FileNotFoundError, match='missing_ckpt.pth'):
        _train(cfg3)


def test_base_check_refuses_changed_frozen_weights(trained, make_seg_cfg):
    """Reusing a work_dir whose base_weights.pth came from other frozen weights is an error."""
    cfg, runner, final = trained
    cfg2 = make_seg_cfg(iters=1, work_dir=cfg.work_dir)
    cfg2.randomness = dict(seed=123)  # other random frozen backbone
    with pytest.raises(ValueError, match='frozen weights of the model differ'):
        _train(cfg2)
