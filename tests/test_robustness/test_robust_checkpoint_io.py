"""Checkpoint files: no pickle runs while loading, unreadable files are named, atomic last_checkpoint."""
import builtins
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.hooks import checkpoint_hook
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint

from mmpeft.utils.checkpoint_io import TRUSTED_ENV, CorruptCheckpointError, UnsafeCheckpointError, load_checkpoint_file


class _WritesAFile:
    """Unpickling this calls ``open(marker, 'w')``: the file appears only if the pickle ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


class _ReachesPastHistoryBuffer:
    """A ``getattr`` that HistoryBuffer's own pickles never use (its statistics methods only)."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def _malicious(path, marker) -> str:
    torch.save(dict(meta=dict(iter=1, epoch=0), state_dict={}, evil=_WritesAFile(str(marker))), str(path))
    return str(path)


def test_malicious_checkpoint_does_not_run(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUSTED_ENV, raising=False)
    marker = tmp_path / 'pwned'
    ckpt = _malicious(tmp_path / 'evil.pth', marker)
    for load in (load_checkpoint_file, lambda f: CheckpointLoader.load_checkpoint(f, map_location='cpu')):
        with pytest.raises(UnsafeCheckpointError) as e:
            load(ckpt)
        assert ckpt in str(e.value) and 'pickles io.open' in str(e.value) and TRUSTED_ENV in str(e.value)
        assert not marker.exists()
    # the opt-out really is weights_only=False (so the checks above could have seen the file appear)
    monkeypatch.setenv(TRUSTED_ENV, '1')
    load_checkpoint_file(ckpt)
    assert marker.exists()


def test_restricted_getattr(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    torch.save(dict(x=_ReachesPastHistoryBuffer()), path)
    with pytest.raises(UnsafeCheckpointError, match=r'getattr.*__init__'):
        load_checkpoint_file(path)
    # what mmengine checkpoints hold does load: a HistoryBuffer (pickled with getattr) and numpy
    buf = HistoryBuffer()
    buf.update(1.5)
    torch.save(dict(buf=buf, arr=np.arange(3, dtype=np.int64), s=np.float64(2.5), d=np.dtype('f4')), path)
    out = load_checkpoint_file(path)
    assert out['buf'].current() == 1.5 and out['buf'].mean() == 1.5
    assert out['arr'].tolist() == [0, 1, 2] and out['s'] == 2.5 and out['d'] == np.dtype('f4')


def test_malicious_checkpoint_through_runner(make_seg_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv(TRUSTED_ENV, raising=False)
    marker = tmp_path / 'pwned'
    work = tmp_path / 'work'
    work.mkdir()
    ckpt = _malicious(work / 'iter_1.pth', marker)
    (work / 'last_checkpoint').write_text(ckpt)
    for key, value in (('load_from', ckpt), ('resume', True)):
        cfg = make_seg_cfg(iters=1, work_dir=str(work))
        cfg.custom_hooks = []
        cfg[key] = value
        with pytest.raises(UnsafeCheckpointError, match='evil|iter_1.pth'):
            Runner.from_cfg(cfg).train()
        assert not marker.exists()


def _bad_files(tmp_path):
    good = str(tmp_path / 'good.pth')
    torch.save(dict(state_dict={'w': torch.arange(10000.)}), good)
    data = open(good, 'rb').read()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert noise[:1] not in (b'P', b'\x80')
    files = dict(empty=(b'', 'is empty'), truncated=(data[:len(data) // 2], 'truncated or corrupt'),
                 text=(b'<html>404 Not Found</html>\n', 'not a torch checkpoint'),
                 random=(noise, 'not a torch checkpoint'))
    out = {}
    for name, (content, says) in files.items():
        path = tmp_path / f'{name}.pth'
        path.write_bytes(content)
        out[name] = (str(path), says)
    return out


def test_unreadable_files_are_named(tmp_path):
    model = torch.nn.Linear(2, 2)
    for name, (path, says) in _bad_files(tmp_path).items():
        # the loader, mmengine's loader (load_from / resume) and its load_checkpoint (init_cfg=Pretrained)
        for load in (load_checkpoint_file, lambda f: CheckpointLoader.load_checkpoint(f, 'cpu'),
                     lambda f: load_checkpoint(model, f, map_location='cpu')):
            with pytest.raises(CorruptCheckpointError) as e:
                load(path)
            msg = str(e.value)
            assert path in msg and says in msg and 'another checkpoint' in msg, (name, msg)
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        load_checkpoint_file(str(tmp_path / 'nothere.pth'))


def test_corrupt_inside_a_valid_zip(tmp_path):
    """A complete zip whose pickle is damaged: named as corrupt, not a bare UnpicklingError."""
    import zipfile
    good = tmp_path / 'good.pth'
    torch.save({'a': torch.ones(2)}, str(good))
    bad = tmp_path / 'bad.pth'
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, 'w') as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, b'\x80\x02garbage' if item.filename.endswith('data.pkl') else data)
    with pytest.raises(CorruptCheckpointError, match=str(bad)):
        load_checkpoint_file(str(bad))


def test_last_checkpoint_written_atomically(tmp_path, monkeypatch):
    """mmengine's CheckpointHook writes last_checkpoint with ``open``: a kill mid-write keeps the old."""
    record = tmp_path / 'last_checkpoint'
    hook_open = getattr(checkpoint_hook, 'open', builtins.open)  # how the module resolves ``open``
    with hook_open(str(record), 'w') as f:
        f.write('/work/iter_2.pth')
    assert record.read_text() == '/work/iter_2.pth'

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between writing the data and renaming it
    monkeypatch.setattr(os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
        with hook_open(str(record), 'w') as f:
            f.write('/work/iter_4.pth')
    monkeypatch.undo()
    assert record.read_text() == '/work/iter_2.pth'
    assert sorted(os.listdir(tmp_path)) == ['last_checkpoint']
    assert osp.isfile(record)
