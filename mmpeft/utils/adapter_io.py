"""Adapters as small shareable files: ``adapter.safetensors`` + ``adapter_config.json`` in one folder.

What a PEFT user shares is what training changed, attached later to the base model the receiver
already has (HF peft's ``adapter_model.safetensors`` + ``adapter_config.json``). mmpeft's adapter:

``adapter.safetensors`` (read with :func:`safetensors.torch.load_file`: plain tensors, nothing is
unpickled) holds, under the model's own state-dict names,

- every parameter with ``requires_grad=True`` (the method's modules in the backbone, and the necks /
  heads / decoders that trained -- the same trainable set as a delta checkpoint), under every name
  the state dict gives it (a parameter shared by two modules is stored under both);
- the buffers of the modules that own a trainable parameter (a trained decode head's BatchNorm
  statistics train along with its weight);
- ``extra_keys`` given to :func:`export_adapter` (the export tool passes the buffers a delta
  checkpoint recorded as changed, e.g. BatchNorm statistics of a frozen backbone trained without
  ``frozen_eval``).

``adapter_config.json`` holds the format version, the mmpeft version, the ``model`` config (JSON),
the PEFT method config(s) found in it (every ``method=`` dict, by its dotted path), a fingerprint of
each method object in the model (class and scalar settings, by module name), the base hash, the
trainable parameter count and the tensor names / shapes / dtypes.

The base hash is :func:`mmpeft.utils.delta.tensor_hash` of every state-dict entry *not* in the
adapter (the frozen weights and the other buffers): an adapter lands only on the weights it was
trained on. :func:`load_adapter` checks, in this order, the method (fingerprints; and the configs
when the model config is given), the tensor names and shapes both ways, and the base hash; each
error names the keys, configs or hashes and the fix.

Attaching at build time: ``init_cfg=dict(type='PEFTAdapter', path=OUT_DIR)`` on the *model* (the
detector / segmentor dict, whose state-dict names the adapter uses). mmengine runs a model's
non-``Pretrained`` initializers *before* its children's ``init_weights``, which load the backbone's
pretrained weights; :class:`PEFTAdapterInit` therefore first initialises the children itself (as
mmengine would next, so they are not initialised twice), optionally loads ``base_checkpoint`` (a
full checkpoint of this model, e.g. the ``base_weights.pth`` a :class:`DeltaCheckpointHook` writes),
and only then loads and checks the adapter. A ``type='Pretrained'`` entry in the same model-level
``init_cfg`` would run after all that and overwrite the adapter, so it is refused: give that file as
``base_checkpoint=`` instead.

Attaching where mmengine loads a checkpoint (the ``delta_checkpoints`` fix of
:mod:`mmpeft.utils.compat`): an adapter folder, or either of its two files, is accepted as a
checkpoint path. ``python tools/test.py CONFIG OUT_DIR``, ``load_from=OUT_DIR`` (test, val and
train: fine-tuning further from the adapter) put the base weights in place first and then attach the
adapter with every check of :func:`load_adapter` (:func:`attach_adapter_checkpoint`): the base is
``adapter_base_checkpoint`` when the config sets it (a top-level key, ``--cfg-options
adapter_base_checkpoint=BASE.pth``, ``tools/test.py --adapter-base BASE.pth``: a full checkpoint of
the model, or a delta one, as for ``base_checkpoint=``), else the model's own initialisation
(``model.init_weights()`` with its ``init_cfg``, e.g. the backbone's pretrained file), run unless the
runner already ran it (``train()`` does, ``test()`` / ``val()`` do not). ``resume`` from an adapter
is refused (it holds no optimizer, scheduler or iteration state). Outside the runner
(``mmengine.runner.load_checkpoint(model, OUT_DIR)``, or a model-level
``init_cfg=dict(type='Pretrained', checkpoint=OUT_DIR)``, which runs after the children's
initialisation) the adapter lands on the model's current weights, checked the same way. A folder
that is not an adapter is an error naming the file it lacks.
"""
import json
import math
import os
import os.path as osp
import re
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule, is_model_wrapper
from mmengine.model.weight_init import update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS

from ..peft.taskwise import TaskWiseMethod
from ..version import __version__
from .checkpoint_io import load_checkpoint_file, state_dict_of
from .delta import expand_delta_checkpoint, is_delta_checkpoint, tensor_hash

ADAPTER_FORMAT = 'mmpeft-adapter'
ADAPTER_VERSION = 1
WEIGHTS_NAME = 'adapter.safetensors'
CONFIG_NAME = 'adapter_config.json'
EXPORT_TOOL = 'tools/model_converters/export_adapter.py'
#: ``meta`` key of the checkpoint dict an adapter path loads as (:func:`adapter_checkpoint`)
ADAPTER_KEY = 'mmpeft_adapter'
#: top-level config key naming the base checkpoint an adapter given as ``load_from`` is attached to
BASE_CFG_KEY = 'adapter_base_checkpoint'


class AdapterMismatchError(ValueError):
    """An adapter does not fit the model (method, tensor names / shapes or base weights)."""


def _preview(keys: Iterable[str], n: int = 10) -> str:
    keys = sorted(keys)
    more = f' ... and {len(keys) - n} more' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


# ---------------------------------------------------------------------- what an adapter holds
def adapter_keys(model: nn.Module, extra_keys: Iterable[str] = ()) -> List[str]:
    """State-dict names of the tensors an adapter of ``model`` holds (see the module docstring).

    Raises:
        KeyError: an ``extra_keys`` entry is not in the model's state dict.
        ValueError: the model has no trainable parameter.
    """
    state_keys = set(model.state_dict())
    keys: Set[str] = set()
    for mod_name, module in model.named_modules(remove_duplicate=False):
        own = list(module.named_parameters(recurse=False))
        if not any(p.requires_grad for _, p in own):
            continue
        prefix = mod_name + '.' if mod_name else ''
        keys.update(prefix + n for n, p in own if p.requires_grad)
        keys.update(prefix + n for n, _ in module.named_buffers(recurse=False))
    if not keys:
        raise ValueError(f'{type(model).__name__} has no trainable parameter (requires_grad=True): '
                         f'there is no adapter to export')
    extra = list(extra_keys)
    unknown = [k for k in extra if k not in state_keys]
    if unknown:
        raise KeyError(f'extra adapter keys not in the model state dict: {_preview(unknown)}')
    keys.update(extra)
    return sorted(k for k in keys if k in state_keys)  # non-persistent buffers are not saved


def trainable_count(model: nn.Module) -> int:
    """Number of trainable parameter elements (each shared parameter counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def base_hash_of(model: nn.Module, keys: Iterable[str]) -> str:
    """:func:`~mmpeft.utils.delta.tensor_hash` of the state-dict entries of ``model`` not in ``keys``."""
    keys = set(keys)
    return tensor_hash({k: v for k, v in model.state_dict().items() if k not in keys})


def _jsonable(obj: Any) -> Any:
    """A JSON-able copy: dicts / lists / scalars kept, tuples as lists, anything else as its repr."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def _model_cfg(cfg: Any) -> dict:
    """The ``model`` section of a Config / dict, or ``cfg`` itself when it is a model config."""
    if hasattr(cfg, 'to_dict'):
        cfg = cfg.to_dict()
    if not isinstance(cfg, Mapping):
        raise TypeError(f'cfg must be an mmengine Config or a dict (got {type(cfg).__name__})')
    if 'model' in cfg and 'type' not in cfg:
        cfg = cfg['model']
    if hasattr(cfg, 'to_dict'):
        cfg = cfg.to_dict()
    return _jsonable(cfg)


def method_configs(model_cfg: Any, path: str = '') -> Dict[str, dict]:
    """Every ``method=`` dict in a model config, by dotted path (``'backbone.method'``)."""
    found: Dict[str, dict] = {}
    if isinstance(model_cfg, Mapping):
        for k, v in model_cfg.items():
            sub = f'{path}.{k}' if path else str(k)
            if k == 'method' and isinstance(v, Mapping):
                found[sub] = _jsonable(v)
            else:
                found.update(method_configs(v, sub))
    elif isinstance(model_cfg, (list, tuple)):
        for i, v in enumerate(model_cfg):
            found.update(method_configs(v, f'{path}.{i}' if path else str(i)))
    return found


def _scalar(v: Any) -> bool:
    # non-finite floats do not compare equal after a JSON round trip (nan != nan)
    return v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))


def _settings(obj: Any, names: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """Public attributes of ``obj`` that are scalars or lists of scalars (only ``names`` if given)."""
    out: Dict[str, Any] = {}
    for k, v in sorted(vars(obj).items()):
        if k.startswith('_') or (names is not None and k not in names):
            continue
        if _scalar(v) or (isinstance(v, (list, tuple)) and all(_scalar(x) for x in v)):
            out[k] = v
    return out


def _sub_cfg(model_cfg: Any, name: str) -> Any:
    """The config dict at dotted module path ``name`` of a model config, or None."""
    node = model_cfg
    for part in name.split('.'):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


#: backbone config keys that say where weights come from, not what the method is
_NOT_SETTINGS = ('type', 'init_cfg', 'pretrained')


def method_fingerprints(model: nn.Module, model_cfg: Any = None) -> Dict[str, dict]:
    """``{module name: {'type': class name, setting: value}}`` of each PEFT method in ``model``.

    A ``PEFTBackbone``'s method object (``backbone.peft.method``): its public scalar attributes (rank,
    scaling, targets ...) and, for methods that inject modules, their names. A backbone that is a method
    itself (``PolyhistorSwin``, whose attachment has no method):
    its class and the attributes named by its config in ``model_cfg`` (mode, rank ...; not
    ``init_cfg`` / ``pretrained``). Read from the built model, so a model built from another config
    is caught without that config at hand.
    """
    out: Dict[str, dict] = {}
    for name, module in model.named_modules():
        peft = vars(module).get('peft')
        method = getattr(peft, 'method', None)
        if method is not None:
            out[name] = {'type': type(method).__name__, **_settings(method)}
            if isinstance(method, TaskWiseMethod):
                out[name]['injected'] = list(peft.injected)
        elif name.split('.')[-1] == 'backbone':
            cfg = _sub_cfg(model_cfg, name)
            keys = [k for k in cfg if k not in _NOT_SETTINGS] if isinstance(cfg, Mapping) else []
            out[name] = {'type': type(module).__name__, **_settings(module, keys)}
    return json.loads(json.dumps(out))  # tuples -> lists, as read back from the file


# ---------------------------------------------------------------------- writing
def _atomic_write(path: str, write) -> None:
    """``write(tmp_path)`` then ``os.replace`` onto ``path``: readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp', dir=osp.dirname(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def export_adapter(model: nn.Module, out_dir: str, cfg: Any, base_hash: Optional[str] = None,
                   extra_keys: Iterable[str] = ()) -> dict:
    """Write ``out_dir/adapter.safetensors`` and ``out_dir/adapter_config.json`` for ``model``.

    Args:
        model: the trained model (on its base weights, adapter trained).
        out_dir: folder to write to (created if needed).
        cfg: the training Config (or its dict, or the ``model`` dict) the model was built from.
        base_hash: hash of the base (non-adapter) tensors; None: computed from ``model``, which is
            right whenever the model holds its base weights. Give one only if they were changed since.
        extra_keys: more state-dict entries to store (e.g. buffers a delta checkpoint marks changed).

    Returns:
        The JSON config written.
    """
    from safetensors.torch import save_file
    model = _unwrap(model)
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise NotADirectoryError(f'adapter output {out_dir} is a file; give a folder path')
    os.makedirs(out_dir, exist_ok=True)
    keys = adapter_keys(model, extra_keys)
    state = model.state_dict()
    # clones: safetensors refuses tensors sharing memory (a tied parameter under two names)
    tensors = {k: state[k].detach().cpu().clone().contiguous() for k in keys}
    if base_hash is None:
        base_hash = base_hash_of(model, keys)
    elif not (isinstance(base_hash, str) and base_hash.startswith('sha256:')):
        raise ValueError(f"base_hash must be a 'sha256:<hex>' tensor hash (got {base_hash!r})")
    model_cfg = _model_cfg(cfg)
    trainable = sorted(n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad)
    config = dict(
        format=ADAPTER_FORMAT, format_version=ADAPTER_VERSION, mmpeft_version=__version__,
        weights=WEIGHTS_NAME, base_hash=base_hash, trainable_count=trainable_count(model),
        methods=method_configs(model_cfg), method_fingerprints=method_fingerprints(model, model_cfg),
        trainable=trainable, buffers=[k for k in keys if k not in set(trainable)],
        tensors={k: dict(shape=list(v.shape), dtype=str(v.dtype).replace('torch.', ''))
                 for k, v in tensors.items()},
        model=model_cfg)
    _atomic_write(osp.join(out_dir, WEIGHTS_NAME),
                  lambda p: save_file(tensors, p, metadata=dict(format='pt', mmpeft_adapter=str(ADAPTER_VERSION))))
    text = json.dumps(config, indent=2) + '\n'

    def write_json(p: str) -> None:
        with open(p, 'w', encoding='utf-8') as f:
            f.write(text)
    _atomic_write(osp.join(out_dir, CONFIG_NAME), write_json)
    return config


# ---------------------------------------------------------------------- reading
def _adapter_dir(path: str) -> str:
    if osp.isfile(path) and osp.basename(path) in (WEIGHTS_NAME, CONFIG_NAME):
        path = osp.dirname(path) or '.'
    if not osp.isdir(path):
        raise FileNotFoundError(f'adapter folder {path} does not exist: give the OUT_DIR that '
                                f'{EXPORT_TOOL} wrote ({WEIGHTS_NAME} + {CONFIG_NAME})')
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not osp.isfile(osp.join(path, name)):
            raise FileNotFoundError(f'adapter folder {path} has no {name}: it is not an mmpeft adapter '
                                    f'(export one with {EXPORT_TOOL} CONFIG CKPT OUT_DIR)')
    return path


def is_adapter_path(path: Any) -> bool:
    """Whether a checkpoint path names an adapter: a local folder (checked for its two files when it
    is loaded, see :func:`adapter_checkpoint`), or a file named ``adapter.safetensors`` /
    ``adapter_config.json``. URLs and other files are not."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = os.fspath(path)
    if '://' in path:
        return False
    path = osp.expanduser(path)
    return osp.isdir(path) or (osp.isfile(path) and osp.basename(path) in (WEIGHTS_NAME, CONFIG_NAME))


def not_an_adapter_message(path: str) -> Optional[str]:
    """Why the folder ``path``, given as a checkpoint, is not an adapter (naming the missing file and
    any checkpoint files inside it); None when it holds both adapter files."""
    lacks = [n for n in (WEIGHTS_NAME, CONFIG_NAME) if not osp.isfile(osp.join(path, n))]
    if not lacks:
        return None
    ckpts = sorted(n for n in os.listdir(path) if n.endswith(('.pth', '.pt', '.ckpt')))
    inside = (f'; it holds checkpoint file(s) {", ".join(ckpts[:5])}: give one of them, e.g. '
              f'{osp.join(path, ckpts[-1])}') if ckpts else ''
    return (f'checkpoint path {path} is a folder, and not an mmpeft adapter folder: it has no '
            f'{" and no ".join(lacks)}{inside}. Give a checkpoint file, or an adapter folder written by '
            f'{EXPORT_TOOL} CONFIG CKPT OUT_DIR ({WEIGHTS_NAME} + {CONFIG_NAME})')


def adapter_checkpoint(path: str) -> dict:
    """The checkpoint dict an adapter path loads as wherever mmengine loads a checkpoint:
    ``{'meta': {'mmpeft_adapter': {'path': folder, 'config': adapter config}}, 'state_dict': tensors}``.
    Read from safetensors (nothing is unpickled); :func:`attach_adapter_checkpoint` attaches it.

    Raises:
        FileNotFoundError: ``path`` is a folder without the adapter files (names the missing file).
    """
    path = osp.expanduser(os.fspath(path))
    if osp.isdir(path):
        problem = not_an_adapter_message(path)
        if problem is not None:
            raise FileNotFoundError(problem)
    config, tensors = read_adapter(path)
    folder = _adapter_dir(path)
    return dict(meta={ADAPTER_KEY: dict(path=folder, config=config)}, state_dict=tensors)


def is_adapter_checkpoint(checkpoint: Any) -> bool:
    """Whether a loaded checkpoint dict is one :func:`adapter_checkpoint` made."""
    return (isinstance(checkpoint, Mapping) and isinstance(checkpoint.get('meta'), Mapping)
            and ADAPTER_KEY in checkpoint['meta'])


def read_adapter(path: str) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """``(config, tensors)`` of the adapter in folder ``path``; the file and its config must agree."""
    from safetensors.torch import load_file
    folder = _adapter_dir(path)
    cfg_path = osp.join(folder, CONFIG_NAME)
    try:
        with open(cfg_path, encoding='utf-8') as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{cfg_path} is not valid JSON ({e}); export the adapter again') from e
    if not isinstance(config, dict) or config.get('format') != ADAPTER_FORMAT:
        raise ValueError(f'{cfg_path} is not an mmpeft adapter config (format must be {ADAPTER_FORMAT!r})')
    if config.get('format_version') != ADAPTER_VERSION:
        raise ValueError(f'{cfg_path} has adapter format version {config.get("format_version")!r}; this '
                         f'mmpeft ({__version__}) reads version {ADAPTER_VERSION}: export it again with it')
    weights_path = osp.join(folder, WEIGHTS_NAME)
    try:
        tensors = load_file(weights_path, device='cpu')
    except Exception as e:  # safetensors raises its own error types for truncated / foreign files
        raise ValueError(f'{weights_path} could not be read as safetensors ({type(e).__name__}: {e}); '
                         f'copy or export it again') from e
    listed = config.get('tensors', {})
    missing = [k for k in listed if k not in tensors]
    unlisted = [k for k in tensors if k not in listed]
    shapes = [f'{k} (file {list(tensors[k].shape)} vs config {listed[k]["shape"]})'
              for k in listed if k in tensors and list(tensors[k].shape) != list(listed[k]['shape'])]
    problems = []
    if missing:
        problems.append(f'tensors listed in {CONFIG_NAME} but missing from the file: {_preview(missing)}')
    if unlisted:
        problems.append(f'tensors in the file not listed in {CONFIG_NAME}: {_preview(unlisted)}')
    if shapes:
        problems.append(f'shape mismatch: {_preview(shapes)}')
    if problems:
        raise AdapterMismatchError(f'adapter {folder}: {WEIGHTS_NAME} does not match {CONFIG_NAME}: '
                                   + '; '.join(problems) + '. The two files come from different exports '
                                   'or one was edited; export the adapter again')
    return config, tensors


def check_adapter_fits(model: nn.Module, config: Mapping, tensors: Mapping[str, torch.Tensor],
                       name: str = 'adapter', cfg: Any = None, base_fix: Optional[str] = None) -> None:
    """Raise :class:`AdapterMismatchError` if the adapter was not trained on ``model``'s base and method.

    Checks the method fingerprints (and, with ``cfg``, the method configs), that every adapter
    tensor is in the model with its shape and every trainable tensor of the model is in the adapter,
    and that the model's non-adapter tensors hash to the recorded base hash (``base_fix``: how to
    give the base weights where the adapter is being attached, for that error).
    """
    model = _unwrap(model)
    recorded = config.get('method_fingerprints', {})
    have = method_fingerprints(model, config.get('model'))
    if recorded != have:
        raise AdapterMismatchError(
            f'{name} was trained with PEFT method(s) {json.dumps(config.get("methods", {}))} (fingerprint '
            f'{json.dumps(recorded)}), but the model has {json.dumps(have)}. Build the model from the '
            f'config the adapter was exported with (its "model" entry in {CONFIG_NAME})')
    if cfg is not None:
        want, got = config.get('methods', {}), method_configs(_model_cfg(cfg))
        if want != got:
            raise AdapterMismatchError(f'{name} was trained with method config(s) {json.dumps(want)}, but '
                                       f'the model config has {json.dumps(got)}')
    state = model.state_dict()
    trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    unexpected = [k for k in tensors if k not in state]
    shapes = [f'{k} (adapter {list(tensors[k].shape)} vs model {list(state[k].shape)})'
              for k in tensors if k in state and tensors[k].shape != state[k].shape]
    absent = [k for k in trainable if k not in tensors]
    problems = []
    if unexpected:
        problems.append(f'adapter tensors the model does not have: {_preview(unexpected)}')
    if shapes:
        problems.append(f'shape mismatch: {_preview(shapes)}')
    if absent:
        problems.append(f'trainable tensors of the model missing from the adapter: {_preview(absent)}')
    if problems:
        raise AdapterMismatchError(f'{name} does not fit {type(model).__name__}: ' + '; '.join(problems)
                                   + f'. Build the model from the config in {CONFIG_NAME}')
    got_hash = base_hash_of(model, tensors)
    if got_hash != config.get('base_hash'):
        base_fix = base_fix or ("init_cfg=dict(type='PEFTAdapter', path=..., base_checkpoint=BASE.pth)")
        raise AdapterMismatchError(
            f'{name} was trained on base weights with tensor hash {config.get("base_hash")}, but the '
            f'model\'s frozen weights hash to {got_hash}. Load the base weights first: build the model '
            f'from the same pretrained file(s) as in training (the "model" entry of {CONFIG_NAME}), '
            f'or give the full base checkpoint, e.g. {base_fix}')


def load_adapter(model: nn.Module, path: str, cfg: Any = None) -> dict:
    """Attach the adapter in folder ``path`` to ``model`` (already on its base weights), checked.

    Args:
        model: built from the config the adapter was exported with, base weights loaded.
        path: the adapter folder (or either of its two files).
        cfg: optional Config / model dict of ``model``: its ``method=`` dicts must equal the adapter's.

    Returns:
        The adapter's JSON config.

    Raises:
        AdapterMismatchError: method, tensor names / shapes or base hash differ (see
            :func:`check_adapter_fits`).
    """
    model = _unwrap(model)
    config, tensors = read_adapter(path)
    _attach(model, config, tensors, path, cfg)
    return config


def _attach(model: nn.Module, config: Mapping, tensors: Mapping[str, torch.Tensor], path: str,
            cfg: Any = None, base_fix: Optional[str] = None) -> None:
    check_adapter_fits(model, config, tensors, f'adapter {path}', cfg, base_fix)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected, unexpected  # checked above
    print_log(f'loaded adapter {path}: {len(tensors)} tensors, {config.get("trainable_count")} trainable '
              f'parameters, base {config.get("base_hash", "")[:19]}...', logger='current')


def _unwrap_all(model: nn.Module) -> Tuple[nn.Module, bool]:
    """The model inside DDP-style wrappers and test-time-augmentation models (as mmengine's
    ``load_state_dict`` unwraps them); and whether a TTA model was unwrapped."""
    from mmengine.model import BaseTTAModel
    tta = False
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        tta = tta or isinstance(model, BaseTTAModel)
        model = model.module
    return model, tta


RUNNER_BASE_FIX = (f'--cfg-options {BASE_CFG_KEY}=BASE.pth (tools/test.py: --adapter-base BASE.pth; the '
                   'base_weights.pth DeltaCheckpointHook wrote in the training work_dir is one)')


def attach_adapter_checkpoint(model: nn.Module, checkpoint: Mapping, base_checkpoint: Optional[str] = None,
                              init_base: bool = False, cfg: Any = None,
                              base_fix: Optional[str] = None) -> dict:
    """Attach an adapter loaded as a checkpoint (:func:`adapter_checkpoint`) to ``model``.

    The base weights first: ``base_checkpoint`` (a full or delta checkpoint of the model; every
    non-adapter entry must be in it) if given, else with ``init_base`` the model's own
    ``init_weights()`` (its ``init_cfg``: pretrained backbone files ...) unless it already ran
    (``is_init``). Then every check of :func:`load_adapter` (method fingerprints, the method configs
    of ``cfg`` if given, tensor names / shapes both ways, base hash) and the load.

    Args:
        model: the model (wrappers and TTA models are unwrapped).
        checkpoint: the dict :func:`adapter_checkpoint` returned.
        base_checkpoint: path of the base weights to load first, or None.
        init_base: initialise an uninitialised model first (the runner's ``load_from``).
        cfg: the model config (or a Config holding it), to compare its ``method=`` dicts.
        base_fix: how to give the base weights, for the base-hash error.

    Returns:
        ``checkpoint``.
    """
    model, tta = _unwrap_all(model)
    info = checkpoint['meta'][ADAPTER_KEY]
    config, tensors, path = info['config'], checkpoint['state_dict'], info['path']
    if cfg is not None:
        cfg = _model_cfg(cfg)
        if tta and isinstance(cfg, Mapping) and isinstance(cfg.get('module'), Mapping):
            cfg = cfg['module']
    if base_checkpoint is not None:
        print_log(f'adapter {path}: base weights from {base_checkpoint}', logger='current')
        _load_base_checkpoint(model, base_checkpoint, config.get('tensors', {}))
    elif init_base and callable(getattr(model, 'init_weights', None)) and not getattr(model, 'is_init', False):
        print_log(f'adapter {path}: base weights from the model\'s own initialisation (init_weights with its '
                  f'init_cfg); to give them as a file instead: {RUNNER_BASE_FIX}', logger='current')
        model.init_weights()
    _attach(model, config, tensors, path, cfg, base_fix)
    return checkpoint


# ---------------------------------------------------------------------- init_cfg
def _init_children_first(module: nn.Module) -> None:
    """Run the children's ``init_weights`` as mmengine's ``BaseModule.init_weights`` would next."""
    for m in module.children():
        if is_model_wrapper(m) and not hasattr(m, 'init_weights'):
            m = m.module
        if hasattr(m, 'init_weights') and not getattr(m, 'is_init', False):
            m.init_weights()
            if hasattr(m, '_params_init_info'):
                update_init_info(m, init_info=f'Initialized by user-defined `init_weights` in '
                                              f'{m.__class__.__name__} ')
            # mmengine skips children whose ``is_init`` is True; a backbone overriding init_weights
            # (mmseg's Swin ...) never sets it, and a second init would overwrite the adapter
            if isinstance(m, BaseModule):
                m._is_init = True
            elif not hasattr(m, 'is_init'):
                m.is_init = True


def _load_base_checkpoint(module: nn.Module, path: str, adapter: Iterable[str]) -> None:
    """Load a full checkpoint of ``module``; every non-adapter entry must be in it (else KeyError)."""
    ckpt = load_checkpoint_file(path)
    if is_delta_checkpoint(ckpt):
        ckpt = expand_delta_checkpoint(ckpt, delta_path=path)
    sd = {re.sub(r'^module\.', '', k): v for k, v in state_dict_of(ckpt, f'base checkpoint {path}').items()}
    adapter = set(adapter)
    missing = [k for k in module.state_dict() if k not in sd and k not in adapter]
    if missing:
        raise KeyError(f'base checkpoint {path} lacks weights of {type(module).__name__}: {_preview(missing)}; '
                       f'give a full checkpoint of this model (e.g. the base_weights.pth DeltaCheckpointHook '
                       f'writes)')
    module.load_state_dict(sd, strict=False)


@WEIGHT_INITIALIZERS.register_module(name='PEFTAdapter')
class PEFTAdapterInit:
    """``init_cfg=dict(type='PEFTAdapter', path=OUT_DIR[, base_checkpoint=BASE])`` on the model.

    Order (see the module docstring): the model's children initialise first (pretrained backbone
    weights), then ``base_checkpoint`` loads if given, then the adapter in ``path`` loads, checked by
    :func:`load_adapter`. Use it at the model level (the adapter's names are the model's).

    Args:
        path: folder holding ``adapter.safetensors`` and ``adapter_config.json``.
        base_checkpoint: a full checkpoint of the model holding the base weights, loaded before the
            adapter (in place of a model-level ``type='Pretrained'`` entry, which mmengine would run
            after this initializer and so over the adapter).
    """

    def __init__(self, path: str, base_checkpoint: Optional[str] = None):
        self.path = path
        self.base_checkpoint = base_checkpoint

    def __call__(self, module: nn.Module) -> None:
        init_cfg = getattr(module, 'init_cfg', None)
        cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
        pretrained = [c for c in cfgs if isinstance(c, Mapping) and c.get('type') == 'Pretrained']
        if pretrained:
            raise ValueError(f'init_cfg of {type(module).__name__} has both PEFTAdapter and {dict(pretrained[0])}: '
                             f'mmengine runs Pretrained last, which would overwrite the adapter. Give that file '
                             f"as dict(type='PEFTAdapter', path={self.path!r}, base_checkpoint=...) instead")
        _init_children_first(module)
        if self.base_checkpoint is not None:
            config, _ = read_adapter(self.path)
            _load_base_checkpoint(module, self.base_checkpoint, config.get('tensors', {}))
        load_adapter(module, self.path)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=f'PEFTAdapter: base then adapter {self.path}')
