"""build_peft_backbone (config type ``PEFTBackbone``): any registered backbone + a PEFT method, frozen at build time."""
import contextlib
import inspect
import re
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from ..peft.attachment import PEFTAttachment
from ..peft.layout import find_blocks
from ..peft.policy import match_names
from ..registry import MODELS, PEFT_METHODS
from ..utils.checkpoint_io import state_dict_of
from . import swin_checkpoint  # noqa: F401  (registers the PretrainedOfficialSwin initializer)

#: plain-backbone parameters a classification checkpoint legitimately lacks: the per-output norms
#: ``norm0..norm3`` that the toolboxes' dense Swin / PVT backbones add at the top level (identity-
#: initialised, as mmseg and mmdet leave them). Checked only when the checkpoint does not hold them.
DEFAULT_NOT_PRETRAINED = (r'norm\d+\.',)

_SWIN_FIX = ("for an official Swin file (keys 'layers.<i>...', weights under 'model') use mmpeft's "
             "type='PretrainedSwin' (mmseg's Swin), convert_weights=True (mmdet's Swin) or "
             "init_cfg=dict(type='PretrainedOfficialSwin', checkpoint=...) (mmpretrain's Swin), or convert "
             "the file once with mmseg's tools/model_converters/swin2mmseg.py")


def build_peft_backbone(backbone: dict, method: Optional[dict] = None,
                        extra_trainable: Union[str, Sequence[str], None] = None,
                        frozen: Union[str, Sequence[str], None] = None,
                        pretrained: Optional[str] = None,
                        not_pretrained: Union[str, Sequence[str], None] = None,
                        with_cp: bool = False) -> nn.Module:
    """Build ``backbone`` from any registry, attach ``method`` and freeze all it does not declare.

    Registered as the model type ``PEFTBackbone`` (``dict(type='PEFTBackbone', backbone=..., method=...)``).
    It is a builder, not a wrapper class: it returns the toolbox's own backbone object, so state-dict
    keys stay those of the plain backbone (``backbone.stages.0...``) and checkpoints load as users have
    them. Everything mmpeft attached is owned by ``backbone.peft``, a
    :class:`~mmpeft.peft.attachment.PEFTAttachment` (the method, its modules and hooks, the trainable
    policy, the task protocol; ``backbone.peft.detach()`` gives the plain backbone back).

    A frozen backbone is only as good as the weights loaded into it, and the toolboxes load
    ``init_cfg=dict(type='Pretrained')`` with ``strict=False``: a checkpoint of another layout loads
    nothing, silently. So when the built backbone's ``init_cfg`` names a checkpoint, ``init_weights``
    watches the load and raises if any parameter of the plain backbone (frozen or not, e.g. BitFit's
    biases; the method's own modules are exempt) was not written by it. Backbones that load their
    checkpoint themselves, strictly, with ``init_cfg=None`` (HSTViT, ViTPyramid, ViTEncoder) are left to do so.

    Args:
        backbone: config of the backbone, e.g. ``dict(type='mmseg.SwinTransformer', ...)``; an
            unprefixed type is looked up from the current default scope.
        method: config of a PEFT method (``dict(type='BitFit')``); ``None`` means full fine-tuning.
        extra_trainable: more patterns to train on top of the method's (e.g. ``r'.*norm'``).
        frozen: patterns removed from the trainable set again.
        pretrained: checkpoint of the backbone, as mmseg's ``EncoderDecoder`` passes a segmentor-level
            ``model.pretrained``. Passed on to ``backbone`` (as its ``pretrained`` argument if it has
            one, else as ``init_cfg=dict(type='Pretrained', checkpoint=...)``). If ``backbone`` names
            another checkpoint itself, that is an error: which one was meant cannot be guessed.
        not_pretrained: patterns of plain-backbone parameters that the checkpoint is not expected to
            hold (they keep their initial values), on top of :data:`DEFAULT_NOT_PRETRAINED`.
        with_cp: activation checkpointing of every transformer block (``backbone.peft.checkpoint_blocks``):
            activations are recomputed in the backward pass, under the task of each call, for any
            backbone family, whether or not the toolbox's class has a ``with_cp`` of its own. A
            toolbox's own ``with_cp=True`` also works (with task-wise methods mmpeft takes it over).

    Returns:
        The backbone, with ``requires_grad`` set so that exactly the declared set trains, and (if the
        method says ``frozen_eval``) frozen norm / dropout modules kept in eval mode in training.
    """
    if pretrained is not None:
        backbone = _pass_pretrained(backbone, pretrained)
    model = _build_checking_out_indices(backbone)
    _numpy_scalars_to_python(model)
    plain_params = {id(p) for p in model.parameters()}
    # under the toolbox's scope, mmengine would look for that scope in the method registry and log
    # a failed search for every build; methods live in mmpeft's own scope
    with DefaultScope.overwrite_default_scope('mmpeft'):
        method_obj = PEFT_METHODS.build(method if method is not None else dict(type='FullFinetune'))
    peft = PEFTAttachment.attach(model, method_obj)
    patterns: List[str] = list(method_obj.trainable_patterns(model))
    if extra_trainable:
        patterns += [extra_trainable] if isinstance(extra_trainable, str) else list(extra_trainable)
    peft.freeze(patterns, frozen, allow_empty=method_obj.allows_empty, frozen_eval=method_obj.frozen_eval)
    if with_cp:
        peft.checkpoint_blocks([b.name for b in find_blocks(model)])
    names = [n for n, p in model.named_parameters() if id(p) in plain_params]
    if not_pretrained:
        match_names(names, not_pretrained, 'not_pretrained')  # a typo is an error, not a no-op
    peft.not_pretrained = list(DEFAULT_NOT_PRETRAINED) + (
        [not_pretrained] if isinstance(not_pretrained, str) else list(not_pretrained or []))
    peft.pretrained_params = names
    if getattr(model, 'init_weights', None) is not None:
        peft.wrap_init_weights(_init_weights_then_method)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    print_log(f'PEFTBackbone: {type(model).__name__} + {type(method_obj).__name__}: '
              f'{n_train / 1e6:.2f}M of {n_all / 1e6:.2f}M parameters trainable', logger='current')
    return model


# ---------------------------------------------------------------------- building
def _checkpoint_of(init_cfg) -> Optional[str]:
    """The checkpoint an ``init_cfg`` (dict or list of dicts) loads, if any."""
    for cfg in init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]:
        if isinstance(cfg, dict) and cfg.get('checkpoint'):
            return cfg['checkpoint']
    return None


def _pass_pretrained(backbone: dict, pretrained: str) -> dict:
    """``backbone`` with the segmentor-level ``pretrained`` handed on to it."""
    backbone = dict(backbone)
    own = backbone.get('pretrained') or _checkpoint_of(backbone.get('init_cfg'))
    if own is not None:
        if own == pretrained:
            return backbone
        raise ValueError(
            f'PEFTBackbone: got pretrained={pretrained!r} (mmseg copies a segmentor-level model.pretrained, '
            f'often set by an upstream base config, into the backbone config) but the inner backbone '
            f'{backbone.get("type")!r} loads {own!r}. Set model.pretrained=None in your config to keep '
            f"the backbone's own checkpoint, or drop the backbone's init_cfg / pretrained to use "
            f'model.pretrained.')
    typ = backbone.get('type')
    with MODELS.switch_scope_and_registry(None) as registry:
        cls = registry.get(typ) if isinstance(typ, str) else typ
    try:
        takes_pretrained = cls is not None and 'pretrained' in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes_pretrained = False
    if takes_pretrained:
        backbone['pretrained'] = pretrained
    else:
        init = dict(type='Pretrained', checkpoint=pretrained)
        other = backbone.get('init_cfg')
        backbone['init_cfg'] = init if other is None else (
            list(other) if isinstance(other, (list, tuple)) else [other]) + [init]
    return backbone


def _num_stages(model: nn.Module) -> Optional[Tuple[int, str]]:
    """``(n, attribute)``: the stages (or layers) that ``out_indices`` index, where the backbone has them."""
    for attr in ('stages', 'res_layers', 'layers'):
        seq = getattr(model, attr, None)
        if isinstance(seq, (nn.ModuleList, nn.Sequential, list, tuple)) and len(seq):
            return len(seq), attr
    return None


def _out_indices_error(typ, out_indices, stages: Tuple[int, str]) -> ValueError:
    n, attr = stages
    return ValueError(f'PEFTBackbone: out_indices={tuple(out_indices)} of backbone {typ!r} is out of range: '
                      f'it has {n} stages ({attr}), so valid indices are 0..{n - 1}. Fix out_indices '
                      f'(and the neck / head in_channels / in_index that follow it).')


def _build_checking_out_indices(backbone: dict) -> nn.Module:
    """``MODELS.build(backbone)``; ``out_indices`` beyond the stages is an error naming the valid range
    (the toolboxes fail with an IndexError inside, or silently return fewer maps)."""
    asked = backbone.get('out_indices') if isinstance(backbone, dict) else None
    try:
        model = MODELS.build(backbone)
    except (IndexError, AssertionError) as e:
        if asked is None:
            raise
        try:  # count the stages of the same backbone with its default out_indices
            stages = _num_stages(MODELS.build({k: v for k, v in backbone.items() if k != 'out_indices'}))
        except Exception:
            stages = None
        if stages is None or all(0 <= i < stages[0] for i in _as_indices(asked)):
            raise
        raise _out_indices_error(backbone.get('type'), _as_indices(asked), stages) from e
    own = getattr(model, 'out_indices', None)  # after the backbone's own normalisation (-1 -> last)
    stages = _num_stages(model)
    if own is not None and stages is not None:
        indices = _as_indices(own)
        if indices is not None and not all(0 <= i < stages[0] for i in indices):
            raise _out_indices_error(backbone.get('type'), _as_indices(asked) or indices, stages)
    return model


def _numpy_scalars_to_python(model: nn.Module) -> List[str]:
    """Replace numpy scalar attributes of ``model``'s modules by the equal Python numbers, in place.

    mmpretrain's ``VisionTransformer`` gives each layer's ``DropPath`` its ``drop_prob`` from
    ``np.linspace``, a ``np.float64``. ``torch.compile`` traces a numpy scalar as a tensor, so mmcv's
    ``if drop_prob == 0. or not training`` becomes data-dependent control flow: two graph breaks per
    layer, in training and in eval. A Python float is a compile-time constant; its value is the same.

    Returns:
        The changed attributes, as ``module.attribute`` names.
    """
    import numpy as np
    changed = []
    for name, m in model.named_modules():
        for attr, value in list(vars(m).items()):
            if isinstance(value, (np.floating, np.integer, np.bool_)):
                vars(m)[attr] = value.item()  # a plain attribute: not a parameter, buffer or module
                changed.append(f'{name}.{attr}' if name else attr)
    return changed


def _as_indices(x) -> Optional[List[int]]:
    if isinstance(x, int) and not isinstance(x, bool):
        return [x]
    if isinstance(x, (list, tuple)) and all(isinstance(i, int) for i in x):
        return list(x)
    return None


# ---------------------------------------------------------------------- weights
@contextlib.contextmanager
def _watch_load(model: nn.Module, names: Sequence[str]) -> Iterator[Tuple[Set[str], List[str]]]:
    """Record which of the parameters ``names`` a ``load_state_dict`` inside the block writes.

    Each module gets a load-state-dict pre-hook (public torch API): both ``nn.Module.load_state_dict``
    and mmengine's ``load_state_dict`` call every module's ``_load_from_state_dict``, which runs them
    with the state dict and the module's key prefix, so the hook sees the tensor of the right shape
    given for each parameter. Observing the load (rather than comparing values before / after) also
    counts weights whose pretrained value equals their init (LayerNorm ones). After the block, a weight
    counts as loaded only if it still equals that tensor: an init running after the load (mmengine runs
    the children's ``init_weights`` after any initializer but ``Pretrained``) would undo it. A loader
    that writes tensors without ``load_state_dict`` is reported as not loading them. Yields
    ``(loaded names, the keys of the first state dict seen)``, filled when the block ends; the hooks
    are removed then.
    """
    names = set(names)
    params = {id(p): (n, p) for n, p in model.named_parameters() if n in names}
    given: Dict[str, torch.Tensor] = {}
    loaded: Set[str] = set()
    keys: List[str] = []

    def hook(module, state_dict, prefix, *args) -> None:
        if not keys:
            keys.extend(state_dict)
        for name, p in module.named_parameters(recurse=False):
            v = state_dict.get(prefix + name)
            if id(p) in params and isinstance(v, torch.Tensor) and v.shape == p.shape:
                given[params[id(p)][0]] = v

    handles = [m.register_load_state_dict_pre_hook(hook) for m in model.modules()]
    try:
        yield loaded, keys
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        loaded.update(n for n, p in params.values()
                      if n in given and torch.equal(p, given[n].to(device=p.device, dtype=p.dtype)))


def _sample(keys: Sequence[str], n: int = 8) -> str:
    keys = list(keys)
    return ', '.join(keys[:n]) + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def _file_keys(checkpoint: str) -> List[str]:
    """The tensor keys of a checkpoint file (for error messages only)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    try:
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu', logger=None)
        return list(state_dict_of(ckpt, checkpoint))
    except Exception as e:  # the message is about the prefix; an unreadable file says so here
        return [f'<cannot read the file: {type(e).__name__}: {e}>']


def _load_pretrained(self: nn.Module, checkpoint: str, *args, **kwargs) -> None:
    """The backbone's own init with its checkpoint, checked: every plain parameter must be loaded."""
    peft = self.peft
    with _watch_load(self, peft.pretrained_params) as (loaded, keys):
        try:
            peft.plain_init_weights(*args, **kwargs)
        except AssertionError as e:
            if 'is not in the pretrained model' not in str(e):  # mmengine's Pretrained(prefix=...)
                raise
            prefix = next((c.get('prefix') for c in (self.init_cfg if isinstance(self.init_cfg, list)
                                                    else [self.init_cfg]) if isinstance(c, dict)), None)
            raise KeyError(
                f'PEFTBackbone: {checkpoint} has no keys starting with the init_cfg prefix {prefix!r} '
                f'(its keys: {_sample(_file_keys(checkpoint))}). Fix: drop `prefix` for a bare backbone '
                f"file (prefix='backbone' is for a whole-model checkpoint); {_SWIN_FIX}.") from e
    left = [n for n in peft.pretrained_params if n not in loaded]
    exempt = [n for n in left if any(re.match(p, n) for p in peft.not_pretrained)]
    left = [n for n in left if n not in set(exempt)]
    if left:
        seen = (f"the state dict it gave the backbone had the keys: {_sample(keys)}" if keys else
                f"no state dict reached the backbone's modules (the file's keys: {_sample(_file_keys(checkpoint))})")
        raise KeyError(
            f'PEFTBackbone: the pretrained checkpoint {checkpoint} left {len(left)} of '
            f'{len(peft.pretrained_params)} weights of {type(self).__name__} at their initial values '
            f'(not in the checkpoint, of another shape, or re-initialised after the load): {_sample(left)}; {seen}. '
            f'The toolboxes load '
            f'with strict=False, so this would train on random weights. Fix: give a checkpoint of this '
            f"backbone's architecture and key layout: {_SWIN_FIX}; for a ViT, mmpeft's HSTViT / "
            f'ViTPyramid load timm / MAE / mmpretrain / mmseg layouts; check the init_cfg prefix. Weights '
            f'meant to keep their init can be listed in build_peft_backbone(not_pretrained=[...]).')
    print_log(f'PEFTBackbone: {checkpoint}: all {len(peft.pretrained_params) - len(exempt)} backbone '
              f'weights loaded' + (f'; not in the checkpoint, left at init: {_sample(exempt)}' if exempt else ''),
              logger='current')


def _init_weights_then_method(self: nn.Module, *args, **kwargs) -> None:
    """The backbone's own init (pretrained loading, checked), then the method's.

    Loading weights must not change the trainable set, nor undo changes made since the build (e.g. by
    :class:`~mmpeft.hooks.PEFTFreezeHook`, whose ``before_run`` runs before the runner initialises
    weights): the ``requires_grad`` of every parameter is recorded before and restored after.
    """
    requires: Dict[str, bool] = {n: p.requires_grad for n, p in self.named_parameters()}
    checkpoint = _checkpoint_of(getattr(self, 'init_cfg', None))
    if checkpoint is not None:
        _load_pretrained(self, checkpoint, *args, **kwargs)
    else:
        self.peft.plain_init_weights(*args, **kwargs)
    self.peft.method.init_weights(self)
    for n, p in self.named_parameters():
        if n in requires:
            p.requires_grad_(requires[n])


MODELS.register_module(name='PEFTBackbone', module=build_peft_backbone)
