"""Print the environment as the OpenMMLab toolboxes' ``collect_env`` do, for bug reports and GPU set-ups.

    python tools/collect_env.py

mmengine's ``collect_env`` first (platform, Python, CUDA available, GPU names, CUDA_HOME, NVCC, GCC,
PyTorch and its build details, TorchVision, OpenCV, MMEngine), then torch's CUDA and cuDNN, mmcv and its
compiled ops (compiler, CUDA compiler, and whether they carry CUDA kernels: Mask R-CNN's RoIAlign / NMS
on a GPU need them, see ``tools/setup_env.sh``), the toolboxes, timm and mmpeft with the folder of its
packaged configs (what ``_base_ = 'mmpeft::...'`` reads). A part that cannot be read says why instead of
stopping the report.
"""
import importlib
import os.path as osp
import subprocess
import sys
from collections import OrderedDict
from typing import Dict

# (report key, module) of the packages whose versions are listed, in the toolboxes' naming
PACKAGES = (('MMDetection', 'mmdet'), ('MMSegmentation', 'mmseg'), ('MMPreTrain', 'mmpretrain'), ('timm', 'timm'))


def _version(module: str) -> str:
    try:
        return importlib.import_module(module).__version__
    except Exception as e:  # noqa: BLE001  (a broken package is reported, not raised)
        return f'not importable ({type(e).__name__}: {e})'


def _base_env() -> Dict[str, object]:
    try:
        from mmengine.utils.dl_utils import collect_env
        return collect_env()
    except Exception as e:  # noqa: BLE001
        import torch
        return OrderedDict([('sys.platform', sys.platform), ('Python', sys.version.replace('\n', '')),
                            ('CUDA available', torch.cuda.is_available()), ('PyTorch', torch.__version__),
                            ('MMEngine', f'collect_env failed ({type(e).__name__}: {e})')])


def _mmcv_ops(env: Dict[str, object], cuda_available: bool) -> None:
    env['MMCV'] = _version('mmcv')
    try:
        from mmcv.ops import get_compiler_version, get_compiling_cuda_version
        compiler, cuda = get_compiler_version(), get_compiling_cuda_version()
    except Exception as e:  # noqa: BLE001
        reason = f'n/a (mmcv.ops does not import: {type(e).__name__}: {e})'
        env['MMCV Compiler'] = env['MMCV CUDA Compiler'] = env['MMCV ops with CUDA'] = reason
        return
    env['MMCV Compiler'] = compiler
    env['MMCV CUDA Compiler'] = cuda
    with_cuda = cuda != 'not available'
    env['MMCV ops with CUDA'] = 'yes' if with_cuda else 'no'
    if cuda_available and not with_cuda:
        env['MMCV ops with CUDA'] = ('no, although torch sees a GPU: RoIAlign / NMS fail there; rebuild mmcv '
                                     'with bash tools/setup_env.sh')


def _mmpeft(env: Dict[str, object]) -> None:
    try:
        import mmpeft
        from mmpeft.utils import mim
    except Exception as e:  # noqa: BLE001
        env['mmpeft'] = f'not importable ({type(e).__name__}: {e})'
        return
    version, repo = mmpeft.__version__, osp.dirname(mim.PACKAGE_DIR)
    if osp.isdir(osp.join(repo, '.git')):  # a source checkout (editable install): the commit, as toolboxes do
        try:
            sha = subprocess.run(['git', '-C', repo, 'rev-parse', '--short=7', 'HEAD'], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
            version = f'{version}+{sha}' if sha else version
        except (OSError, subprocess.SubprocessError):
            pass
    env['mmpeft'] = f'{version} ({mim.PACKAGE_DIR})'
    configs = osp.join(mim.mim_dir(), 'configs')
    env['mmpeft configs (mmpeft::)'] = (configs if osp.isdir(configs) else
                                        f'missing ({configs}): pip install . or pip install -e . puts them there')


def collect_env() -> Dict[str, object]:
    """Name -> value, in the order printed."""
    import torch
    env = _base_env()
    cuda_available = torch.cuda.is_available()
    env['PyTorch CUDA'] = torch.version.cuda or 'none (a torch built without CUDA)'
    env['cuDNN'] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'n/a'
    _mmcv_ops(env, cuda_available)
    for key, module in PACKAGES:
        env[key] = _version(module)
    _mmpeft(env)
    return env


def main() -> None:
    for name, value in collect_env().items():
        print(f'{name}: {value}')


if __name__ == '__main__':
    main()
