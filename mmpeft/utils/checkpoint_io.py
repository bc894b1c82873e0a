"""Loading checkpoint files without running pickled code, and with errors that name the file.

Why: ``torch.load(weights_only=False)`` runs any callable a pickle names, so a checkpoint downloaded
or shared by someone else could execute code. mmengine 0.10.7 checkpoints hold a few non-tensor
objects (``HistoryBuffer`` in the message hub, numpy arrays / scalars / dtypes, ``ConfigDict``);
exactly those are allow-listed for ``weights_only=True`` loading, scoped to each load (torch's
``safe_globals`` context, so other ``torch.load`` calls are unaffected). Anything else is refused
with :class:`UnsafeCheckpointError`, naming the type and the file.

Opt-out for files you trust (the pre-torch-2.6 behaviour): set the environment variable
``MMPEFT_TRUSTED_CHECKPOINTS=1`` (``tools/train.py`` / ``tools/test.py``: ``--trust-checkpoints``), or
pass ``trusted=True`` to :func:`load_checkpoint_file`.

A file that cannot be read (empty, truncated by an interrupted save, text, random bytes) raises
:class:`CorruptCheckpointError` saying which file and what is wrong with it, instead of torch's
``EOFError`` / ``could not find MARK`` without a path.
"""
import argparse
import contextlib
import os
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict
from contextvars import ContextVar
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

TRUSTED_ENV = 'MMPEFT_TRUSTED_CHECKPOINTS'
_OPT_OUT = (f'If you trust this file, load it with the environment variable {TRUSTED_ENV}=1 '
            '(tools/train.py and tools/test.py: --trust-checkpoints), which lets the file run code '
            'while it is loaded')
_FIX_CORRUPT = ('Delete or replace it: use another checkpoint (e.g. the previous iter_*.pth / '
                'epoch_*.pth in the same folder), or download / save it again')


class CheckpointLoadError(RuntimeError):
    """A checkpoint file could not be loaded; the message names the file and the fix."""


class CorruptCheckpointError(CheckpointLoadError):
    """The file is empty, truncated, corrupt, or not a torch checkpoint."""


class UnsafeCheckpointError(CheckpointLoadError):
    """The file pickles an object that is not on the allow-list (it could run code)."""


class CheckpointMismatchError(CheckpointLoadError):
    """A strictly loaded checkpoint does not fit the model (missing / unexpected keys)."""


_HISTORY_BUFFER_STATISTICS = {'min', 'max', 'mean', 'current'}  # HistoryBuffer's built-in ones


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as mmengine's ``HistoryBuffer`` pickles it: only its statistics methods.

    A ``HistoryBuffer`` pickles its ``_statistics_methods`` (``HistoryBuffer.min`` ...) as
    ``getattr(HistoryBuffer, 'min')``; an unrestricted ``getattr`` would reach any attribute.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS | set(HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'Unsupported global: GLOBAL builtins.getattr({obj!r}, {name!r}) '
                                 f'was not an allowed global')


def _safe_globals() -> List[Any]:
    from mmengine.config import ConfigDict
    from mmengine.logging import HistoryBuffer
    # numpy 2 moved numpy.core to numpy._core: both names map to the installed objects, so a
    # checkpoint written under either numpy loads under the other
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    # argparse.Namespace: the `args` that DeiT-style training scripts (the HST authors' among them)
    # save beside the weights; it unpickles as a plain attribute bag
    allowed: List[Any] = [HistoryBuffer, ConfigDict, np.ndarray, np.dtype, argparse.Namespace,
                          (_history_buffer_getattr, 'builtins.getattr')]
    for core in ('numpy.core', 'numpy._core'):
        allowed += [(multiarray._reconstruct, f'{core}.multiarray._reconstruct'),
                    (multiarray.scalar, f'{core}.multiarray.scalar')]
    allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    return allowed


def trusted_by_default() -> bool:
    """Whether the ``MMPEFT_TRUSTED_CHECKPOINTS`` opt-out is set."""
    return os.environ.get(TRUSTED_ENV, '').strip().lower() in ('1', 'true', 'yes')


def checkpoint_file_problem(path: str) -> Optional[str]:
    """What is wrong with the file at ``path`` (cheap checks, nothing unpickled), or None.

    Used to explain a failed load and to pick a complete checkpoint when resuming.
    """
    if not osp.isfile(path):
        return 'does not exist'
    if osp.getsize(path) == 0:
        return 'is empty (0 bytes): it was probably being written when the process was killed'
    with open(path, 'rb') as f:
        head = f.read(8)
    if head.startswith(b'PK\x03\x04'):
        try:
            with zipfile.ZipFile(path) as z:
                z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            return (f'is truncated or corrupt ({osp.getsize(path)} bytes, the zip archive torch writes '
                    f'is incomplete: {e}); an interrupted save or copy leaves such a file')
        return None
    if head[:1] == b'\x80':  # a pickle (torch's legacy format): only a full load can tell
        return None
    return (f'is not a torch checkpoint (it starts with {head!r}, neither a zip archive nor a '
            'pickle): e.g. an HTML error page, a text file or another format saved under this name')


def _refused_global(message: str) -> Optional[str]:
    m = re.search(r'GLOBAL ([\w.]+(?:\([^)]*\))?)', message)
    return m.group(1) if m else None


def load_checkpoint_file(file: Union[str, os.PathLike, IO[bytes]], map_location: Any = 'cpu',
                         trusted: Optional[bool] = None) -> Any:
    """``torch.load`` a checkpoint without running pickled code; errors name the file and the fix.

    Args:
        file: path (or an open binary file, e.g. a downloaded buffer).
        map_location: as for :func:`torch.load`.
        trusted: load with ``weights_only=False`` (any pickle); None: the ``MMPEFT_TRUSTED_CHECKPOINTS``
            environment variable decides.
    """
    is_path = isinstance(file, (str, os.PathLike))
    name = osp.expanduser(os.fspath(file)) if is_path else getattr(file, 'name', '<checkpoint stream>')
    if is_path and not osp.isfile(name):
        raise FileNotFoundError(f'checkpoint file {name} does not exist: check the path (load_from, '
                                f'resume, init_cfg checkpoint or the command line)')
    if trusted is None:
        trusted = trusted_by_default()
    if trusted:
        return torch.load(name if is_path else file, map_location=map_location, weights_only=False)
    problem = checkpoint_file_problem(name) if is_path else None
    if problem is not None:
        raise CorruptCheckpointError(f'checkpoint file {name} {problem}. {_FIX_CORRUPT}')
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(name if is_path else file, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for the same causes; sort them here
        msg = str(e)
        refused = _refused_global(msg) if 'GLOBAL' in msg else None
        if refused is not None:
            raise UnsafeCheckpointError(
                f'refused to load checkpoint file {name}: it pickles {refused}, which is not one of the '
                f'types mmengine checkpoints hold, so loading it could run code. {_OPT_OUT}') from None
        raise CorruptCheckpointError(f'checkpoint file {name} could not be read, it is truncated or '
                                     f'corrupt ({type(e).__name__}: {msg.splitlines()[0] if msg else ""}). '
                                     f'{_FIX_CORRUPT}') from e


# ---- strict loading of a model checkpoint (tools/test.py) ----

_STRICT_SOURCE: ContextVar[Optional[Tuple[str, str]]] = ContextVar('mmpeft_strict_source', default=None)


@contextlib.contextmanager
def strict_model_loading(source: str, fix: str) -> Iterator[None]:
    """Within the block, the runner loads checkpoints into the model strictly.

    mmengine's ``load_from`` is ``strict=False``: a checkpoint of another model loads half and the
    rest stays at its initial values, silently. ``source`` names the checkpoint and ``fix`` says how
    to opt out, both for the error message.
    """
    token = _STRICT_SOURCE.set((source, fix))
    try:
        yield
    finally:
        _STRICT_SOURCE.reset(token)


def strict_loading_source() -> Optional[Tuple[str, str]]:
    """``(source, fix)`` inside :func:`strict_model_loading`, else None."""
    return _STRICT_SOURCE.get()


# ---------------------------------------------------------------------- the weights inside a checkpoint
def _weights_container(checkpoint: Mapping) -> Tuple[Mapping, str]:
    """``(weights, where)``: mmengine's ``state_dict``, MAE / official Swin style ``model``, or the root."""
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            return checkpoint[key], key
    return checkpoint, 'root'


def state_dict_of(checkpoint, name: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint (mmengine ``state_dict``, MAE-style ``model``, or raw)."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'{name} is not a dict of weights (got {type(checkpoint).__name__})')
    weights, container = _weights_container(checkpoint)
    if container != 'root':
        return weights
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise KeyError(f'{name} has no "state_dict" (or "model") entry of weights; '
                   f'its keys are {sorted(checkpoint)[:10]}')


def _sample(keys: List[str], n: int = 12) -> str:
    keys = sorted(keys)
    return ', '.join(keys[:n]) + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def unwrap_checkpoint(ckpt: dict, source: str = 'checkpoint', prefix: Optional[str] = None
                      ) -> Tuple[Dict[str, torch.Tensor], str, List[str]]:
    """The backbone's state dict inside a checkpoint object (the one unwrapping every loader uses).

    ``prefix`` (e.g. ``'encoder.'``) selects the ViT's keys in a bigger model's checkpoint; without it
    a ``backbone.`` prefix is recognised.

    Returns:
        ``(state, container, dropped)``: the tensors with ``module.`` / ``backbone.`` prefixes removed,
        where they were found (``'model'``, ``'state_dict'`` or ``'root'``), and the keys of other
        model parts that were left out (a toolbox checkpoint's ``head.`` / ``neck.`` ...).
    """
    if not isinstance(ckpt, dict):
        raise TypeError(f'{source} holds a {type(ckpt).__name__}, not a state dict')
    ckpt, container = _weights_container(ckpt)
    state = OrderedDict((k, v) for k, v in ckpt.items() if isinstance(v, torch.Tensor))
    if not state:
        raise KeyError(f'{source} has no tensors (top-level keys: {_sample(list(ckpt))})')
    if all(k.startswith('module.') for k in state):
        state = OrderedDict((k[len('module.'):], v) for k, v in state.items())
    dropped: List[str] = []
    if prefix is None and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if prefix:
        dropped = [k for k in state if not k.startswith(prefix)]
        state = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
        if not state:
            raise KeyError(f'{source} has no keys starting with prefix {prefix!r} '
                           f'(keys: {_sample(dropped)})')
    return state, container, dropped


# ---------------------------------------------------------------------- MoBY (self-supervised Swin) checkpoints
#: MoBY's training model (Transformer-SSL ``models/moby.py``) beside its query encoder ``encoder.``: the
#: momentum key encoder, the projector / predictor MLPs and the negative-key queues with their pointer
MOBY_ENCODER_PREFIX = 'encoder.'
MOBY_TRAINING_GROUPS = ('encoder_k', 'projector', 'projector_k', 'predictor')
_MOBY_QUEUE = re.compile(r'^queue\w*$')  # queue1, queue2, queue_ptr: top-level buffers, no dot


def is_moby_state_dict(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is a MoBY training model's: query encoder ``encoder.*`` beside ``encoder_k.*``."""
    return (any(k.startswith(MOBY_ENCODER_PREFIX) for k in state)
            and any(k.startswith('encoder_k.') for k in state))


def _moby_group(key: str) -> str:
    return key if '.' not in key else key.split('.', 1)[0]


def split_moby_state_dict(state: Mapping[str, torch.Tensor], source: str = 'checkpoint'
                          ) -> Tuple['OrderedDict[str, torch.Tensor]', 'OrderedDict[str, int]']:
    """The query encoder of a MoBY checkpoint, and what was left out.

    Args:
        state: the tensors under the checkpoint's ``model`` key (``module.`` already stripped):
            ``encoder.*`` (official Swin layout, ``encoder.layers.*`` ...), ``encoder_k.*``,
            ``projector.*``, ``projector_k.*``, ``predictor.*``, ``queue1`` / ``queue2`` / ``queue_ptr``.
        source: the file, for messages.

    Returns:
        ``(encoder, left_out)``: the ``encoder.*`` tensors with the prefix removed, and per left-out
        group (``encoder_k``, ``projector``, ``queue1`` ...) its number of tensors, in file order.

    Raises:
        KeyError: no ``encoder.*`` key (names the file's groups), or a group that is neither the query
        encoder nor one of MoBY's training parts (it would be dropped silently; names it).
    """
    encoder: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    left: 'OrderedDict[str, int]' = OrderedDict()
    for k, v in state.items():
        if k.startswith(MOBY_ENCODER_PREFIX):
            encoder[k[len(MOBY_ENCODER_PREFIX):]] = v
        else:
            group = _moby_group(k)
            left[group] = left.get(group, 0) + 1
    if not encoder:
        raise KeyError(f'{source}: the MoBY layout was asked for, but no key starts with '
                       f'{MOBY_ENCODER_PREFIX!r} (the query encoder); its key groups are '
                       f'{describe_key_groups(left)}. Give the MoBY checkpoint (e.g. '
                       f"moby_swin_t_300ep_pretrained.pth), or drop layout='moby' for an official or toolbox Swin file")
    unknown = [g for g in left if g not in MOBY_TRAINING_GROUPS and not _MOBY_QUEUE.match(g)]
    if unknown:
        raise KeyError(f'{source}: MoBY checkpoint with key groups that are neither the query encoder '
                       f'({MOBY_ENCODER_PREFIX!r}) nor MoBY training parts {MOBY_TRAINING_GROUPS + ("queue*",)}: '
                       f'{describe_key_groups(OrderedDict((g, left[g]) for g in unknown))}. They would be '
                       'dropped silently: if they belong to the backbone, rename them under '
                       f'{MOBY_ENCODER_PREFIX!r}; if not, delete them from the file\'s "model" dict')
    return encoder, left


def describe_key_groups(groups: Mapping[str, int]) -> str:
    """``'encoder_k (172), projector (9)'``: key groups and their tensor counts, for log lines."""
    return ', '.join(f'{g} ({n})' for g, n in groups.items()) or 'none'
