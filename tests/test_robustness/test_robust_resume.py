"""Resume: the right checkpoint, one training per work dir, strict tools/test.py, bit-identical
continuation, and kill -9 during saves."""
import glob
import importlib.util
import os
import os.path as osp
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.runner import Runner

from mmpeft.utils.checkpoint_io import CheckpointMismatchError, load_checkpoint_file
from mmpeft.utils.work_dir import WorkDirInUseError, clean_stale_temporary_files, find_resume_checkpoint, lock_work_dir
from mmpeft_testing import ROOT, tiny_seg_cfg


def _tool(name: str):
    """tools/<name>.py as a module, run in this process."""
    spec = importlib.util.spec_from_file_location(f'mmpeft_tools_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ckpt(path, it: int) -> str:
    torch.save(dict(meta=dict(iter=it), state_dict={'w': torch.full((100,), float(it))}), str(path))
    return str(path)


def test_resume_falls_back_to_newest_complete(tmp_path):
    good = _ckpt(tmp_path / 'iter_2.pth', 2)
    full = open(_ckpt(tmp_path / 'iter_4.pth', 4), 'rb').read()
    (tmp_path / 'iter_4.pth').write_bytes(full[:len(full) // 2])  # killed while saving
    _ckpt(tmp_path / 'iter_10.pth', 10)
    (tmp_path / 'iter_10.pth').write_bytes(b'')
    record = tmp_path / 'last_checkpoint'
    assert find_resume_checkpoint(str(tmp_path)) == good  # no record: the newest complete file
    for content in (str(tmp_path / 'iter_4.pth'), '', str(tmp_path / 'iter_6.pth')):
        record.write_text(content)  # truncated file, empty record, missing file
        assert find_resume_checkpoint(str(tmp_path)) == good, content
    os.remove(good)
    record.write_text(str(tmp_path / 'iter_4.pth'))
    with pytest.raises(FileNotFoundError) as e:
        find_resume_checkpoint(str(tmp_path))
    assert str(record) in str(e.value) and 'iter_4.pth' in str(e.value) and '--resume CKPT' in str(e.value)
    assert find_resume_checkpoint(str(tmp_path / 'fresh')) is None  # nothing there: a fresh start


def test_resume_in_copied_work_dir(tmp_path):
    old = tmp_path / 'old'
    old.mkdir()
    (old / 'last_checkpoint').write_text(_ckpt(old / 'iter_2.pth', 2))
    new = tmp_path / 'new'
    shutil.copytree(old, new)
    assert find_resume_checkpoint(str(new)) == str(new / 'iter_2.pth')
    shutil.rmtree(old)
    assert find_resume_checkpoint(str(new)) == str(new / 'iter_2.pth')


def test_clean_stale_temporary_files(tmp_path):
    keep = ['iter_2.pth', 'last_checkpoint', '.mmpeft.lock', 'notes.tmp']
    stale = ['.iter_4.pth.k2j_9x0a.tmp', '.last_checkpoint.abcdefgh.tmp']
    for name in keep + stale:
        (tmp_path / name).write_bytes(b'x')
    assert clean_stale_temporary_files(str(tmp_path)) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


def test_second_training_in_work_dir_refused(seg_data_root, tmp_path, monkeypatch):
    """tools/train.py in a locked work dir stops before building anything (cross-process: the kill
    -9 test below checks the lock against a running training)."""
    work = str(tmp_path / 'work')
    cfg_path = str(tmp_path / 'cfg.py')
    tiny_seg_cfg(seg_data_root, work, iters=1).dump(cfg_path)
    held = lock_work_dir(work)  # the first training (flock: another open file conflicts, also in one process)
    monkeypatch.setattr(sys, 'argv', ['train.py', cfg_path, '--work-dir', work])
    try:
        with pytest.raises(WorkDirInUseError) as e:
            _tool('train').main()
    finally:
        held.close()
    msg = str(e.value)
    assert work in msg and f'pid {os.getpid()}' in msg and '--work-dir' in msg
    assert sorted(os.listdir(work)) == ['.mmpeft.lock']
    held = lock_work_dir(work)  # released with the holder's file: the next training may start
    held.close()


def test_tools_test_loads_strictly(make_seg_cfg, tmp_path, monkeypatch, capsys):
    tools_test = _tool('test')
    cfg = make_seg_cfg(iters=1, work_dir=str(tmp_path / 'work'))
    cfg.custom_hooks = []
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    sd = Runner.from_cfg(cfg.copy()).model.state_dict()
    # another model's checkpoint: a head it lacks, a head this model has is missing
    other = {k: v for k, v in sd.items() if not k.startswith('decode_head.conv_seg')}
    other['auxiliary_head.conv_seg.weight'] = torch.zeros(4, 64, 1, 1)
    ckpt = str(tmp_path / 'other_model.pth')
    torch.save(dict(meta=dict(), state_dict=other), ckpt)
    argv = ['test.py', cfg_path, ckpt, '--work-dir', str(tmp_path / 'test')]
    monkeypatch.setattr(sys, 'argv', argv)
    with pytest.raises(CheckpointMismatchError) as e:
        tools_test.main()
    msg = str(e.value)
    assert ckpt in msg and 'decode_head.conv_seg.weight' in msg and 'auxiliary_head.conv_seg.weight' in msg
    assert '--non-strict' in msg
    monkeypatch.setattr(sys, 'argv', argv + ['--non-strict'])  # the explicit opt-out still evaluates
    tools_test.main()
    assert 'mIoU' in capsys.readouterr().out


def _random_cfg(make_seg_cfg, work: str, iters: int, delta: bool):
    """Random flips and dropout in training: what the saved generator states must reproduce."""
    cfg = make_seg_cfg(iters=iters, work_dir=work)
    for t in cfg.train_dataloader.dataset.pipeline:
        if t['type'] == 'RandomFlip':
            t['prob'] = 0.5
    cfg.model.decode_head.dropout_ratio = 0.5
    cfg.custom_hooks = [dict(type='ExactResumeHook')] + ([dict(type='DeltaCheckpointHook')] if delta else [])
    return cfg


def _train(cfg) -> dict:
    runner = Runner.from_cfg(cfg)
    runner.train()
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_resume_is_bit_identical(make_seg_cfg, tmp_path):
    reference = _train(_random_cfg(make_seg_cfg, str(tmp_path / 'ref'), 6, delta=False))
    for delta in (False, True):
        work = str(tmp_path / f'run_delta{delta}')
        _train(_random_cfg(make_seg_cfg, work, 3, delta))  # "killed" after the checkpoint at iter 3
        saved = load_checkpoint_file(osp.join(work, 'iter_3.pth'))
        assert 'mmpeft_rng_state' in saved and ('mmpeft_delta' in saved['meta']) == delta
        if delta:  # and resumed in a copy of the work dir whose last_checkpoint is empty
            shutil.copytree(work, work + '_copy')
            shutil.rmtree(work)
            work += '_copy'
            open(osp.join(work, 'last_checkpoint'), 'w').close()
        cfg = _random_cfg(make_seg_cfg, work, 6, delta)
        cfg.resume = True
        resumed = _train(cfg)
        assert resumed.keys() == reference.keys()
        differ = [k for k in reference if not torch.equal(reference[k], resumed[k])]
        assert not differ, f'delta={delta}: {len(differ)} tensors differ, e.g. {differ[:3]}'


def _wait_for(predicate, proc, timeout: float = 240.0, poll: float = 0.005) -> None:
    end = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f'training ended early (exit {proc.returncode})'
        assert time.time() < end, 'timed out waiting for the training'
        time.sleep(poll)


def _save_files(work: str) -> set:
    """Checkpoint files and their temporary files: a new name means a save has begun."""
    return set(glob.glob(osp.join(work, 'iter_*.pth')) + glob.glob(osp.join(work, '.iter_*.tmp')))


def _start_training(argv, log_path: str) -> subprocess.Popen:
    """``python tools/train.py ARGV`` as a user starts it, output to a log file.

    A new process, not a fork of this one: a forked child of a process whose OpenMP threads have
    run can deadlock in its first parallel region (GNU libgomp is not fork-safe).
    """
    with open(log_path, 'a') as log:
        return subprocess.Popen([sys.executable, osp.join(ROOT, 'tools', 'train.py'), *argv], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, OMP_NUM_THREADS='1'))


def test_kill9_during_save_then_resume(seg_data_root, tmp_path):
    work = str(tmp_path / 'work')
    cfg = tiny_seg_cfg(seg_data_root, work, iters=1000)
    cfg.custom_hooks = []  # full checkpoints: slower saves, more chances to die inside one
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1, max_keep_ckpts=3)
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    argv = [cfg_path, '--work-dir', work, '--resume', '--no-validate']
    log = str(tmp_path / 'train.log')
    rng = random.Random(0)
    for kill in range(3):
        proc = _start_training(argv, log)
        try:
            before = set(glob.glob(osp.join(work, 'iter_*.pth')))
            _wait_for(lambda: set(glob.glob(osp.join(work, 'iter_*.pth'))) - before, proc)
            if kill == 0:  # a second training while this one runs is refused, naming its pid
                with pytest.raises(WorkDirInUseError, match=f'pid {proc.pid}'):
                    lock_work_dir(work)
            if kill % 2 == 0:  # inside a save: as soon as its file appears
                time.sleep(rng.uniform(0.0, 0.5))
                started = _save_files(work)
                _wait_for(lambda: _save_files(work) - started, proc, poll=0)
            else:
                time.sleep(rng.uniform(0.0, 1.0))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    for path in glob.glob(osp.join(work, '*.pth')):  # every checkpoint left behind is complete
        load_checkpoint_file(path)
    latest = find_resume_checkpoint(work)
    last_iter = load_checkpoint_file(latest)['meta']['iter']
    proc = _start_training(argv + ['--cfg-options', f'train_cfg.max_iters={last_iter + 1}'], log)
    assert proc.wait(300) == 0, open(log).read()[-3000:]
    assert load_checkpoint_file(osp.join(work, f'iter_{last_iter + 1}.pth'))['meta']['iter'] == last_iter + 1
    assert not glob.glob(osp.join(work, '.*.tmp'))  # the killed saves' temporary files are gone
