"""Fixes for the pinned stack (torch 2.13, mmengine 0.10.7), applied once on ``import mmpeft``.

1. ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine 0.10.7 loads its own
   checkpoints (which pickle ``HistoryBuffer``, numpy arrays / scalars ...) with a plain ``torch.load``:
   ``resume=True`` and ``load_from`` fail. mmengine's checkpoint module and its hub helper get a
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

import torch

_APPLIED = False


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


def _patch_torch_load() -> None:
    from mmengine.runner import checkpoint as ckpt_mod
    from mmengine.utils.dl_utils import hub as hub_mod
    shim = _TorchWithSafeLoad()
    ckpt_mod.torch = shim
    hub_mod.torch = shim


def _patch_atomic_put() -> None:
    from mmengine.fileio.backends.local_backend import LocalBackend

    def put(self, obj: bytes, filepath) -> None:
        _atomic_write(obj, filepath, 'wb')

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        _atomic_write(obj, filepath, 'w', encoding=encoding)

    LocalBackend.put = put
    LocalBackend.put_text = put_text


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


def _patch_last_checkpoint() -> None:
    from mmengine.hooks import checkpoint_hook
    from mmengine.runner import checkpoint as ckpt_mod
    from mmengine.runner import runner as runner_mod

    from .work_dir import find_resume_checkpoint
    # the module's only ``open`` is its write of work_dir/last_checkpoint
    checkpoint_hook.open = _open_atomic_writes
    runner_mod.find_latest_checkpoint = find_resume_checkpoint
    ckpt_mod.find_latest_checkpoint = find_resume_checkpoint


def _patch_delta_loading() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    from .checkpoint_io import CheckpointMismatchError, strict_loading_source
    from .delta import DELTA_KEY, expand_delta_checkpoint, is_delta_checkpoint
    original = CheckpointLoader.load_checkpoint.__func__

    @functools.wraps(original)
    def load_checkpoint(cls, filename, map_location=None, logger='current'):
        checkpoint = original(cls, filename, map_location, logger)
        if is_delta_checkpoint(checkpoint):
            checkpoint = expand_delta_checkpoint(
                checkpoint, delta_path=filename,
                load_fn=lambda f: original(cls, f, map_location, logger))
        return checkpoint

    CheckpointLoader.load_checkpoint = classmethod(load_checkpoint)

    from mmengine.runner import runner as runner_mod
    original_to_model = runner_mod._load_checkpoint_to_model

    @functools.wraps(original_to_model)
    def _load_checkpoint_to_model(model, checkpoint, strict=False, logger=None,
                                  revise_keys=[(r'^module\.', '')]):
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

    runner_mod._load_checkpoint_to_model = _load_checkpoint_to_model


class _DropFrozenWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return 'is skipped since its requires_grad=False' not in record.getMessage()


def _patch_optimizer_constructor() -> None:
    from mmengine.logging import MMLogger, print_log
    from mmengine.optim import DefaultOptimWrapperConstructor

    from ..peft.policy import restrict_optimizer
    original = DefaultOptimWrapperConstructor.__call__

    @functools.wraps(original)
    def __call__(self, model):
        logger = MMLogger.get_current_instance()
        filt = _DropFrozenWarnings()
        logger.addFilter(filt)
        try:
            optim_wrapper = original(self, model)
        finally:
            logger.removeFilter(filt)
        removed = restrict_optimizer(optim_wrapper.optimizer)
        module = model.module if hasattr(model, 'module') else model
        n_frozen = sum(1 for p in module.parameters() if not p.requires_grad)
        if n_frozen:
            print_log(f'optimizer: {n_frozen} frozen parameter tensors left out '
                      f'({removed} removed after construction)', logger='current')
        return optim_wrapper

    DefaultOptimWrapperConstructor.__call__ = __call__


def _patch_cpu_ddp() -> None:
    from mmengine.model import MMDistributedDataParallel
    original = MMDistributedDataParallel.__init__

    @functools.wraps(original)
    def __init__(self, module, detect_anomalous_params: bool = False, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        if on_cpu and kwargs.get('device_ids') is not None:
            kwargs['device_ids'] = None
        original(self, module=module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    MMDistributedDataParallel.__init__ = __init__


def _patch_cpu_dist_init() -> None:
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

    dist_utils._init_dist_pytorch = _init_dist_pytorch


def apply() -> None:
    """Apply every fix once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _patch_torch_load()
    _patch_atomic_put()
    _patch_last_checkpoint()
    _patch_delta_loading()
    _patch_optimizer_constructor()
    _patch_cpu_ddp()
    _patch_cpu_dist_init()
    _APPLIED = True


apply()
