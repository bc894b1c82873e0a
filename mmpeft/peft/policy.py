"""The trainable-parameter policy: freeze everything, then enable exactly what is declared.

A policy is applied when the model is built (inside ``__init__`` of a PEFT backbone, or by
:class:`~mmpeft.hooks.PEFTFreezeHook` before DDP sees the model), so the optimizer and DDP only ever
see the trainable set. Patterns are Python regular expressions matched with ``re.match`` against
parameter names, i.e. anchored at the start of the name (``'neck'`` matches ``neck.conv.weight``;
``r'backbone\\..*norm'`` matches ``backbone.stages.0.norm1.weight``).
"""
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch.nn as nn

Patterns = Union[str, Sequence[str], None]


def _as_list(patterns: Patterns) -> List[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def match_names(names: Iterable[str], patterns: Patterns,
                what: str = 'trainable') -> Tuple[List[str], Dict[str, List[str]]]:
    """Names matched by any pattern, and for each pattern the names it matched.

    Raises:
        ValueError: naming every pattern that matches no name (a typo would otherwise silently
            freeze what the user meant to train).
    """
    names = list(names)
    pats = _as_list(patterns)
    per_pattern: Dict[str, List[str]] = {}
    matched = set()
    for p in pats:
        try:
            rx = re.compile(p)
        except re.error as e:
            raise ValueError(f'{what} pattern {p!r} is not a valid regular expression: {e}') from e
        hits = [n for n in names if rx.match(n)]
        per_pattern[p] = hits
        matched.update(hits)
    empty = [p for p, hits in per_pattern.items() if not hits]
    if empty:
        sample = ', '.join(names[:8]) + (', ...' if len(names) > 8 else '')
        raise ValueError(
            f'{what} pattern(s) {empty} match no parameter of the model '
            f'(patterns are regular expressions matched at the start of names such as: {sample})')
    return [n for n in names if n in matched], per_pattern


def apply_trainable(model: nn.Module, trainable: Patterns, frozen: Patterns = None,
                    allow_empty: bool = False) -> List[str]:
    """Freeze every parameter of ``model``, then enable those matching ``trainable``.

    Args:
        model: the module whose parameters are set.
        trainable: pattern(s) of the parameters to train.
        frozen: pattern(s) removed again from the trainable set (e.g. a head's frozen part).
        allow_empty: allow an empty trainable set (e.g. a PEFT backbone whose trainable part lives
            elsewhere in the model); otherwise it is an error.

    Returns:
        The names of the trainable parameters, in ``named_parameters`` order.
    """
    names = [n for n, _ in model.named_parameters()]
    enabled, _ = match_names(names, trainable, 'trainable')
    if frozen:
        disabled, _ = match_names(names, frozen, 'frozen')
        enabled = [n for n in enabled if n not in set(disabled)]
    if not enabled and not allow_empty:
        raise ValueError(f'the trainable set of {type(model).__name__} is empty: '
                         f'patterns {_as_list(trainable)} leave nothing to train')
    keep = set(enabled)
    for n, p in model.named_parameters():
        p.requires_grad_(n in keep)
    return enabled


def frozen_norm_and_dropout_modules(model: nn.Module, parameterless: str = 'frozen') -> List[str]:
    """Names of norm / dropout modules none of whose own parameters is trainable.

    Keeping them in eval mode makes a frozen module behave exactly as it did when pretrained (running
    statistics are not updated, dropout and drop-path are off).

    Args:
        parameterless: what counts as frozen among modules without parameters (dropout, drop-path):
            ``'frozen'``: all of them (a frozen backbone with injected PEFT modules computes what it
            was pretrained to compute; :func:`~mmpeft.backbones.build_peft_backbone` on the backbone alone);
            ``'by_owner'``: those whose nearest ancestor holding parameters has no trainable one, so
            the dropout of a trainable head keeps working (:class:`~mmpeft.hooks.PEFTFreezeHook` on
            the whole model).
    """
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.dropout import _DropoutNd
    if parameterless not in ('frozen', 'by_owner'):
        raise ValueError(f"parameterless={parameterless!r} is not one of ('frozen', 'by_owner')")
    kinds: Tuple[type, ...] = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, _DropoutNd)
    modules = dict(model.named_modules())
    out = []
    for name, m in modules.items():
        own = list(m.parameters(recurse=False))
        # timm / mmcv drop-path modules share no base class: matched by class name.
        is_kind = isinstance(m, kinds) or type(m).__name__ in ('DropPath', 'DropBlock')
        if not name or not is_kind or any(p.requires_grad for p in own):
            continue
        if not own and parameterless == 'by_owner' and _owner_trains(modules, name):
            continue
        out.append(name)
    return out


def _owner_trains(modules: Dict[str, nn.Module], name: str) -> bool:
    """Whether the nearest ancestor of ``name`` that holds parameters has a trainable one."""
    parts = name.split('.')
    for k in range(len(parts) - 1, -1, -1):
        owner = modules['.'.join(parts[:k])]
        params = list(owner.parameters())
        if params:
            return any(p.requires_grad for p in params)
    return False


def optimizer_param_names(model: nn.Module, optimizer) -> List[str]:
    """Names (in ``model``) of the parameters an optimizer holds; unknown tensors as ``<unnamed>``."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    out = []
    for g in optimizer.param_groups:
        for p in g['params']:
            out.append(by_id.get(id(p), '<unnamed>'))
    return out


def restrict_optimizer(optimizer, keep: Optional[Iterable] = None) -> int:
    """Drop from an optimizer's groups every parameter with ``requires_grad=False``.

    Groups are kept (possibly empty) so that parameter schedulers, which index groups, stay aligned.
    Returns the number of parameters removed. Only valid before the optimizer has state for them.
    """
    removed = 0
    for g in optimizer.param_groups:
        before = len(g['params'])
        g['params'] = [p for p in g['params'] if p.requires_grad]
        removed += before - len(g['params'])
    for p in list(optimizer.state.keys()):
        if not p.requires_grad:
            del optimizer.state[p]
    return removed


class _KeepInEval:
    """Forward pre-hook putting the named sub-modules in eval mode while their root trains. Holds the
    names, not the modules: a deep copy (EMA) or a pickled model keeps a working hook of its own."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)

    def __call__(self, root: nn.Module, args) -> None:
        if root.training:
            for name in self.names:
                m = root.get_submodule(name)
                if m.training:
                    m.eval()


def keep_in_eval(module: nn.Module, names: Sequence[str]):
    """Keep the named sub-modules of ``module`` in eval mode whenever ``module`` runs in training.

    Implemented as a forward pre-hook, so it survives every ``model.train()`` a runner calls and needs
    no subclass. Returns the hook handle (``.remove()`` undoes it).
    """
    subs = dict(module.named_modules())
    missing = [n for n in names if n not in subs]
    if missing:
        raise KeyError(f'modules {missing} not found in {type(module).__name__}')
    return module.register_forward_pre_hook(_KeepInEval(names))
