"""Fixes for the pinned stack (torch 2.13, mmengine 0.10.7), applied on ``import mmpeft``, each by name.

``import mmpeft`` applies every fix in :data:`FIXES` and says so in one log line naming them. Each can
be switched off by name before the import, ``MMPEFT_DISABLE_FIXES=optimizer_drops_frozen,cpu_ddp``
(comma-separated; ``all`` for every one; an unknown name is an error listing the known ones), or
undone later with :func:`revert` (``mmpeft.utils.compat.revert('optimizer_drops_frozen')``); every
fix keeps what it replaced, so reverting restores mmengine's own functions. The names, in order:

``safe_checkpoint_load`` (1), ``atomic_writes`` (2: the file backend), ``resume_fallback`` (2:
``last_checkpoint`` and the resume search), ``delta_checkpoints`` (3), ``optimizer_drops_frozen`` (4;
also available without the global change as the registered
:class:`~mmpeft.utils.optim_constructor.TrainableOnlyOptimWrapperConstructor`), ``cpu_ddp`` and
``cpu_dist_init`` (5).

1. ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine 0.10.7 loads its own
   checkpoints (which pickle ``HistoryBuffer``, numpy arrays / scalars ...) with a plain ``torch.load``:
   ``resume=True`` and ``load_from`` fail. mmengine's checkpoint module gets a
   ``torch`` whose ``load`` is :func:`mmpeft.utils.checkpoint_io.load_checkpoint_file`: still
   ``weights_only=True`` (a checkpoint cannot run code), with exactly the types mmengine checkpoints
   hold allow-listed for that load; a refused type, an empty, truncated or non-checkpoint file is an
   error naming the file and the fix. Only these two modules are touched; ``torch.load`` itself is
   not. **Opt-out** for files you trust: environment variable ``MMPEFT_TRUSTED_CHECKPOINTS=1``
   (``tools/train.py`` / ``tools/test.py`` ``--trust-checkpoints``) loads with ``weights_only=False``.
2. mmengine's local file backend writes checkpoints in place, so an interrupted save leaves a
   truncated file where the last good checkpoint was. ``LocalBackend.put`` / ``put_text`` now write a
   temporary file in the same folder and ``os.replace`` it (atomic on POSIX); so does the
   ``CheckpointHook``'s write of ``work_dir/last_checkpoint`` (a plain ``open`` there).
   ``resume=True`` asks :func:`mmpeft.utils.work_dir.find_resume_checkpoint` instead of mmengine's
   ``find_latest_checkpoint``: a file named by ``last_checkpoint`` in a copied work dir is taken from
   the current folder, and an empty record or a missing / truncated file falls back to the newest
   complete checkpoint (logged).
3. Delta (trainable-only) checkpoints written by :class:`mmpeft.hooks.DeltaCheckpointHook` are
   expanded to full checkpoints (base weights + delta) wherever mmengine loads a checkpoint
   (``load_from``, ``resume``, ``init_cfg=dict(type='Pretrained')``, ``tools/test.py``), see
   :func:`mmpeft.utils.delta.expand_delta_checkpoint`. The runner loads an expanded delta strictly:
   a delta lands only on the model it was trained with (missing / unexpected keys are named).
   ``tools/test.py`` loads every checkpoint strictly (see
   :func:`mmpeft.utils.checkpoint_io.strict_model_loading`), unless ``--non-strict`` is given.
   The same path takes an adapter folder (``adapter.safetensors`` + ``adapter_config.json``, or either
   file; :mod:`mmpeft.utils.adapter_io`): ``tools/test.py CONFIG ADAPTER_DIR`` and
   ``load_from=ADAPTER_DIR`` put the base weights in place (config key ``adapter_base_checkpoint``,
   else the model's own ``init_weights``) and attach the adapter with all of ``load_adapter``'s
   checks; ``resume`` from an adapter is refused; a folder that is not an adapter is an error naming
   the file it lacks. Nothing of an adapter is unpickled.
4. mmengine's default optimizer constructor hands *all* parameters to the optimizer unless
   ``paramwise_cfg`` is set, and with it logs one warning per frozen parameter. Frozen parameters
   (``requires_grad=False`` when the optimizer is built) are now left out in both cases, with one
   summary line, so a model frozen at build time gives an optimizer of exactly its trainable set.
5. mmengine wraps CPU models in DDP with ``device_ids=[LOCAL_RANK]``, which torch rejects for CPU
   modules; on CPU (gloo) the wrapper is now built with ``device_ids=None``. Likewise mmengine's
   torchrun initialisation calls ``torch.cuda.set_device`` unconditionally; without CUDA it is
   skipped, and the ``nccl`` backend the toolboxes' runtime bases name becomes ``gloo`` (logged), so
   ``tools/dist_train.sh`` also runs on CPU-only machines.
"""
import functools
import io
import logging
import os
import os.path as osp
import tempfile
import types
from contextvars import ContextVar
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch


class _TorchWithSafeLoad(types.ModuleType):
    """A stand-in for the ``torch`` module whose ``load`` is mmpeft's allow-listed loader."""

    def __init__(self):
        super().__init__('torch')

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, map_location=None, **kwargs):
        from .checkpoint_io import load_checkpoint_file
        if kwargs:
            raise TypeError(f'mmpeft: unexpected torch.load arguments {sorted(kwargs)} for {f}')
        return load_checkpoint_file(f, map_location=map_location)


def _atomic_write(data, filepath, mode: str, encoding=None) -> None:
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + osp.basename(filepath) + '.', suffix='.tmp')
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; keep what a plain open() would give
        with os.fdopen(fd, mode, encoding=encoding) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def _set(obj, name: str, value) -> Callable[[], None]:
    """``setattr(obj, name, value)``; returns the undo (what was there is put back)."""
    old = obj.__dict__[name] if isinstance(obj, type) else getattr(obj, name)
    setattr(obj, name, value)
    return lambda: setattr(obj, name, old)


def _undo_all(undos: List[Callable[[], None]]) -> Callable[[], None]:
    def undo() -> None:
        for u in reversed(undos):
            u()
    return undo


def _patch_torch_load() -> Callable[[], None]:
    from mmengine.runner import checkpoint as ckpt_mod
    # (mmengine's hub helper loads through torch.hub under torch >= 1.7: nothing of it to patch)
    return _set(ckpt_mod, 'torch', _TorchWithSafeLoad())


def _patch_atomic_put() -> Callable[[], None]:
    from mmengine.fileio.backends.local_backend import LocalBackend

    def put(self, obj: bytes, filepath) -> None:
        _atomic_write(obj, filepath, 'wb')

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        _atomic_write(obj, filepath, 'w', encoding=encoding)

    return _undo_all([_set(LocalBackend, 'put', put), _set(LocalBackend, 'put_text', put_text)])


class _AtomicTextWriter(io.StringIO):
    """What ``open(path, 'w')`` returns in mmengine's checkpoint hook: written atomically on close."""

    def __init__(self, path, encoding=None):
        super().__init__()
        self._path, self._encoding = path, encoding

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            _atomic_write(self.getvalue(), self._path, 'w', encoding=self._encoding)
        return super().__exit__(exc_type, *exc)


def _open_atomic_writes(file, mode='r', *args, **kwargs):
    if mode in ('w', 'wt') and not args:
        return _AtomicTextWriter(file, kwargs.get('encoding'))
    return open(file, mode, *args, **kwargs)


def _patch_last_checkpoint() -> Callable[[], None]:
    from mmengine.hooks import checkpoint_hook
    from mmengine.runner import checkpoint as ckpt_mod
    from mmengine.runner import runner as runner_mod

    from .work_dir import find_resume_checkpoint
    # the module's only ``open`` is its write of work_dir/last_checkpoint
    checkpoint_hook.open = _open_atomic_writes
    undos = [lambda: checkpoint_hook.__dict__.pop('open', None),
             _set(runner_mod, 'find_latest_checkpoint', find_resume_checkpoint),
             _set(ckpt_mod, 'find_latest_checkpoint', find_resume_checkpoint)]
    return _undo_all(undos)


def _patch_delta_loading() -> Callable[[], None]:
    from mmengine.runner.checkpoint import CheckpointLoader

    from .checkpoint_io import CheckpointMismatchError, strict_loading_source
    from .delta import DELTA_KEY, expand_delta_checkpoint, is_delta_checkpoint
    original = CheckpointLoader.load_checkpoint.__func__

    @functools.wraps(original)
    def load_checkpoint(cls, filename, map_location=None, logger='current'):
        from .adapter_io import adapter_checkpoint, is_adapter_path
        if is_adapter_path(filename):
            return adapter_checkpoint(filename)  # safetensors; a folder without its files is named
        checkpoint = original(cls, filename, map_location, logger)
        if is_delta_checkpoint(checkpoint):
            checkpoint = expand_delta_checkpoint(
                checkpoint, delta_path=filename,
                load_fn=lambda f: original(cls, f, map_location, logger))
        return checkpoint

    undos = [_set(CheckpointLoader, 'load_checkpoint', classmethod(load_checkpoint))]

    from mmengine.runner import runner as runner_mod
    original_to_model = runner_mod._load_checkpoint_to_model

    @functools.wraps(original_to_model)
    def _load_checkpoint_to_model(model, checkpoint, strict=False, logger=None,
                                  revise_keys=[(r'^module\.', '')]):
        from .adapter_io import attach_adapter_checkpoint, is_adapter_checkpoint
        if is_adapter_checkpoint(checkpoint):
            return attach_adapter_checkpoint(model, checkpoint, **_ADAPTER_RUNNER.get())
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
        if isinstance(meta, dict) and DELTA_KEY in meta:
            strict = True
        strict_source = strict_loading_source()
        if strict_source is None:
            return original_to_model(model, checkpoint, strict, logger, revise_keys)
        try:
            return original_to_model(model, checkpoint, True, logger, revise_keys)
        except RuntimeError as e:
            source, fix = strict_source
            raise CheckpointMismatchError(f'checkpoint {source} does not fit this model: {e}\n{fix}') from None

    undos.append(_set(runner_mod, '_load_checkpoint_to_model', _load_checkpoint_to_model))
    undos += _patch_adapter_loading(runner_mod)
    return _undo_all(undos)


#: how the runner's load of an adapter puts the base weights in place (set by ``Runner.load_checkpoint``);
#: outside the runner (``mmengine.runner.load_checkpoint``, ``init_cfg`` Pretrained) the model keeps its own
_ADAPTER_RUNNER: ContextVar[dict] = ContextVar('mmpeft_adapter_runner', default={})


def _patch_adapter_loading(runner_mod) -> List[Callable[[], None]]:
    """The adapter parts of fix 3 beyond the checkpoint loader: the runner's ``load_checkpoint`` (base
    weights first), ``resume`` (refused), and mmengine's checkpoint module (checked attach; no
    ``prefix=`` load)."""
    from mmengine.runner import checkpoint as ckpt_mod
    Runner = runner_mod.Runner
    original_load = Runner.load_checkpoint
    original_resume = Runner.resume
    original_ckpt_to_model = ckpt_mod._load_checkpoint_to_model
    original_with_prefix = ckpt_mod._load_checkpoint_with_prefix

    @functools.wraps(original_load)
    def load_checkpoint(self, filename, *args, **kwargs):
        from .adapter_io import BASE_CFG_KEY, RUNNER_BASE_FIX, is_adapter_path
        if not is_adapter_path(filename):
            return original_load(self, filename, *args, **kwargs)
        cfg = getattr(self, 'cfg', None)
        base = cfg.get(BASE_CFG_KEY, None) if cfg is not None else None
        token = _ADAPTER_RUNNER.set(dict(base_checkpoint=base, init_base=True, base_fix=RUNNER_BASE_FIX,
                                         cfg=cfg.get('model', None) if cfg is not None else None))
        try:
            return original_load(self, filename, *args, **kwargs)
        finally:
            _ADAPTER_RUNNER.reset(token)

    @functools.wraps(original_resume)
    def resume(self, filename, *args, **kwargs):
        from .adapter_io import is_adapter_path
        if is_adapter_path(filename):
            raise ValueError(
                f'cannot resume from {filename}: it is an adapter folder (or file), which holds only the '
                f'trained tensors, no optimizer, scheduler or iteration state. To train further starting '
                f'from the adapter, set load_from={filename} with resume=False (tools/train.py: '
                f'--cfg-options load_from={filename}, without --resume); to continue an interrupted run, '
                f'resume from its checkpoint file (work_dir/iter_*.pth)')
        return original_resume(self, filename, *args, **kwargs)

    @functools.wraps(original_ckpt_to_model)
    def ckpt_to_model(model, checkpoint, strict=False, logger=None, revise_keys=[(r'^module\.', '')]):
        from .adapter_io import attach_adapter_checkpoint, is_adapter_checkpoint
        if is_adapter_checkpoint(checkpoint):
            return attach_adapter_checkpoint(model, checkpoint)
        return original_ckpt_to_model(model, checkpoint, strict, logger, revise_keys)

    @functools.wraps(original_with_prefix)
    def with_prefix(prefix, filename, map_location=None):
        from .adapter_io import is_adapter_path
        if is_adapter_path(filename):
            raise ValueError(f'init_cfg Pretrained with prefix={prefix!r} cannot load {filename}: an adapter '
                             f"attaches to the whole model it was exported from (its names are that model's). "
                             f"Use load_from={filename}, or init_cfg=dict(type='PEFTAdapter', path={filename!r}) "
                             f'on the model')
        return original_with_prefix(prefix, filename, map_location)

    return [_set(Runner, 'load_checkpoint', load_checkpoint), _set(Runner, 'resume', resume),
            _set(ckpt_mod, '_load_checkpoint_to_model', ckpt_to_model),
            _set(ckpt_mod, '_load_checkpoint_with_prefix', with_prefix)]


class _DropFrozenWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return 'is skipped since its requires_grad=False' not in record.getMessage()


def build_trainable_only(original: Callable, constructor, model):
    """``original(constructor, model)`` (mmengine's default optimizer-wrapper construction) with the
    parameters frozen at that time left out of the optimizer, and one summary line instead of one
    warning per frozen parameter."""
    from mmengine.logging import MMLogger, print_log

    from ..peft.policy import restrict_optimizer
    logger = MMLogger.get_current_instance()
    filt = _DropFrozenWarnings()
    logger.addFilter(filt)
    try:
        optim_wrapper = original(constructor, model)
    finally:
        logger.removeFilter(filt)
    removed = restrict_optimizer(optim_wrapper.optimizer)
    module = model.module if hasattr(model, 'module') else model
    n_frozen = sum(1 for p in module.parameters() if not p.requires_grad)
    if n_frozen:
        print_log(f'optimizer: {n_frozen} frozen parameter tensors left out '
                  f'({removed} removed after construction)', logger='current')
    return optim_wrapper


def _patch_optimizer_constructor() -> Callable[[], None]:
    from mmengine.optim import DefaultOptimWrapperConstructor
    original = DefaultOptimWrapperConstructor.__call__

    @functools.wraps(original)
    def __call__(self, model):
        return build_trainable_only(original, self, model)

    return _set(DefaultOptimWrapperConstructor, '__call__', __call__)


def _patch_cpu_ddp() -> Callable[[], None]:
    from mmengine.model import MMDistributedDataParallel
    original = MMDistributedDataParallel.__init__

    @functools.wraps(original)
    def __init__(self, module, detect_anomalous_params: bool = False, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        if on_cpu and kwargs.get('device_ids') is not None:
            kwargs['device_ids'] = None
        original(self, module=module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    return _set(MMDistributedDataParallel, '__init__', __init__)


def _patch_cpu_dist_init() -> Callable[[], None]:
    from mmengine.dist import utils as dist_utils
    original = dist_utils._init_dist_pytorch

    @functools.wraps(original)
    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if torch.cuda.is_available():
            return original(backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            logging.getLogger('mmpeft').warning('no CUDA device: using the gloo backend instead of nccl')
            backend = 'gloo'
        if init_backend != 'torch':
            raise ValueError(f'init_backend={init_backend!r} needs CUDA; only "torch" runs on CPU')
        torch.distributed.init_process_group(backend=backend, **kwargs)

    return _set(dist_utils, '_init_dist_pytorch', _init_dist_pytorch)


class Fix(NamedTuple):
    name: str
    summary: str
    patch: Callable[[], Callable[[], None]]  # applies the fix, returns its undo


FIXES: Tuple[Fix, ...] = (
    Fix('safe_checkpoint_load', 'mmengine loads checkpoints with torch.load(weights_only=True) and an '
        'allow-list', _patch_torch_load),
    Fix('atomic_writes', "mmengine's local file backend writes files atomically", _patch_atomic_put),
    Fix('resume_fallback', 'last_checkpoint is written atomically and resume falls back to the newest '
        'complete checkpoint', _patch_last_checkpoint),
    Fix('delta_checkpoints', 'delta checkpoints are expanded wherever mmengine loads a checkpoint',
        _patch_delta_loading),
    Fix('optimizer_drops_frozen', "the default optimizer constructor leaves frozen parameters out",
        _patch_optimizer_constructor),
    Fix('cpu_ddp', 'DDP wraps CPU models without device_ids', _patch_cpu_ddp),
    Fix('cpu_dist_init', 'torchrun initialisation without CUDA uses gloo', _patch_cpu_dist_init),
)
DISABLE_ENV = 'MMPEFT_DISABLE_FIXES'
#: name -> undo of every fix applied now
_UNDO: Dict[str, Callable[[], None]] = {}


def _names_from_env() -> List[str]:
    raw = [n.strip() for n in os.environ.get(DISABLE_ENV, '').split(',') if n.strip()]
    if raw == ['all']:
        return [f.name for f in FIXES]
    known = [f.name for f in FIXES]
    unknown = [n for n in raw if n not in known]
    if unknown:
        raise ValueError(f'{DISABLE_ENV}={os.environ[DISABLE_ENV]!r}: unknown fix name(s) {unknown}; the fixes '
                         f"mmpeft applies are {known} (or 'all')")
    return raw


def applied() -> List[str]:
    """Names of the fixes in effect, in :data:`FIXES` order."""
    return [f.name for f in FIXES if f.name in _UNDO]


def revert(name: str) -> None:
    """Undo the fix ``name`` (mmengine's own function is back); a fix not in effect is an error."""
    if name not in _UNDO:
        raise KeyError(f'fix {name!r} is not in effect; in effect: {applied()}')
    _UNDO.pop(name)()


def apply(disabled: Optional[Sequence[str]] = None) -> List[str]:
    """Apply every fix of :data:`FIXES` not yet in effect, except ``disabled`` (default: the names in
    ``MMPEFT_DISABLE_FIXES``); log one line naming them. Returns the names newly applied."""
    skip = set(_names_from_env() if disabled is None else disabled)
    known = {f.name for f in FIXES}
    if skip - known:
        raise ValueError(f'unknown fix name(s) {sorted(skip - known)}; the fixes are {sorted(known)}')
    new = []
    for fix in FIXES:
        if fix.name not in skip and fix.name not in _UNDO:
            _UNDO[fix.name] = fix.patch()
            new.append(fix.name)
    if new:
        off = [f.name for f in FIXES if f.name in skip]
        from mmengine.logging import print_log
        off_note = f' (off: {", ".join(off)})' if off else ''
        print_log(f'mmpeft changes mmengine (mmpeft/utils/compat.py): {", ".join(new)}{off_note}; '
                  f'switch any off by name with {DISABLE_ENV}=NAME,...', logger='current')
    return new


apply()
