"""Where a PEFT method acts inside a backbone: blocks, attention and MLP, attachment of new modules.

:func:`find_blocks` locates the transformer blocks of a backbone and, in each, the attention (its
fused ``qkv`` and output ``proj`` linears) and the MLP (the part of the feed-forward sub-layer without
its residual, and its ``fc1`` / ``fc2`` linears), by attribute and type inspection. Supported layouts:

- Swin Transformer of mmseg, mmdet and mmpretrain: blocks with ``attn.w_msa.{qkv,proj}`` (windowed
  attention) and an mmcv ``FFN`` ``ffn.layers``;
- mmpretrain ``VisionTransformer``: layers with ``attn.{qkv,proj}`` and ``ffn.layers``;
- timm ``VisionTransformer`` (also inside mmpretrain's ``TIMMBackbone``): blocks with
  ``attn.{qkv,proj}`` and ``mlp.{fc1,fc2}``.

Anything else is an error naming the module that did not fit.

New modules are added *next to* the frozen ones (``attn.w_msa.lora_qkv``, ``blocks.3.adapter_mlp``,
``norm1.ssf`` ...), never around them, so every key of the plain backbone keeps its name and official
checkpoints load unchanged (:func:`attach`). Behaviour is added with forward hooks bound to the injected modules (so
``copy.deepcopy`` rebinds them to the copy) or, for Swin's windowed attention, a subclass of the
toolbox's ``WindowMSA`` (:class:`WindowAttentionExtras`, :func:`override_window_attention`) that
accepts extra keys/values and a bias table.
"""
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

SUPPORTED_LAYOUTS = (
    'mmseg / mmdet / mmpretrain SwinTransformer (blocks with attn.w_msa.{qkv,proj} and ffn.layers), '
    'mmpretrain VisionTransformer (layers with attn.{qkv,proj} and ffn.layers), '
    'timm VisionTransformer (blocks with attn.{qkv,proj} and mlp.{fc1,fc2})')


# --------------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------------
@dataclass
class BlockLayout:
    """One transformer block, with the full names (relative to the backbone) of its parts.

    Attributes:
        name: the block, e.g. ``stages.1.blocks.0`` or ``blocks.3``.
        windowed: Swin block (attention over windows of ``N = Wh*Ww`` tokens, input ``(nW*B, N, C)``)
            rather than global attention over the whole sequence (input ``(B, L, C)``).
        dims: token width ``d`` (the paper's adapter input dimension).
        attn: module computing multi-head attention from normalised tokens (``attn.w_msa`` for Swin,
            ``attn`` for plain ViTs); its output is the projected attention, before the residual.
        qkv, proj: the fused query-key-value linear ``d -> 3d`` and the output projection ``d -> d``.
        mlp: module mapping the normalised tokens to the MLP output before residual / drop-path
            (``ffn.layers`` of an mmcv FFN, ``mlp`` of timm).
        fc1, fc2: the MLP's two linears ``d -> 4d -> d``.
    """
    name: str
    windowed: bool
    dims: int
    attn: str
    qkv: str
    proj: str
    mlp: str
    fc1: str
    fc2: str


def _join(*parts: str) -> str:
    return '.'.join(p for p in parts if p)


def find_blocks(backbone: nn.Module) -> List[BlockLayout]:
    """The transformer blocks of ``backbone`` in forward order.

    Raises:
        ValueError: when no block is found, or a block's attention / MLP has an unknown layout (the
            message names the module and lists the supported layouts).
    """
    blocks: List[BlockLayout] = []
    for name, m in backbone.named_modules():
        attn = getattr(m, 'attn', None)
        has_mlp = any(isinstance(getattr(m, a, None), nn.Module) for a in ('ffn', 'mlp'))
        if not isinstance(attn, nn.Module) or not has_mlp:
            continue
        where = f'{type(backbone).__name__}.{name}' if name else type(backbone).__name__
        # attention: windowed (Swin) or global (ViT)
        if isinstance(getattr(attn, 'w_msa', None), nn.Module):
            core, core_name, windowed = attn.w_msa, _join(name, 'attn', 'w_msa'), True
        else:
            core, core_name, windowed = attn, _join(name, 'attn'), False
        qkv, proj = getattr(core, 'qkv', None), getattr(core, 'proj', None)
        if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
            raise ValueError(
                f'{where}: attention {type(core).__name__} at "{core_name}" has no fused `qkv` and '
                f'`proj` nn.Linear, so PEFT methods cannot locate its projections. '
                f'Supported layouts: {SUPPORTED_LAYOUTS}')
        if qkv.out_features != 3 * qkv.in_features:
            raise ValueError(f'{where}: `{core_name}.qkv` maps {qkv.in_features} -> {qkv.out_features} '
                             f'features; a fused d -> 3d projection was expected')
        # MLP without its residual
        ffn = getattr(m, 'ffn', None)
        if isinstance(ffn, nn.Module):
            layers = getattr(ffn, 'layers', None)
            linears = ([n for n, x in layers.named_modules() if isinstance(x, nn.Linear)]
                       if isinstance(layers, nn.Sequential) else [])
            if len(linears) != 2:
                raise ValueError(
                    f'{where}: feed-forward {type(ffn).__name__} at "{_join(name, "ffn")}" is not an '
                    f'mmcv FFN with two linears in `layers` (found {len(linears)}). '
                    f'Supported layouts: {SUPPORTED_LAYOUTS}')
            mlp_name = _join(name, 'ffn', 'layers')
            fc1, fc2 = (_join(mlp_name, n) for n in linears)
        else:
            mlp = m.mlp
            if not (isinstance(getattr(mlp, 'fc1', None), nn.Linear)
                    and isinstance(getattr(mlp, 'fc2', None), nn.Linear)):
                raise ValueError(
                    f'{where}: MLP {type(mlp).__name__} at "{_join(name, "mlp")}" has no `fc1` / `fc2` '
                    f'nn.Linear. Supported layouts: {SUPPORTED_LAYOUTS}')
            mlp_name = _join(name, 'mlp')
            fc1, fc2 = _join(mlp_name, 'fc1'), _join(mlp_name, 'fc2')
        blocks.append(BlockLayout(name=name, windowed=windowed, dims=qkv.in_features, attn=core_name,
                                  qkv=_join(core_name, 'qkv'), proj=_join(core_name, 'proj'),
                                  mlp=mlp_name, fc1=fc1, fc2=fc2))
    if not blocks:
        raise ValueError(
            f'{type(backbone).__name__}: no transformer block found (looked for modules with an `attn` '
            f'and an `ffn` or `mlp` child). Supported layouts: {SUPPORTED_LAYOUTS}')
    return blocks


def transformer_scope(blocks: Sequence[BlockLayout]) -> str:
    """The module holding the transformer (its blocks, patch embedding, norms), relative to the backbone.

    The longest common prefix of the block names minus the container of the blocks: ``''`` for
    mmseg / mmpretrain backbones (``stages.i.blocks.j``, ``layers.j``), ``vit`` for a wrapper with a
    timm ViT at ``vit`` (``vit.blocks.j``), ``timm_model.model`` inside mmpretrain's TIMMBackbone.
    Modules a wrapper adds beside the transformer (necks, pyramid modules) lie outside it.
    """
    parts = [b.name.split('.') for b in blocks]
    common: List[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if len(blocks) == 1:
        common = common[:-1]  # a lone block: its own name is the common prefix
    return '.'.join(common[:-1])


def get_module(root: nn.Module, name: str) -> nn.Module:
    return root.get_submodule(name) if name else root


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def attach(root: nn.Module, owner: str, attr: str, child: Union[nn.Module, nn.Parameter]) -> str:
    """Register ``child`` as ``attr`` on the module ``owner`` (a name relative to ``root``).

    Containers (``nn.Sequential`` would *call* a new child; ``ModuleList`` would iterate it) are
    skipped: the child goes on the nearest non-container ancestor, with the skipped path folded into
    its name (``ffn.layers`` + ``peft_adapter`` -> ``ffn.layers_peft_adapter``).

    Returns:
        The full name of the new child relative to ``root``.
    Raises:
        KeyError: if that name is already taken (a method applied twice).
    """
    parts = owner.split('.') if owner else []
    skipped: List[str] = []
    while parts and isinstance(get_module(root, '.'.join(parts)), _CONTAINERS):
        skipped.insert(0, parts.pop())
    if not parts and isinstance(root, _CONTAINERS):
        raise ValueError(f'cannot attach {attr} under container {type(root).__name__}')
    host_name = '.'.join(parts)
    host = get_module(root, host_name)
    local = '_'.join(skipped + [attr])
    if hasattr(host, local):
        raise KeyError(f'"{_join(host_name, local)}" already exists in {type(root).__name__}: '
                       f'was the method applied twice?')
    if isinstance(child, nn.Parameter):
        host.register_parameter(local, child)
    else:
        host.add_module(local, child)
    return _join(host_name, local)


def detach(root: nn.Module, name: str) -> None:
    """Remove the child or parameter ``name`` added by :func:`attach`."""
    host_name, _, local = name.rpartition('.')
    host = get_module(root, host_name)
    if local in host._parameters:
        del host._parameters[local]
    elif local in host._modules:
        del host._modules[local]
    else:
        raise KeyError(f'{name} not found in {type(root).__name__}')


# --------------------------------------------------------------------------------------------------
# Swin windowed attention with extra keys/values and a bias-table delta
# --------------------------------------------------------------------------------------------------
class WindowAttentionExtras:
    """Mixin of the toolboxes' Swin ``WindowMSA`` (mmseg, mmdet, mmpretrain) with two optional inputs
    from injected modules; :func:`override_window_attention` makes a window attention an instance of
    ``<its class> + this mixin``, so ``type(m).forward`` is the forward that runs.

    - ``peft_extra_kv()`` -> ``(P, C)`` tokens (VPT prompts) appended to the keys and values of *every*
      window; no relative position bias and no shift mask apply to them (a prompt has no position, so it
      is visible from every window whatever the shift).
    - ``peft_table()`` -> a ``((2Wh-1)(2Ww-1), nH)`` relative position bias table used instead of
      ``relative_position_bias_table`` (task-wise relative-bias tuning / BitFit).

    Either returns ``None`` (not set, or its attachment disabled / merged): the toolbox's computation.
    """

    peft_extra_kv: Optional[Callable] = None
    peft_table: Optional[Callable] = None

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: window tokens ``(nW*B, N, C)``, ``N = Wh*Ww``; ``mask``: shifted-window mask
        ``(nW, N, N)`` with values in ``(-inf, 0]``, or None. Returns ``(nW*B, N, C)``."""
        B_, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(B_, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        extra = self.peft_extra_kv() if self.peft_extra_kv is not None else None
        P = 0
        if extra is not None:
            P = extra.shape[0]
            ekv = self.qkv(extra).reshape(P, 3, h, C // h).permute(1, 2, 0, 3)  # (3, h, P, C/h)
            k = torch.cat([k, ekv[1].unsqueeze(0).expand(B_, -1, -1, -1)], dim=2)
            v = torch.cat([v, ekv[2].unsqueeze(0).expand(B_, -1, -1, -1)], dim=2)
        attn = q @ k.transpose(-2, -1)  # (B_, h, N, N + P)
        table = self.peft_table() if self.peft_table is not None else None
        if table is None:
            table = self.relative_position_bias_table
        bias = table[self.relative_position_index.view(-1)].view(N, N, -1).permute(2, 0, 1)
        if P:
            bias = F.pad(bias, (0, P))
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            if P:
                mask = F.pad(mask, (0, P))
            attn = attn.view(B_ // nW, nW, h, N, N + P) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, h, N, N + P)
        attn = self.attn_drop(self.softmax(attn))
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))


#: the toolboxes' window attentions: ``<Toolbox>WindowMSAWithExtras`` -> (module, class name), so that
#: a pickled model finds its class in a fresh process (module ``__getattr__`` below builds it)
TOOLBOX_WINDOW_MSA = {
    'MmsegWindowMSAWithExtras': ('mmseg.models.backbones.swin', 'WindowMSA'),
    'MmdetWindowMSAWithExtras': ('mmdet.models.backbones.swin', 'WindowMSA'),
    'MmpretrainWindowMSAWithExtras': ('mmpretrain.models.utils.attention', 'WindowMSA'),
}

_WINDOW_ATTRS = ('qkv', 'proj', 'num_heads', 'scale', 'relative_position_bias_table',
                 'relative_position_index', 'softmax', 'attn_drop', 'proj_drop')
_EXTENDED: Dict[type, type] = {}


def _extended(cls: type) -> type:
    """``cls`` + :class:`WindowAttentionExtras`, one class per toolbox class, named after it
    (``MmsegWindowMSAWithExtras``) and kept in this module so that pickling finds it."""
    if cls not in _EXTENDED:
        name = f'{cls.__module__.split(".")[0].capitalize()}{cls.__name__}WithExtras'
        sub = type(name, (WindowAttentionExtras, cls), dict(__module__=__name__, __qualname__=name,
                                                            toolbox_class=cls))
        _EXTENDED[cls] = globals()[name] = sub
    return _EXTENDED[cls]


def __getattr__(name: str) -> type:
    """``mmpeft.peft.layout.MmsegWindowMSAWithExtras`` etc., built on first use (unpickling)."""
    if name in TOOLBOX_WINDOW_MSA:
        import importlib
        module, cls = TOOLBOX_WINDOW_MSA[name]
        return _extended(getattr(importlib.import_module(module), cls))
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def override_window_attention(w_msa: nn.Module, extra_kv: Optional[Callable] = None,
                              table: Optional[Callable] = None) -> None:
    """Make the Swin ``WindowMSA`` ``w_msa`` an instance of its class + :class:`WindowAttentionExtras`
    (its parameters, buffers and keys are untouched) reading ``extra_kv`` / ``table`` (callables of
    injected modules). :func:`restore_window_attention` gives it its class back."""
    missing = [a for a in _WINDOW_ATTRS if not hasattr(w_msa, a)]
    if missing:
        raise ValueError(f'{type(w_msa).__name__} is not a Swin WindowMSA this code knows '
                         f'(missing {missing}). Supported layouts: {SUPPORTED_LAYOUTS}')
    if not isinstance(w_msa, WindowAttentionExtras):
        w_msa.__class__ = _extended(type(w_msa))
    if extra_kv is not None:
        w_msa.peft_extra_kv = extra_kv
    if table is not None:
        w_msa.peft_table = table


def restore_window_attention(w_msa: nn.Module) -> None:
    """Undo :func:`override_window_attention`."""
    if isinstance(w_msa, WindowAttentionExtras):
        w_msa.__class__ = type(w_msa).toolbox_class
    for key in ('peft_extra_kv', 'peft_table'):
        w_msa.__dict__.pop(key, None)


# --------------------------------------------------------------------------------------------------
# helpers for methods
# --------------------------------------------------------------------------------------------------
def exact_patterns(names: Sequence[str]) -> List[str]:
    """Regexes matching exactly these parameter / module names (a module name matches its params)."""
    return [rf'{re.escape(n)}(\..*)?$' for n in names]


def activation(name: str) -> nn.Module:
    acts: Dict[str, Callable[[], nn.Module]] = dict(relu=nn.ReLU, gelu=nn.GELU, silu=nn.SiLU,
                                                     swish=nn.SiLU, identity=nn.Identity)
    if name not in acts:
        raise ValueError(f'unknown activation {name!r}; choose from {sorted(acts)}')
    return acts[name]()


def resolve_positions(position: str, allowed: Tuple[str, ...] = ('attn', 'mlp', 'both')) -> Tuple[str, ...]:
    if position not in allowed:
        raise ValueError(f'position must be one of {allowed}, got {position!r}')
    return ('attn', 'mlp') if position == 'both' else (position,)
