import os
import os.path as osp
import re
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

HERE = osp.dirname(osp.abspath(__file__))

# What OpenMMLab packages ship under <pkg>/.mim/ (mmdet's setup.py `add_mim_extension`): a config base
# `mmpeft::hst/x.py` is <mmpeft>/.mim/configs/hst/x.py (mmpeft/utils/mim.py), the tools run as
# `python -m mmpeft.tools.train`, and mim reads its index .mim/model-index.yml.
MIM_ITEMS = ('configs', 'tools', 'model-index.yml')
MIM_IGNORE = shutil.ignore_patterns('__pycache__', '*.pyc', '*.pyo', '*.egg-info')


def get_version() -> str:
    with open(osp.join(HERE, 'mmpeft', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def parse_requirements(fname: str) -> list:
    reqs = []
    with open(osp.join(HERE, 'requirements', fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                reqs.append(line)
    return reqs


def add_mim_extension(pkg_dir: str, mode: str) -> None:
    """Put ``configs``, ``tools`` and ``model-index.yml`` of the source tree into ``pkg_dir/.mim``.

    ``mode='copy'`` (wheel, sdist-built wheel, non-editable install): real files, so the installed package
    needs no source tree. ``mode='symlink'`` (editable install): relative links into the source tree,
    so an edit of a config is seen at once (``mmpeft/.mim`` is git-ignored).
    """
    mim_dir = osp.join(pkg_dir, '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_ITEMS:
        src = osp.join(HERE, name)
        if not osp.exists(src):
            raise FileNotFoundError(f'{src} is missing: mmpeft packages it under mmpeft/.mim/{name} '
                                    '(run the build from a complete source tree or sdist)')
        dst = osp.join(mim_dir, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=MIM_IGNORE)
        else:
            shutil.copyfile(src, dst)


class BuildPyWithMim(build_py):
    """``build_py`` that also fills ``mmpeft/.mim``: copies into the build folder for a wheel, links in the
    source tree for an editable install (setuptools sets ``editable_mode`` for ``pip install -e``)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            add_mim_extension(osp.join(HERE, 'mmpeft'), mode='symlink')
        else:
            add_mim_extension(osp.join(self.build_lib, 'mmpeft'), mode='copy')


class DevelopWithMim(develop):
    """Legacy ``setup.py develop`` (setuptools < 80, where it does not go through ``pip install -e``):
    the same links as an editable install."""

    def run(self) -> None:
        super().run()
        add_mim_extension(osp.join(HERE, 'mmpeft'), mode='symlink')


setup(
    name='mmpeft',
    version=get_version(),
    description='Parameter-efficient fine-tuning of vision transformers for the OpenMMLab toolboxes',
    long_description=open(osp.join(HERE, 'README.md')).read() if osp.exists(
        osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks')),
    include_package_data=True,
    python_requires='>=3.9',
    install_requires=parse_requirements('runtime.txt'),
    extras_require={
        'mim': parse_requirements('mminstall.txt'),
        'tests': parse_requirements('tests.txt'),
    },
    cmdclass={'build_py': BuildPyWithMim, 'develop': DevelopWithMim},
    license='Apache License 2.0',
    zip_safe=False,
)
