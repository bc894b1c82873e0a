"""Shared test helpers (importable: tests/helpers is put on sys.path by tests/conftest.py)."""
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'bitfit_swin-tiny_synthetic-seg-64x64.py')
HELPERS = osp.join(ROOT, 'tests', 'helpers')


def tiny_seg_cfg(data_root: str, work_dir: str, iters: int = 4, **overrides):
    """The demo config on ``data_root`` for ``iters`` iterations, checkpoint at the end, no val."""
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.work_dir = work_dir
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = data_root
        cfg[key].dataset.generate = None
        cfg[key].batch_size = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=10 ** 6)
    # fixed schedule length and no random flip: runs of different lengths share one trajectory
    cfg.param_scheduler = [dict(type='PolyLR', power=1.0, begin=0, end=100, eta_min=1e-5, by_epoch=False)]
    for t in cfg.train_dataloader.dataset.pipeline:
        if t['type'] == 'RandomFlip':
            t['prob'] = 0.0
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=iters,
                                        max_keep_ckpts=10)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)
    cfg.merge_from_dict(overrides)
    return cfg


def run_as_main(script: str, *args) -> 'subprocess.CompletedProcess':  # noqa: F821
    """``python SCRIPT ARGS`` from the repository root, run as ``__main__`` in this process (what a
    subprocess would do, without its ~10 s of imports): exit status, stdout and stderr; an uncaught
    exception's traceback goes to stderr with status 1, as the interpreter does."""
    import contextlib
    import io
    import os
    import runpy
    import subprocess
    import sys
    import traceback
    argv = [script, *map(str, args)]
    out, err, code = io.StringIO(), io.StringIO(), 0
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = argv
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(osp.join(ROOT, script), run_name='__main__')
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # noqa: BLE001  (reported like an uncaught exception)
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def metafiles_read_once():
    """A context in which mmengine reads the toolboxes' metafiles and package metadata once: it re-reads
    them for every ``mmdet::`` / ``mmseg::`` / ``mmpretrain::`` base (about 1 s each here), and they do not
    change during a run. Config tests use it as a module fixture::

        @pytest.fixture(scope='module', autouse=True)
        def read_metafiles_once():
            with metafiles_read_once():
                yield
    """
    import contextlib
    import functools

    import mmengine.config.config
    import mmengine.config.utils
    import pytest

    @contextlib.contextmanager
    def cached():
        mp = pytest.MonkeyPatch()
        mp.setattr(mmengine.config.utils, 'load', functools.lru_cache(maxsize=None)(mmengine.config.utils.load))
        mp.setattr(mmengine.config.config, 'is_installed',
                   functools.lru_cache(maxsize=None)(mmengine.config.config.is_installed))
        try:
            yield
        finally:
            mp.undo()
    return cached()


def check_trainable_params_hooks(cfg, model) -> None:
    """The config's ``TrainableParamsHook`` expectations hold for the built model: every parameter its
    ``expect_trainable`` patterns match trains, none its ``expect_frozen`` patterns match does."""
    from mmpeft.peft.policy import match_names
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    for hook in cfg.get('custom_hooks', []):
        if hook['type'] != 'TrainableParamsHook':
            continue
        _, per = match_names(params, hook.get('expect_trainable'), 'expect_trainable')
        assert all(set(v) <= trainable for v in per.values())
        _, per = match_names(params, hook.get('expect_frozen'), 'expect_frozen')
        assert all(not set(v) & trainable for v in per.values())
