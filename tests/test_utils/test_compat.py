"""The pinned-stack fixes applied on `import mmpeft`."""
import os
import os.path as osp

import pytest
import torch
from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.runner import Runner


def test_torch_is_the_weights_only_release():
    # the fix exists because of this default; if it changes, re-check compat.py
    major, minor = (int(x) for x in torch.__version__.split('.')[:2])
    assert (major, minor) >= (2, 6)


def test_resume_normal_checkpoint(make_seg_cfg, tmp_path):
    """A plain mmengine checkpoint (HistoryBuffer, numpy objects) resumes under torch >= 2.6."""
    cfg = make_seg_cfg(iters=2, work_dir=str(tmp_path / 'plain'))
    cfg.custom_hooks = []  # no delta: a full, ordinary checkpoint
    Runner.from_cfg(cfg).train()
    ckpt = osp.join(cfg.work_dir, 'iter_2.pth')
    with pytest.raises(Exception):  # what the fix is for: torch's default refuses this file
        torch.load(ckpt, map_location='cpu')
    cfg2 = make_seg_cfg(iters=3, work_dir=cfg.work_dir)
    cfg2.custom_hooks = []
    cfg2.resume = True  # auto-resume from the latest checkpoint in work_dir
    runner = Runner.from_cfg(cfg2)
    runner.train()
    assert runner.iter == 3
    saved = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert saved['meta']['iter'] == 2
    # load_from (not resume) of the same file
    cfg3 = make_seg_cfg(iters=1, work_dir=str(tmp_path / 'load'))
    cfg3.custom_hooks = []
    cfg3.load_from = ckpt
    r3 = Runner.from_cfg(cfg3)
    r3.train()
    assert r3.iter == 1


def test_atomic_put_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    LocalBackend().put(b'old', path)
    assert path.read_bytes() == b'old'
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would create it

    real_fdopen = os.fdopen

    class Boom(Exception):
        pass

    def failing_fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        orig_write = f.write

        def write(data):
            orig_write(data[:1])
            raise Boom()
        f.write = write
        return f

    monkeypatch.setattr(os, 'fdopen', failing_fdopen)
    with pytest.raises(Boom):
        LocalBackend().put(b'new content', path)
    monkeypatch.undo()
    assert path.read_bytes() == b'old'  # the interrupted save did not truncate the old file
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pth']  # no temp file left
    LocalBackend().put_text('text', tmp_path / 'last_checkpoint')
    assert (tmp_path / 'last_checkpoint').read_text() == 'text'


def test_optimizer_constructor_leaves_out_frozen():
    from mmengine.optim import build_optim_wrapper
    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    m[0].requires_grad_(False)
    for cfg in (dict(optimizer=dict(type='SGD', lr=0.1)),
                dict(optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4), paramwise_cfg=dict(norm_decay_mult=0.0))):
        w = build_optim_wrapper(m, cfg)
        held = [p for g in w.optimizer.param_groups for p in g['params']]
        assert {id(p) for p in held} == {id(p) for p in m[1].parameters()}
