"""How ``tools/setup_env.sh`` builds mmcv's ops on this machine: the decision, separate from the build.

    python tools/dev/cuda_build_plan.py     # `export` lines for the shell to eval, or exit 1 naming what is missing

- torch sees no GPU: ops without CUDA (``MMPEFT_MMCV_OPS=cpu``), as on the CPU development machine.
- torch sees GPUs: ops with CUDA kernels for exactly the visible devices' compute capabilities
  (``MMPEFT_MMCV_OPS=cuda``, ``FORCE_CUDA=1``, ``TORCH_CUDA_ARCH_LIST='8.0;9.0'``), compiled by an ``nvcc``
  whose CUDA ``major.minor`` equals torch's (``CUDA_HOME`` is set to that toolkit, which is what torch's
  extension builder uses). Without such a compiler (and its headers) the plan is an error naming torch's
  CUDA, the compilers found and where it looked, instead of an mmcv whose RoIAlign / NMS fail on the GPU.
  ``MMPEFT_MMCV_WITHOUT_CUDA=1`` asks for ops without CUDA on a GPU machine knowingly.

``nvcc`` is looked for at ``$CUDA_HOME/bin``, ``$CUDA_PATH/bin``, on ``PATH``, at ``/usr/local/cuda-X.Y/bin``
(X.Y: torch's CUDA) and ``/usr/local/cuda/bin``; the first with the right version and headers is taken.

For tests only (a fake machine; torch is then not imported):
    MMPEFT_FAKE_CUDA_DEVICES="8.0,9.0"   the visible devices' compute capabilities ("" = no GPU)
    MMPEFT_FAKE_TORCH_CUDA="12.1"        torch's CUDA version (unset: a torch built without CUDA)
"""
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

FAKE_DEVICES = 'MMPEFT_FAKE_CUDA_DEVICES'
FAKE_TORCH_CUDA = 'MMPEFT_FAKE_TORCH_CUDA'
OPT_OUT = 'MMPEFT_MMCV_WITHOUT_CUDA'


class PlanError(RuntimeError):
    """No CUDA build is possible here; the message names what is missing and the fix."""


class Machine(NamedTuple):
    capabilities: List[Tuple[int, int]]  # one (major, minor) per visible GPU; empty: no GPU
    torch_cuda: Optional[str]  # torch.version.cuda, e.g. '13.0'; None: torch built without CUDA


def _parse_capability(text: str) -> Tuple[int, int]:
    m = re.fullmatch(r'\s*(\d+)\.(\d+)\s*', text)
    if m is None:
        raise PlanError(f'{FAKE_DEVICES}: {text!r} is not a compute capability like 8.0 or 9.0 '
                        f'(write e.g. {FAKE_DEVICES}="8.0,9.0", or "" for no GPU)')
    return int(m.group(1)), int(m.group(2))


def probe_machine(env: Mapping[str, str]) -> Machine:
    """The visible GPUs and torch's CUDA version: from torch, or from the fake variables of the tests."""
    if FAKE_DEVICES in env:
        caps = [_parse_capability(c) for c in env[FAKE_DEVICES].split(',') if c.strip()]
        return Machine(caps, env.get(FAKE_TORCH_CUDA) or None)
    try:
        import torch
    except ImportError as e:
        raise PlanError(f'torch is not importable by {sys.executable} ({e}): install torch first '
                        '(tools/setup_env.sh does, before it decides how to build mmcv)') from e
    caps = []
    if torch.cuda.is_available():
        caps = [tuple(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]
    return Machine(caps, torch.version.cuda)


def nvcc_version(nvcc: str) -> Optional[str]:
    """``'13.0'`` from ``nvcc --version`` (``... release 13.0, V13.0.88``); None if it does not run."""
    try:
        out = subprocess.run([nvcc, '--version'], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'release (\d+\.\d+)', out)
    return m.group(1) if m else None


def _toolkit_root(nvcc: str) -> Optional[str]:
    """The toolkit folder of ``nvcc`` (``<root>/bin/nvcc``) that holds the CUDA headers the build includes
    (``<root>/include/cuda_runtime.h``); a symlinked nvcc is followed. None when there are no headers."""
    for path in (nvcc, osp.realpath(nvcc)):
        root = osp.dirname(osp.dirname(osp.abspath(path)))
        if osp.isfile(osp.join(root, 'include', 'cuda_runtime.h')):
            return root
    return None


def default_roots(cuda: str) -> Tuple[str, str]:
    """The usual install folders of the CUDA ``cuda`` toolkit (``'13.0'``)."""
    return f'/usr/local/cuda-{cuda}', '/usr/local/cuda'


def nvcc_candidates(env: Mapping[str, str], system_roots: Sequence[str]) -> List[str]:
    """Where a CUDA compiler may be, in the order they are tried (existing files only, no duplicates):
    ``$CUDA_HOME/bin``, ``$CUDA_PATH/bin``, ``PATH``, then ``<root>/bin`` of each of ``system_roots``."""
    found = [osp.join(env[k], 'bin', 'nvcc') for k in ('CUDA_HOME', 'CUDA_PATH') if env.get(k)]
    on_path = shutil.which('nvcc', path=env.get('PATH', ''))
    if on_path:
        found.append(on_path)
    found += [osp.join(r, 'bin', 'nvcc') for r in system_roots]
    out: List[str] = []
    for path in found:
        if osp.isfile(path) and os.access(path, os.X_OK) and osp.abspath(path) not in out:
            out.append(osp.abspath(path))
    return out


def plan(env: Optional[Mapping[str, str]] = None, system_roots: Optional[Sequence[str]] = None,
         machine: Optional[Machine] = None) -> Dict[str, str]:
    """The variables of mmcv's build here, e.g. ``{'MMPEFT_MMCV_OPS': 'cpu'}`` or ``{'MMPEFT_MMCV_OPS':
    'cuda', 'FORCE_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': '9.0', 'CUDA_HOME': '/usr/local/cuda-13.0'}``.

    Raises:
        PlanError: GPUs are visible and no matching CUDA compiler is found (or torch has no CUDA).
    """
    env = os.environ if env is None else env
    machine = probe_machine(env) if machine is None else machine
    if not machine.capabilities or env.get(OPT_OUT) == '1':
        return {'MMPEFT_MMCV_OPS': 'cpu'}
    gpus = ', '.join(f'{a}.{b}' for a, b in machine.capabilities)
    if not machine.torch_cuda:
        raise PlanError(f'GPUs are visible (compute capability {gpus}) but this torch was built without CUDA '
                        f'(torch.version.cuda is None): install a CUDA build of torch, or set {OPT_OUT}=1 to '
                        'build mmcv\'s ops without CUDA (RoIAlign / NMS then fail on the GPU)')
    want = '.'.join(machine.torch_cuda.split('.')[:2])
    roots = list(default_roots(want) if system_roots is None else system_roots)
    seen = []
    for nvcc in nvcc_candidates(env, roots):
        version = nvcc_version(nvcc)
        root = _toolkit_root(nvcc)
        if version == want and root is not None:
            arch = sorted(set(machine.capabilities))
            return {'MMPEFT_MMCV_OPS': 'cuda', 'FORCE_CUDA': '1',
                    'TORCH_CUDA_ARCH_LIST': ';'.join(f'{a}.{b}' for a, b in arch), 'CUDA_HOME': root}
        seen.append(f'{nvcc} (CUDA {version or "unknown"}'
                    + (', no include/cuda_runtime.h next to it)' if root is None else ')'))
    looked = ', '.join(['$CUDA_HOME/bin', '$CUDA_PATH/bin', 'PATH'] + [osp.join(r, 'bin') for r in roots])
    raise PlanError(
        f'GPUs are visible (compute capability {gpus}) and torch was built with CUDA {want}, but no CUDA {want} '
        f'compiler (nvcc with its headers) was found; found: {", ".join(seen) or "no nvcc at all"} '
        f'(looked at {looked}). Install the CUDA {want} toolkit and point CUDA_HOME at it, or set '
        f'{OPT_OUT}=1 to build mmcv\'s ops without CUDA knowingly (RoIAlign / NMS then fail on the GPU).')


def main() -> int:
    try:
        variables = plan()
        if variables['MMPEFT_MMCV_OPS'] == 'cpu' and os.environ.get(OPT_OUT) == '1':
            print(f'[cuda_build_plan] {OPT_OUT}=1: mmcv\'s ops without CUDA even where a GPU is visible',
                  file=sys.stderr)
    except PlanError as e:
        print(f'[cuda_build_plan] cannot build mmcv with CUDA ops: {e}', file=sys.stderr)
        return 1
    for key, value in variables.items():
        print(f'export {key}={shlex.quote(value)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
