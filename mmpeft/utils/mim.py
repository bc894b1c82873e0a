"""``_base_ = 'mmpeft::hst/mask-rcnn_vit-b_hst_1x_coco.py'``: mmpeft's configs as bases from any folder.

As in the OpenMMLab toolboxes, the configs (and tools) ship inside the package, under
``mmpeft/.mim/configs`` (``setup.py``: copied into a wheel, linked into the source tree by an editable
install). mmengine 0.10.7 knows the ``pkg::path`` prefix only for a fixed list of OpenMMLab packages,
and it would give every dict of such a base ``_scope_='pkg'``. mmpeft's configs are mmdet / mmseg /
mmpretrain configs (their own bases set ``default_scope``), and mmpeft registers its classes in
mmengine's root registries, so a scope ``mmpeft`` would send e.g. mmpretrain's ``ImageClassifier`` to a
registry that does not hold it. :func:`register` therefore teaches ``Config`` the prefix as *a file from
the package, no scope of its own*: exactly what a relative ``_base_`` to the same file gives. A base's
own relative ``_base_`` entries resolve next to it inside ``.mim/configs``, its ``mmdet::`` ones as
usual. Applied on ``import mmpeft``; a config naming an ``mmpeft::`` base is read after that import
(``tools/train.py`` and ``python -m mmpeft.tools.train`` import mmpeft first).
"""
import os
import os.path as osp
from typing import Callable, Optional, Tuple

PREFIX = 'mmpeft::'
PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))


def mim_dir() -> str:
    """``<mmpeft package>/.mim``: where the packaged ``configs``, ``tools`` and ``model-index.yml`` are."""
    return osp.join(PACKAGE_DIR, '.mim')


def packaged_path(kind: str, rel: str) -> str:
    """Absolute path of ``rel`` under ``.mim/<kind>`` (``kind`` is ``'configs'`` or ``'tools'``).

    An mmpeft without ``.mim`` (its source folder put on ``PYTHONPATH``, not installed) or a file that is
    not there is an error naming the path and the fix.
    """
    root = osp.join(mim_dir(), kind)
    if not osp.isdir(root):
        raise FileNotFoundError(
            f'mmpeft at {PACKAGE_DIR} has no packaged {kind} ({root} is missing): install mmpeft with '
            '`pip install .` (copies configs/ and tools/ into the package) or `pip install -e .` (links '
            'them), instead of only putting its folder on PYTHONPATH')
    path = osp.join(root, rel)
    if not osp.isfile(path):
        entries = sorted(e for e in os.listdir(root) if not e.startswith(('.', '_')))
        raise FileNotFoundError(f'mmpeft has no {kind[:-1]} {rel!r}: {path} does not exist '
                                f'(paths are relative to {root}, which holds {entries})')
    return path


def resolve(cfg_path: str) -> str:
    """``'mmpeft::hst/x.py'`` -> absolute path of ``hst/x.py`` in the packaged configs."""
    if not cfg_path.startswith(PREFIX):
        raise ValueError(f'{cfg_path!r} is not an mmpeft config name: write {PREFIX}<path under configs/>')
    return packaged_path('configs', cfg_path[len(PREFIX):])


def register() -> None:
    """Make ``mmengine.config.Config`` resolve ``mmpeft::`` bases (idempotent)."""
    from mmengine.config import Config
    original: Callable[[str, str], Tuple[str, Optional[str]]] = Config._get_cfg_path
    if getattr(original, '_mmpeft_mim', False):
        return

    def _get_cfg_path(cfg_path: str, filename: str) -> Tuple[str, Optional[str]]:
        if cfg_path.startswith(PREFIX):
            return resolve(cfg_path), None  # no scope: see the module docstring
        return original(cfg_path, filename)

    _get_cfg_path._mmpeft_mim = True
    Config._get_cfg_path = staticmethod(_get_cfg_path)


register()
