"""Trainable-only ("delta") checkpoints: format, validation, and base + delta merging.

A delta checkpoint is an ordinary mmengine checkpoint (``meta``, ``state_dict``, ``optimizer``,
``param_schedulers``, ``message_hub``) whose ``state_dict`` holds only the trainable parameters and
the buffers that differ from the base weights, with ``meta['mmpeft_delta']`` describing the base:

    base:          path of the full base-weights checkpoint (absolute when written)
    base_hash:     ``'sha256:...'`` of the base's tensors (see :func:`tensor_hash`), version >= 2
    frozen_shapes: {key: shape} of every state-dict entry taken from the base
    trainable:     keys of the trainable parameters
    buffers:       keys of the buffers stored because they changed
    version:       format version (2; version 1 has no ``base_hash``)

Loading = base weights + delta: every key the delta lacks is taken from the base. The base must
hold exactly the recorded frozen keys with the recorded shapes, and its tensors must hash to
``base_hash``; anything else is an error naming the keys or the files and hashes (a delta never
silently lands on weights it was not trained from, e.g. a ``base_weights.pth`` rewritten by a
second training in the same work_dir). The hash covers the tensors (key, dtype, shape, bytes), not
the file, so a moved or re-saved base still matches.
"""
import hashlib
import logging
import os
import os.path as osp
import shlex
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import print_log

from .checkpoint_io import load_checkpoint_file, state_dict_of

DELTA_KEY = 'mmpeft_delta'
DELTA_VERSION = 2
MERGE_TOOL = 'tools/model_converters/merge_delta.py'


def is_delta_checkpoint(checkpoint) -> bool:
    return (isinstance(checkpoint, Mapping) and isinstance(checkpoint.get('meta'), Mapping)
            and DELTA_KEY in checkpoint['meta']
            and not checkpoint['meta'][DELTA_KEY].get('expanded', False))


def _preview(keys: Iterable[str], n: int = 10) -> str:
    keys = sorted(keys)
    more = f' ... and {len(keys) - n} more' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def tensor_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``'sha256:<hex>'`` of the tensors of a state dict: sorted keys, dtype, shape and bytes.

    Hashing the tensors rather than the file makes the check survive moving the base, re-saving it
    (``torch.save`` vs mmengine, other meta) or loading it onto another device. Non-tensor entries
    are skipped. One pass over the bytes, no copies beyond a device-to-CPU transfer.
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f'{key}\0{t.dtype}\0{tuple(t.shape)}\0'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return 'sha256:' + h.hexdigest()


_HASH_CACHE: Dict[tuple, str] = {}


def file_tensor_hash(path: str, state_dict: Mapping[str, torch.Tensor]) -> str:
    """:func:`tensor_hash` of ``state_dict`` loaded from ``path``, computed once per file version.

    The cache key is the file's identity and stat (inode, size, mtime, ctime), so a file rewritten
    in place or replaced is hashed again.
    """
    st = os.stat(path)
    key = (osp.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = tensor_hash(state_dict)
    return _HASH_CACHE[key]


def make_delta_meta(base: str, frozen_shapes: Mapping[str, Iterable[int]], trainable: List[str],
                    buffers: List[str], base_hash: Optional[str] = None) -> dict:
    """The ``meta['mmpeft_delta']`` entry; without ``base_hash`` it is a (legacy) version-1 meta."""
    meta = dict(base=base, frozen_shapes={k: list(v) for k, v in frozen_shapes.items()},
                trainable=list(trainable), buffers=list(buffers), version=1)
    if base_hash is not None:
        meta.update(base_hash=base_hash, version=DELTA_VERSION)
    return meta


def check_base_fits(base_sd: Mapping[str, torch.Tensor], meta: Mapping, base_name: str,
                    delta_name: str = 'the delta checkpoint') -> None:
    """Raise naming the keys when ``base_sd`` is not the base ``meta`` was trained from.

    Missing: frozen keys the base lacks. Unexpected: base keys that are neither frozen nor in the
    delta. Shape: frozen keys whose shape differs.
    """
    frozen = meta['frozen_shapes']
    known = set(frozen) | set(meta['trainable']) | set(meta['buffers'])
    missing = [k for k in frozen if k not in base_sd]
    unexpected = [k for k in base_sd if k not in known]
    shapes = [f'{k} (base {list(base_sd[k].shape)} vs recorded {frozen[k]})'
              for k in frozen if k in base_sd and list(base_sd[k].shape) != list(frozen[k])]
    problems = []
    if missing:
        problems.append(f'missing keys: {_preview(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {_preview(unexpected)}')
    if shapes:
        problems.append(f'shape mismatch: {_preview(shapes)}')
    if problems:
        raise KeyError(f'base weights {base_name} do not fit {delta_name}: ' + '; '.join(problems))


def merge_base_and_delta(base_sd: Mapping[str, torch.Tensor], delta_sd: Mapping[str, torch.Tensor],
                         meta: Mapping, base_name: str = 'base',
                         delta_name: str = 'the delta checkpoint') -> 'OrderedDict[str, torch.Tensor]':
    """Full state dict = base weights with every delta entry replacing the base's (checked first)."""
    check_base_fits(base_sd, meta, base_name, delta_name)
    declared = set(meta['trainable']) | set(meta['buffers'])
    undeclared = [k for k in delta_sd if k not in declared]
    absent = [k for k in declared if k not in delta_sd]
    if undeclared or absent:
        raise KeyError(f'{delta_name} is inconsistent with its own meta: '
                       f'undeclared keys [{_preview(undeclared)}], absent keys [{_preview(absent)}]')
    merged = OrderedDict((k, base_sd[k]) for k in meta['frozen_shapes'])
    for k, v in delta_sd.items():
        merged[k] = v
    return merged


def merge_hint(delta_path: Optional[str]) -> str:
    """The command line that merges ``delta_path`` with an explicit base (printed in errors)."""
    delta = shlex.quote(str(delta_path)) if delta_path is not None else 'DELTA.pth'
    return f'python {MERGE_TOOL} {delta} OUT.pth --base BASE.pth'


def base_candidates(meta: Mapping, delta_path: Optional[str]) -> List[str]:
    """The existing files among: the recorded base path, a file of that name beside the delta.

    The file beside the delta is what a copied or moved work_dir holds.

    Raises:
        FileNotFoundError: neither exists; names both and the merge command.
    """
    tried = [meta['base']]
    if delta_path is not None and not str(delta_path).startswith(('http://', 'https://')):
        beside = osp.join(osp.dirname(osp.abspath(delta_path)), osp.basename(meta['base']))
        if osp.realpath(beside) != osp.realpath(meta['base']):
            tried.append(beside)
    existing = [p for p in tried if osp.isfile(p)]
    if not existing:
        raise FileNotFoundError(f'base weights of delta checkpoint {delta_path} not found (tried '
                                f'{", ".join(tried)}); merge it with the base it was trained on: '
                                f'{merge_hint(delta_path)}')
    return existing


def load_base_file(path: str) -> dict:
    """Load a base-weights file with mmpeft's safe loader (no pickled code runs; an empty,
    truncated or unsafe file is an error naming it and the fix)."""
    return load_checkpoint_file(path)


def load_base_for_delta(meta: Mapping, delta_path: Optional[str] = None,
                        load_fn: Optional[Callable[[str], dict]] = None,
                        base: Optional[str] = None) -> Tuple[str, Mapping[str, torch.Tensor]]:
    """(path, state dict) of the base weights a delta was trained on, verified by its hash.

    Tries ``base`` if given, else the recorded path and then the same-named file beside the delta;
    the first whose tensors hash to ``meta['base_hash']`` is used (a warning says so when it is
    not the recorded path). A version-1 meta has no hash: the first existing file is used, with a
    warning that it cannot be verified.

    Raises:
        FileNotFoundError: no base file exists (names the paths tried and the merge command).
        KeyError: an explicit ``base`` whose keys or shapes do not fit (names the keys).
        ValueError: no file holds the recorded tensors (names the files, both hashes, the fix).
    """
    load_fn = load_fn or load_base_file
    delta_name = f'delta checkpoint {delta_path}'
    if base is not None:
        if not osp.isfile(base):
            raise FileNotFoundError(f'base weights file {base} does not exist')
        candidates = [base]
    else:
        candidates = base_candidates(meta, delta_path)
    expected = meta.get('base_hash')
    if expected is None:
        print_log(f'{delta_name} (format version {meta.get("version", 1)}) records no hash of its '
                  f'base weights: cannot verify that {candidates[0]} is the base it was trained '
                  f'on. Deltas saved by this version of mmpeft record one.',
                  logger='current', level=logging.WARNING)
        return candidates[0], state_dict_of(load_fn(candidates[0]), f'base weights {candidates[0]}')
    found = []
    for path in candidates:
        sd = state_dict_of(load_fn(path), f'base weights {path}')
        got = file_tensor_hash(path, sd)
        if got == expected:
            if base is None and osp.realpath(path) != osp.realpath(meta['base']):
                why = 'holds other weights' if osp.isfile(meta['base']) else 'does not exist'
                print_log(f'{delta_name}: its recorded base {meta["base"]} {why}; using {path} '
                          f'beside the delta, whose tensors match the recorded hash',
                          logger='current', level=logging.WARNING)
            return path, sd
        if len(candidates) == 1:
            check_base_fits(sd, meta, path, delta_name)  # name the keys when they differ
        found.append(f'{path} (hash {got})')
    raise ValueError(
        f'{delta_name} was trained on base weights with tensor hash {expected}, but no base file '
        f'holds them: tried {"; ".join(found)}. The base was replaced (e.g. its work_dir was '
        f'trained again) or is another model\'s. Merge the delta with the base it was trained on: '
        f'{merge_hint(delta_path)}')


def expand_delta_checkpoint(checkpoint: dict, delta_path: Optional[str] = None,
                            load_fn: Optional[Callable[[str], dict]] = None,
                            base: Optional[str] = None) -> dict:
    """Turn a loaded delta checkpoint into a full one (base + delta); other entries are kept.

    The base is found and verified by :func:`load_base_for_delta`.
    """
    meta = checkpoint['meta'][DELTA_KEY]
    base_path, base_sd = load_base_for_delta(meta, delta_path, load_fn, base)
    merged = merge_base_and_delta(base_sd, checkpoint['state_dict'], meta, base_path,
                                  f'delta checkpoint {delta_path}')
    out = dict(checkpoint)
    out['state_dict'] = merged
    out['meta'] = dict(checkpoint['meta'])
    out['meta'][DELTA_KEY] = dict(meta, expanded=True, base=base_path)
    return out
