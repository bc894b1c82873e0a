"""Packaging as the OpenMMLab toolboxes do: a wheel of the repository carries ``configs/``, ``tools/`` and
``model-index.yml`` under ``mmpeft/.mim``, so a config in any folder inherits ``mmpeft::`` bases from the
installed package; an editable install links them instead. Everything is built offline from a copy of
the repository in a temporary folder (the repository itself gets no build/ or egg-info)."""
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MIM = 'mmpeft/.mim'
# top-level folders that are not part of a build (git-ignored outputs, the test and benchmark trees)
_TOP_SKIP = {'.git', '.venv', 'build', 'dist', 'work_dirs', 'data', 'pretrain', 'tests', 'benchmarks',
             '.pytest_cache', 'mmpeft.egg-info'}


def _ignore(folder: str, names: list) -> set:
    skip = {n for n in names if n in ('__pycache__', '.mim') or n.endswith(('.pyc', '.egg-info'))}
    if osp.abspath(folder) == ROOT:
        skip |= _TOP_SKIP & set(names)
    return skip


def _pip(*args: str, cwd: str) -> None:
    env = dict(os.environ, PIP_NO_INDEX='1', PIP_DISABLE_PIP_VERSION_CHECK='1')
    proc = subprocess.run([sys.executable, '-m', 'pip', *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f'pip {" ".join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'


def _repo_files(folder: str) -> set:
    """Files of ``ROOT/folder`` relative to ``ROOT`` (no bytecode), the reference for what ships."""
    out = set()
    for d, dirs, files in os.walk(osp.join(ROOT, folder)):
        dirs[:] = [x for x in dirs if x != '__pycache__']
        out |= {osp.relpath(osp.join(d, f), ROOT) for f in files if not f.endswith('.pyc')}
    return out


@pytest.fixture(scope='module')
def source_copy(tmp_path_factory) -> str:
    src = str(tmp_path_factory.mktemp('pkg') / 'src')
    shutil.copytree(ROOT, src, ignore=_ignore)
    return src


@pytest.fixture(scope='module')
def wheel_install(source_copy, tmp_path_factory) -> dict:
    """``pip wheel . --no-deps --no-build-isolation`` into a folder, then ``pip install --target``."""
    tmp = tmp_path_factory.mktemp('wheel')
    _pip('wheel', '.', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp / 'dist'), cwd=source_copy)
    wheels = os.listdir(tmp / 'dist')
    assert len(wheels) == 1 and wheels[0].startswith('mmpeft-'), wheels
    wheel = str(tmp / 'dist' / wheels[0])
    _pip('install', '--no-deps', '-q', '--target', str(tmp / 'site'), wheel, cwd=str(tmp))
    return dict(wheel=wheel, site=str(tmp / 'site'), tmp=str(tmp))


def test_wheel_holds_the_configs_tools_and_model_index(wheel_install):
    with zipfile.ZipFile(wheel_install['wheel']) as z:
        names = set(z.namelist())
        shipped = {n[len(MIM) + 1:] for n in names if n.startswith(MIM + '/')}
        # every config and tool of the repository, byte for byte, and nothing compiled
        expected = _repo_files('configs') | _repo_files('tools') | {'model-index.yml'}
        assert shipped == expected, (sorted(expected - shipped)[:10], sorted(shipped - expected)[:10])
        for rel in ('configs/hst/mask-rcnn_vit-b_hst_1x_coco.py', 'tools/train.py', 'model-index.yml'):
            with open(osp.join(ROOT, rel), 'rb') as f:
                assert z.read(f'{MIM}/{rel}') == f.read(), rel
    assert 'mmpeft/tools/train.py' in names and 'mmpeft/tools/test.py' in names
    assert not any(n.startswith(('configs/', 'tools/', 'tests/')) for n in names)  # only inside mmpeft/


def _files_read(cfg) -> list:
    """The config files mmengine read for ``cfg``: ``Config.text`` heads each file's text with its path."""
    return [line for line in cfg.text.splitlines() if line.endswith('.py') and osp.isabs(line) and osp.isfile(line)]


def _repo_config(name: str) -> str:
    """``configs/.../name`` in the repository, wherever the config tree keeps it."""
    (path,) = glob.glob(osp.join(ROOT, 'configs', '**', name), recursive=True)
    return path


def test_config_in_another_folder_inherits_mmpeft_bases_from_the_installed_wheel(wheel_install):
    from mmengine.config import Config
    site, work = wheel_install['site'], osp.join(wheel_install['tmp'], 'user')
    configs = osp.join(site, MIM, 'configs')
    cls_cfg = _repo_config('vit-b_hst_vtab1k-cifar100.py')
    det_cfg = osp.join(ROOT, 'configs', 'hst', 'mask-rcnn_vit-b_hst_1x_coco.py')
    cls_name, det_name = (osp.relpath(c, osp.join(ROOT, 'configs')) for c in (cls_cfg, det_cfg))
    # reference: the files the same configs read in the repository (plain relative / mmdet:: bases),
    # which must be read from the installed package instead
    in_site = {c: [f.replace(osp.join(ROOT, 'configs'), configs) for f in _files_read(Config.fromfile(c))]
               for c in (cls_cfg, det_cfg)}
    assert sum(f.startswith(configs) for f in in_site[cls_cfg]) >= 3  # the row, its base(s), the user file
    os.makedirs(work)
    with open(osp.join(work, 'tiny_cls.py'), 'w') as f:  # a VTAB row, shrunk: 4 blocks, 64x64, 7 classes
        f.write(textwrap.dedent(f"""\
            _base_ = 'mmpeft::{cls_name}'
            model = dict(
                backbone=dict(init_cfg=None, embed_dims=[16, 24, 32, 48],
                              vit_kwargs=dict(depth=4, embed_dim=64, num_heads=2, img_size=64)),
                head=dict(num_classes=7, in_channels=48))
            """))
    with open(osp.join(work, 'det.py'), 'w') as f:
        f.write(f"_base_ = ['mmpeft::{det_name}']\n")
    with open(osp.join(work, 'missing.py'), 'w') as f:
        f.write("_base_ = 'mmpeft::hst/no-such-config.py'\n")
    script = textwrap.dedent("""\
        import contextlib, io, json, os.path as osp, runpy, sys
        import torch
        import mmpeft
        from mmengine.config import Config
        from mmengine.registry import MODELS, init_default_scope

        def files_read(cfg):
            return [line for line in cfg.text.splitlines()
                    if line.endswith('.py') and osp.isabs(line) and osp.isfile(line)]

        out = dict(mmpeft=mmpeft.__file__)
        cls = Config.fromfile('tiny_cls.py')
        init_default_scope(cls.default_scope)
        model = MODELS.build(cls.model).eval()
        with torch.no_grad():
            logits = model(torch.zeros(2, 3, 64, 64))
        out['cls'] = dict(scope=cls.default_scope, model=type(model).__name__,
                          backbone=type(model.backbone).__module__ + '.' + type(model.backbone).__name__,
                          logits=list(logits.shape), files=files_read(cls))
        det = Config.fromfile('det.py')
        out['det'] = dict(scope=det.default_scope, model=det.model.type, backbone=det.model.backbone.type,
                          neck=det.model.neck.in_channels, files=files_read(det))
        try:
            Config.fromfile('missing.py')
            out['missing'] = 'no error'
        except FileNotFoundError as e:
            out['missing'] = str(e)
        # python -m mmpeft.tools.train --help: the packaged tools/train.py's parser
        help_text, sys.argv = io.StringIO(), ['train', '--help']
        with contextlib.redirect_stdout(help_text):
            try:
                runpy.run_module('mmpeft.tools.train', run_name='__main__', alter_sys=True)
            except SystemExit as e:
                out['help_exit'] = e.code
        out['help'] = help_text.getvalue()
        from mmpeft.tools._launch import find_tool
        out['train_tool'] = find_tool('train.py')
        print('RESULT ' + json.dumps(out))
        """)
    # cwd is neither the repository nor the site folder: mmpeft can only come from PYTHONPATH=site
    env = dict(os.environ, PYTHONPATH=site, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split('RESULT ', 1)[1])
    assert out['mmpeft'] == osp.join(site, 'mmpeft', '__init__.py')

    cls = out['cls']
    assert cls['model'] == 'ImageClassifier' and cls['backbone'] == 'mmpeft.backbones.hst_vit.HSTViT'
    assert cls['logits'] == [2, 7] and cls['scope'] == 'mmpretrain'
    # the mmpeft:: base and its own relative bases come from the installed package, in the repository's
    # order, then the user's file; nothing from the repository
    assert cls['files'] == in_site[cls_cfg] + [osp.join(work, 'tiny_cls.py')]

    det = out['det']
    # mask-rcnn_vit-b_hst_1x_coco.py: mmdet:: base + relative ./_base_/hst_vit-b_dense.py + {{_base_.x}}
    assert det['scope'] == 'mmdet' and det['model'] == 'MaskRCNN' and det['backbone'] == 'HSTViT'
    assert det['neck'] == [64, 128, 256, 384]
    assert det['files'] == in_site[det_cfg] + [osp.join(work, 'det.py')]
    # (the toolboxes' own bases live in the environment, which may sit inside the repository: .venv)
    venv = osp.join(ROOT, '.venv') + os.sep
    assert not any(f.startswith(ROOT + os.sep) and not f.startswith(venv) for f in cls['files'] + det['files'])

    assert 'hst/no-such-config.py' in out['missing'] and configs in out['missing']
    assert out['help_exit'] == 0 and '--trust-checkpoints' in out['help'] and 'config' in out['help']
    assert out['train_tool'] == osp.join(site, MIM, 'tools', 'train.py')


def test_sdist_carries_what_the_wheel_build_needs(source_copy, tmp_path):
    proc = subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(tmp_path)], cwd=source_copy,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sdist,) = os.listdir(tmp_path)
    with tarfile.open(tmp_path / sdist) as t:
        top = sdist[:-len('.tar.gz')] + '/'
        names = {n[len(top):] for n in t.getnames() if n.startswith(top)}
    needed = (_repo_files('configs') | _repo_files('tools') | _repo_files('requirements')
              | {'model-index.yml', 'setup.py', 'pyproject.toml', 'README.md', 'mmpeft/tools/train.py'})
    assert needed <= names, sorted(needed - names)[:10]
    assert not any(n.endswith('.pyc') or '/.mim/' in n for n in names)


def test_editable_install_links_configs_and_tools(source_copy, tmp_path):
    """``pip install -e .`` (PEP 660, offline): ``mmpeft/.mim`` holds links into the source tree, so an
    edited config is what ``mmpeft::`` resolves to."""
    _pip('install', '--no-deps', '--no-build-isolation', '-q', '-e', '.', '--target', str(tmp_path / 'site'),
         cwd=source_copy)
    mim = osp.join(source_copy, 'mmpeft', '.mim')
    for name in ('configs', 'tools', 'model-index.yml'):
        assert osp.islink(osp.join(mim, name)), name
        assert osp.realpath(osp.join(mim, name)) == osp.realpath(osp.join(source_copy, name))


def test_mmpeft_without_packaged_configs_names_the_fix(tmp_path, monkeypatch):
    """mmpeft's source folder on PYTHONPATH, never installed: no .mim, an error saying how to install."""
    from mmengine.config import Config

    from mmpeft.utils import mim
    mim.register()
    patched = Config._get_cfg_path
    mim.register()  # idempotent: one wrapper, not two
    assert Config._get_cfg_path is patched
    monkeypatch.setattr(mim, 'PACKAGE_DIR', str(tmp_path / 'mmpeft'))
    with pytest.raises(FileNotFoundError, match=r'has no packaged configs .*pip install \.'):
        mim.resolve('mmpeft::hst/mask-rcnn_vit-b_hst_1x_coco.py')
    with pytest.raises(ValueError, match='mmpeft::<path under configs/>'):
        mim.resolve('hst/mask-rcnn_vit-b_hst_1x_coco.py')
    # other bases are mmengine's business, as before
    assert Config._get_cfg_path('x.py', str(tmp_path / 'cfg.py')) == (str(tmp_path / 'x.py'), None)
