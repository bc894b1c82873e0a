"""tools/setup_env.sh's GPU branch, decided by tools/dev/cuda_build_plan.py: ops without CUDA where torch
sees no GPU, CUDA ops for the visible GPUs' architectures compiled by an nvcc matching torch's CUDA, or a
stop naming what is missing. Fake machines (MMPEFT_FAKE_CUDA_DEVICES / MMPEFT_FAKE_TORCH_CUDA) and fake
``nvcc`` scripts; nothing is built."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
from tools_import import ROOT, _load

cbp = _load('cuda_build_plan', 'tools/dev/cuda_build_plan.py')
SETUP_ENV = osp.join(ROOT, 'tools', 'setup_env.sh')


def fake_toolkit(root, version: str, headers: bool = True) -> str:
    """``root/bin/nvcc`` printing ``nvcc --version`` as CUDA ``version`` does (and ``include/`` headers)."""
    os.makedirs(osp.join(root, 'bin'))
    nvcc = osp.join(root, 'bin', 'nvcc')
    with open(nvcc, 'w') as f:
        f.write('#!/bin/sh\necho "nvcc: NVIDIA (R) Cuda compiler driver"\n'
                f'echo "Cuda compilation tools, release {version}, V{version}.42"\n')
    os.chmod(nvcc, 0o755)
    if headers:
        os.makedirs(osp.join(root, 'include'))
        open(osp.join(root, 'include', 'cuda_runtime.h'), 'w').close()
    return str(root)


def run_plan(env: dict, caps=((9, 0),), torch_cuda='12.1') -> dict:
    """The plan for a fake machine, with no system CUDA folders (this machine's own nvcc stays out)."""
    return cbp.plan(env=env, system_roots=[], machine=cbp.Machine(list(caps), torch_cuda))


def test_no_gpu_builds_without_cuda_whatever_compilers_exist(tmp_path):
    home = fake_toolkit(tmp_path / 'cuda', '12.1')
    assert run_plan({'CUDA_HOME': home, 'PATH': ''}, caps=()) == {'MMPEFT_MMCV_OPS': 'cpu'}
    assert run_plan({'PATH': ''}, caps=(), torch_cuda=None) == {'MMPEFT_MMCV_OPS': 'cpu'}


def test_gpus_build_cuda_ops_for_exactly_their_architectures(tmp_path):
    home = fake_toolkit(tmp_path / 'cuda-12.1', '12.1')
    plan = run_plan({'CUDA_HOME': home, 'PATH': ''}, caps=[(9, 0), (8, 0), (9, 0)])
    assert plan == {'MMPEFT_MMCV_OPS': 'cuda', 'FORCE_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': '8.0;9.0',
                    'CUDA_HOME': home}


def test_the_compiler_matching_torchs_cuda_is_taken_and_becomes_cuda_home(tmp_path):
    wrong = fake_toolkit(tmp_path / 'cuda-12.4', '12.4')
    right = fake_toolkit(tmp_path / 'cuda-12.1', '12.1')
    # CUDA_HOME names the wrong toolkit, PATH holds the right one: the right one is built with
    plan = run_plan({'CUDA_HOME': wrong, 'PATH': osp.join(right, 'bin')}, torch_cuda='12.1.105')
    assert plan['CUDA_HOME'] == right and plan['TORCH_CUDA_ARCH_LIST'] == '9.0'
    # a system folder (/usr/local/cuda-X.Y style) is found too
    plan = cbp.plan(env={'PATH': ''}, system_roots=[wrong, right], machine=cbp.Machine([(8, 6)], '12.1'))
    assert plan['CUDA_HOME'] == right and plan['TORCH_CUDA_ARCH_LIST'] == '8.6'


def test_a_symlinked_nvcc_leads_to_its_toolkit(tmp_path):
    real = fake_toolkit(tmp_path / 'cuda-12.1', '12.1')
    os.makedirs(tmp_path / 'usr' / 'bin')
    os.symlink(osp.join(real, 'bin', 'nvcc'), tmp_path / 'usr' / 'bin' / 'nvcc')  # /usr/bin/nvcc -> toolkit
    plan = run_plan({'PATH': str(tmp_path / 'usr' / 'bin')})
    assert plan['CUDA_HOME'] == real


def test_no_matching_compiler_stops_naming_torchs_cuda_and_what_was_found(tmp_path):
    other = fake_toolkit(tmp_path / 'cuda-12.4', '12.4')
    with pytest.raises(cbp.PlanError) as e:
        run_plan({'PATH': osp.join(other, 'bin')}, torch_cuda='12.1')
    msg = str(e.value)
    assert 'CUDA 12.1' in msg and osp.join(other, 'bin', 'nvcc') + ' (CUDA 12.4)' in msg
    assert 'CUDA_HOME' in msg and 'MMPEFT_MMCV_WITHOUT_CUDA=1' in msg
    with pytest.raises(cbp.PlanError, match='no nvcc at all'):
        run_plan({'PATH': ''})


def test_a_compiler_without_headers_is_not_a_toolkit(tmp_path):
    bare = fake_toolkit(tmp_path / 'bare', '12.1', headers=False)
    with pytest.raises(cbp.PlanError, match=re.escape(osp.join(bare, 'bin', 'nvcc')) + r'.*cuda_runtime\.h'):
        run_plan({'CUDA_HOME': bare, 'PATH': ''})


def test_torch_without_cuda_on_a_gpu_machine_is_an_error_and_the_opt_out_builds_without_cuda(tmp_path):
    with pytest.raises(cbp.PlanError, match='torch.version.cuda is None'):
        run_plan({'PATH': ''}, torch_cuda=None)
    assert run_plan({'PATH': '', 'MMPEFT_MMCV_WITHOUT_CUDA': '1'}) == {'MMPEFT_MMCV_OPS': 'cpu'}


def test_fake_devices_are_read_from_the_environment():
    env = {'MMPEFT_FAKE_CUDA_DEVICES': '8.6, 9.0', 'MMPEFT_FAKE_TORCH_CUDA': '12.1'}
    assert cbp.probe_machine(env) == cbp.Machine([(8, 6), (9, 0)], '12.1')
    assert cbp.probe_machine({'MMPEFT_FAKE_CUDA_DEVICES': ''}) == cbp.Machine([], None)
    with pytest.raises(cbp.PlanError, match="'sm_90'"):
        cbp.probe_machine({'MMPEFT_FAKE_CUDA_DEVICES': 'sm_90'})


def _setup_env_plan(env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ('CUDA_HOME', 'CUDA_PATH', 'MMPEFT_MMCV_WITHOUT_CUDA')}
    env.update(env_extra)
    return subprocess.run(['bash', SETUP_ENV, '--plan'], env=env, capture_output=True, text=True, timeout=120)


def test_setup_env_plans_a_cuda_build_for_a_fake_gpu(tmp_path):
    home = fake_toolkit(tmp_path / 'cuda-12.1', '12.1')
    proc = _setup_env_plan({'MMPEFT_FAKE_CUDA_DEVICES': '9.0', 'MMPEFT_FAKE_TORCH_CUDA': '12.1', 'CUDA_HOME': home})
    assert proc.returncode == 0, proc.stderr
    assert f'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 CUDA_HOME={home}' in proc.stdout
    proc = _setup_env_plan({'MMPEFT_FAKE_CUDA_DEVICES': ''})
    assert proc.returncode == 0 and 'mmcv ops without CUDA' in proc.stdout, proc.stderr


def test_setup_env_stops_on_a_gpu_without_a_matching_compiler():
    # no machine has a CUDA 99.9 compiler: whatever nvcc this machine holds, none matches
    proc = _setup_env_plan({'MMPEFT_FAKE_CUDA_DEVICES': '9.0', 'MMPEFT_FAKE_TORCH_CUDA': '99.9'})
    assert proc.returncode != 0
    assert 'no CUDA 99.9 compiler' in proc.stderr and 'MMPEFT_MMCV_WITHOUT_CUDA=1' in proc.stderr
    assert 'plan:' not in proc.stdout


@pytest.mark.parametrize('gpu,mmcv_cuda,opt_out,suits', [
    (False, 'not available', '', True),   # CPU machine, CPU ops: as today
    (True, 'not available', '', False),   # GPU machine, CPU-only mmcv: rebuilt with CUDA
    (True, '12.1', '', True),             # GPU machine, CUDA ops
    (True, 'not available', '1', True),   # GPU machine, without CUDA knowingly
])
def test_setup_env_replaces_an_mmcv_without_cuda_ops_on_a_gpu_machine(tmp_path, gpu, mmcv_cuda, opt_out, suits):
    """setup_env.sh's MMCV_SUITS check (skip or (re)build mmcv) against stub torch / mmcv modules."""
    with open(SETUP_ENV) as f:
        check = re.search(r"^MMCV_SUITS='(.*?)'$", f.read(), re.S | re.M).group(1)
    (tmp_path / 'torch').mkdir()
    (tmp_path / 'torch' / '__init__.py').write_text(f'class cuda:\n    is_available = staticmethod(lambda: {gpu})\n')
    (tmp_path / 'mmcv' / 'ops').mkdir(parents=True)
    (tmp_path / 'mmcv' / '__init__.py').write_text('')
    (tmp_path / 'mmcv' / 'ops' / '__init__.py').write_text(f'def get_compiling_cuda_version():\n'
                                                          f'    return {mmcv_cuda!r}\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path), MMPEFT_MMCV_WITHOUT_CUDA=opt_out)
    proc = subprocess.run([sys.executable, '-c', check], env=env, cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.stderr == ''
    assert (proc.returncode == 0) is suits


def _report(stdout: str) -> dict:
    """``name: value`` lines of collect_env's report (the multi-line build details aside)."""
    return dict(m.groups() for m in re.finditer(r'^(\S[^:\n]*): (.*)$', stdout, re.M))


def test_collect_env_reports_versions_and_whether_mmcv_ops_have_cuda():
    from importlib.metadata import version

    import mmcv.ops
    import torch

    from mmpeft_testing import run_as_main
    proc = run_as_main('tools/collect_env.py')
    assert proc.returncode == 0, proc.stderr
    rep = _report(proc.stdout)
    # the toolboxes' keys and mmengine's base part, with the installed distributions' versions
    assert rep['PyTorch'] == torch.__version__ and rep['PyTorch CUDA'] == str(torch.version.cuda)
    assert rep['CUDA available'] == str(torch.cuda.is_available()) and 'GCC' in rep
    for key, dist in (('MMEngine', 'mmengine'), ('MMCV', 'mmcv'), ('MMDetection', 'mmdet'),
                      ('MMSegmentation', 'mmsegmentation'), ('MMPreTrain', 'mmpretrain'), ('timm', 'timm')):
        assert rep[key] == version(dist), key
    assert rep['mmpeft'].startswith(version('mmpeft'))
    cuda_ops = mmcv.ops.get_compiling_cuda_version()
    assert rep['MMCV CUDA Compiler'] == cuda_ops
    assert rep['MMCV ops with CUDA'].split(',')[0] == ('no' if cuda_ops == 'not available' else 'yes')
    assert rep['MMCV Compiler'] == mmcv.ops.get_compiler_version()


def test_collect_env_reports_an_mmcv_whose_ops_do_not_import(monkeypatch):
    from mmpeft_testing import run_as_main
    monkeypatch.setitem(sys.modules, 'mmcv.ops', None)  # `import mmcv.ops` raises ModuleNotFoundError
    proc = run_as_main('tools/collect_env.py')
    assert proc.returncode == 0, proc.stderr
    rep = _report(proc.stdout)
    assert rep['MMCV ops with CUDA'].startswith('n/a (mmcv.ops does not import: ModuleNotFoundError')
    assert rep['MMCV Compiler'] == rep['MMCV CUDA Compiler'] == rep['MMCV ops with CUDA']
