"""Where a PEFT method acts inside a backbone: blocks, attention and MLP, attachment of new modules.

:func:`find_blocks` locates the transformer blocks of a backbone and, in each, the attention (its
fused ``qkv`` and output ``proj`` linears) and the MLP (the part of the feed-forward sub-layer without
its residual, and its ``fc1`` / ``fc2`` linears), by attribute and type inspection. Supported layouts:

- Swin Transformer of mmseg, mmdet and mmpretrain: blocks with ``attn.w_msa.{qkv,proj}`` (windowed
  attention) and an mmcv ``FFN`` ``ffn.layers``;
- mmpretrain ``VisionTransformer``: layers with ``attn.{qkv,proj}`` and ``ffn.layers``;
- timm ``VisionTransformer`` (also inside mmpretrain's ``TIMMBackbone``): blocks with
  ``attn.{qkv,proj}`` and ``mlp.{fc1,fc2}``;
- mmdet ``PyramidVisionTransformer`` / ``PyramidVisionTransformerV2`` (PVT): ``PVTEncoderLayer`` blocks
  whose ``attn`` is a ``SpatialReductionAttention`` (queries from the tokens, keys / values from the
  spatially reduced map ``attn.sr`` + ``attn.norm``, projections inside the ``nn.MultiheadAttention``
  ``attn.attn``: ``in_proj_weight`` (3d, d), ``out_proj``) and whose ``ffn`` is a ``MixFFN`` (1x1 / 3x3
  convolutions on NCHW maps). Both sub-layers add their residual themselves. See :class:`BlockLayout` for
  the sites chosen there and :class:`SpatialReductionAttentionExtras` for changes of its projections.

Anything else is an error naming the module that did not fit.

New modules are added *next to* the frozen ones (``attn.w_msa.lora_qkv``, ``blocks.3.adapter_mlp``,
``norm1.ssf`` ...), never around them, so every key of the plain backbone keeps its name and official
checkpoints load unchanged (:func:`attach`). Behaviour is added with forward hooks bound to the injected modules (so
``copy.deepcopy`` rebinds them to the copy) or, for Swin's windowed attention, a subclass of the
toolbox's ``WindowMSA`` (:class:`WindowAttentionExtras`, :func:`override_window_attention`) that
accepts extra keys/values and a bias table; likewise PVT's spatial-reduction attention
(:class:`SpatialReductionAttentionExtras`, :func:`override_spatial_reduction_attention`), whose fused
query-key-value projection is no module of its own.
"""
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

SUPPORTED_LAYOUTS = (
    'mmseg / mmdet / mmpretrain SwinTransformer (blocks with attn.w_msa.{qkv,proj} and ffn.layers), '
    'mmpretrain VisionTransformer (layers with attn.{qkv,proj} and ffn.layers), '
    'timm VisionTransformer (blocks with attn.{qkv,proj} and mlp.{fc1,fc2}), '
    'mmdet PyramidVisionTransformer(V2) (PVTEncoderLayer: attn = SpatialReductionAttention, ffn = MixFFN)')


# --------------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------------
@dataclass
class BlockLayout:
    """One transformer block, with the full names (relative to the backbone) of its parts.

    Attributes:
        name: the block, e.g. ``stages.1.blocks.0``, ``blocks.3`` or ``layers.2.1.4`` (PVT).
        windowed: Swin block (attention over windows of ``N = Wh*Ww`` tokens, input ``(nW*B, N, C)``)
            rather than global attention over the whole sequence (input ``(B, L, C)``).
        dims: token width ``d`` (the paper's adapter input dimension).
        attn: module computing multi-head attention from normalised tokens (``attn.w_msa`` for Swin,
            ``attn`` for plain ViTs and PVT); its output is the projected attention, before the residual
            (PVT: *with* the residual, ``SpatialReductionAttention`` adds it; a parallel branch added to
            it is the same sum).
        qkv, proj: the fused query-key-value linear ``d -> 3d`` and the output projection site, whose
            output (..., d) is the attention output before drop path and residual. PVT: ``qkv`` is None
            (the fused projection is ``in_proj_weight`` of ``in_proj``, no module) and ``proj`` is
            ``attn.proj_drop``, the dropout right after ``nn.MultiheadAttention`` (its output is the
            attention output, (B, L, d), before drop path and residual; identity in eval).
        mlp: module whose output is the MLP output (..., d) before residual / drop-path (``ffn.layers``
            of an mmcv FFN, ``mlp`` of timm). PVT: ``ffn.dropout_layer``, the MixFFN's drop path, whose
            *input* is the MLP output in (B, L, d) layout and whose output is that output after drop
            path: MixFFN has no module returning its output in token layout before drop path
            (``ffn.layers`` returns (B, d, H, W)). With ``frozen_eval`` (every PEFT method but full
            fine-tuning) the frozen drop path is in eval, i.e. the identity, so the site output is the
            MLP output exactly; with drop path active a sequential branch sees the dropped output
            and is not dropped itself.
        fc1, fc2: the MLP's two linears ``d -> 4d -> d``; None for PVT (1x1 convolutions on NCHW maps).
        family: ``'swin'``, ``'vit'`` or ``'pvt'``.
        ffn: the feed-forward sub-layer as a parallel branch sees it: its first positional argument is
            the normalised tokens (..., d), its output the MLP output (``mlp`` for Swin / ViT) or, for
            PVT, the whole ``MixFFN`` (input (B, L, d), output with the residual added).
        in_proj: PVT only: the ``nn.MultiheadAttention`` holding the fused projection
            (``in_proj_weight`` (3d, d) = [W_q; W_k; W_v], ``in_proj_bias`` (3d,)); change it through
            :meth:`~mmpeft.peft.attachment.PEFTAttachment.spatial_reduction_attention`.
        out_proj: the attention's output projection ``nn.Linear`` (``proj`` for Swin / ViT). PVT:
            ``attn.attn.out_proj``, which ``nn.MultiheadAttention`` does not call as a module: its hooks act
            only while the block's attention runs through :class:`SpatialReductionAttentionExtras`.
    """
    name: str
    windowed: bool
    dims: int
    attn: str
    qkv: Optional[str]
    proj: str
    mlp: str
    fc1: Optional[str]
    fc2: Optional[str]
    family: str = 'vit'
    ffn: str = ''
    in_proj: Optional[str] = None
    out_proj: str = ''

    def __post_init__(self) -> None:
        self.ffn = self.ffn or self.mlp
        self.out_proj = self.out_proj or self.proj

    def require(self, part: str, what: str, fix: str = '') -> str:
        """The name of ``part`` (``'qkv'``, ``'fc1'``, ``'fc2'`` ...), or a ValueError naming ``what`` needed
        it, the block and its family, and ``fix``."""
        name = getattr(self, part)
        if name:
            return name
        why = _MISSING.get((self.family, part), f'it has no {part!r}')
        raise ValueError(f'{what} needs the {part!r} linear of every block, but block {self.name!r} '
                         f'({_FAMILY_NAMES.get(self.family, self.family)}) has none: {why}.'
                         + (f' Fix: {fix}' if fix else ''))


_FAMILY_NAMES = dict(swin='Swin Transformer', vit='Vision Transformer',
                     pvt='mmdet PyramidVisionTransformer (PVT)')
_MISSING = {
    ('pvt', 'qkv'): ('its query / key / value projection is the in_proj_weight of the nn.MultiheadAttention '
                     'at attn.attn, no nn.Linear (queries read the tokens, keys and values the spatially '
                     'reduced map)'),
    ('pvt', 'fc1'): 'its MixFFN maps tokens with 1x1 convolutions on NCHW maps (ffn.layers), not nn.Linear',
    ('pvt', 'fc2'): 'its MixFFN maps tokens with 1x1 convolutions on NCHW maps (ffn.layers), not nn.Linear',
}


def _join(*parts: str) -> str:
    return '.'.join(p for p in parts if p)


def _pvt_block(where: str, name: str, m: nn.Module) -> Optional[BlockLayout]:
    """The layout of an mmdet ``PVTEncoderLayer`` (see :class:`BlockLayout`), or None if ``m`` is none."""
    attn, ffn = m.attn, getattr(m, 'ffn', None)
    mha = getattr(attn, 'attn', None)
    if not (isinstance(mha, nn.MultiheadAttention) and hasattr(attn, 'sr_ratio')):
        return None
    toolbox = [cls for cls in _spatial_reduction_classes() if type(attn) is cls or
               (isinstance(attn, SpatialReductionAttentionExtras) and type(attn).toolbox_class is cls)]
    if not toolbox:
        raise ValueError(f'{where}: attention {type(attn).__name__} at "{_join(name, "attn")}" wraps an '
                         f'nn.MultiheadAttention with spatial reduction (sr_ratio) but is not mmdet\'s PVT '
                         f'SpatialReductionAttention, whose forward this code knows. '
                         f'Supported layouts: {SUPPORTED_LAYOUTS}')
    if not (mha._qkv_same_embed_dim and mha.bias_k is None and not mha.add_zero_attn):
        raise ValueError(f'{where}: nn.MultiheadAttention at "{_join(name, "attn", "attn")}" has separate '
                         f'q / k / v weights, bias_k or add_zero_attn; PVT packs them in in_proj_weight')
    if not (isinstance(ffn, nn.Module) and isinstance(getattr(ffn, 'layers', None), nn.Sequential)
            and isinstance(getattr(ffn, 'dropout_layer', None), nn.Module)):
        raise ValueError(f'{where}: feed-forward {type(ffn).__name__} at "{_join(name, "ffn")}" is not a PVT '
                         f'MixFFN (layers + dropout_layer). Supported layouts: {SUPPORTED_LAYOUTS}')
    return BlockLayout(name=name, windowed=False, dims=mha.embed_dim, attn=_join(name, 'attn'), qkv=None,
                       proj=_join(name, 'attn', 'proj_drop'), mlp=_join(name, 'ffn', 'dropout_layer'),
                       fc1=None, fc2=None, family='pvt', ffn=_join(name, 'ffn'),
                       in_proj=_join(name, 'attn', 'attn'), out_proj=_join(name, 'attn', 'attn', 'out_proj'))


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
        pvt = _pvt_block(where, name, m)
        if pvt is not None:
            blocks.append(pvt)
            continue
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
                                  mlp=mlp_name, fc1=fc1, fc2=fc2, family='swin' if windowed else 'vit'))
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
#: a pickled model finds its class in a fresh process (module ``__getattr__`` below builds it); likewise
#: PVT's spatial-reduction attention (``MmdetSpatialReductionAttentionWithExtras``)
TOOLBOX_WINDOW_MSA = {
    'MmsegWindowMSAWithExtras': ('mmseg.models.backbones.swin', 'WindowMSA'),
    'MmdetWindowMSAWithExtras': ('mmdet.models.backbones.swin', 'WindowMSA'),
    'MmpretrainWindowMSAWithExtras': ('mmpretrain.models.utils.attention', 'WindowMSA'),
}
TOOLBOX_SPATIAL_REDUCTION = {
    'MmdetSpatialReductionAttentionWithExtras': ('mmdet.models.backbones.pvt', 'SpatialReductionAttention'),
}

_WINDOW_ATTRS = ('qkv', 'proj', 'num_heads', 'scale', 'relative_position_bias_table',
                 'relative_position_index', 'softmax', 'attn_drop', 'proj_drop')
_EXTENDED: Dict[type, type] = {}


def _extended(cls: type, mixin: Optional[type] = None) -> type:
    """``cls`` + ``mixin`` (:class:`WindowAttentionExtras` by default), one class per toolbox class, named
    after it (``MmsegWindowMSAWithExtras``) and kept in this module so that pickling finds it."""
    mixin = WindowAttentionExtras if mixin is None else mixin
    if cls not in _EXTENDED:
        name = f'{cls.__module__.split(".")[0].capitalize()}{cls.__name__}WithExtras'
        sub = type(name, (mixin, cls), dict(__module__=__name__, __qualname__=name, toolbox_class=cls))
        _EXTENDED[cls] = globals()[name] = sub
    return _EXTENDED[cls]


def __getattr__(name: str) -> type:
    """``mmpeft.peft.layout.MmsegWindowMSAWithExtras`` etc., built on first use (unpickling)."""
    import importlib
    if name in TOOLBOX_WINDOW_MSA:
        module, cls = TOOLBOX_WINDOW_MSA[name]
        return _extended(getattr(importlib.import_module(module), cls))
    if name in TOOLBOX_SPATIAL_REDUCTION:
        module, cls = TOOLBOX_SPATIAL_REDUCTION[name]
        return _extended(getattr(importlib.import_module(module), cls), SpatialReductionAttentionExtras)
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
    """Undo :func:`override_window_attention` or :func:`override_spatial_reduction_attention`."""
    if isinstance(w_msa, (WindowAttentionExtras, SpatialReductionAttentionExtras)):
        w_msa.__class__ = type(w_msa).toolbox_class
    for key in ('peft_extra_kv', 'peft_table', 'peft_in_proj'):
        w_msa.__dict__.pop(key, None)


# --------------------------------------------------------------------------------------------------
# PVT spatial-reduction attention with a changed query / key / value projection
# --------------------------------------------------------------------------------------------------
class SpatialReductionAttentionExtras:
    """Mixin of mmdet's PVT ``SpatialReductionAttention`` whose fused projection can be changed by injected
    modules; :func:`override_spatial_reduction_attention` makes an attention an instance of
    ``<its class> + this mixin``.

    ``nn.MultiheadAttention`` uses ``in_proj_weight`` and ``out_proj.weight`` inside one functional call,
    so no module hook sees the query / key / value or the output projection. This forward is the same
    computation written out, step by step as torch's ``F.multi_head_attention_forward`` takes it for
    PVT's call (sequence-first tensors, key is value, attention weights materialised), so that it gives
    the toolbox's output bit for bit when nothing changes it, plus two points of entry:

    - ``peft_in_proj``: callables ``fn(x_q, x_kv, q, k, v) -> (q, k, v)`` (or None: unchanged), applied
      in order to the projected queries ``q = x_q W_q^T + b_q`` (L, B, d) and keys / values
      ``k, v = x_kv W_{k,v}^T + b_{k,v}`` (S, B, d), where ``x_q`` (L, B, d) are the normalised tokens
      and ``x_kv`` (S, B, d) the spatially reduced ones (``x_kv is x_q`` when ``sr_ratio == 1``);
    - ``attn.attn.out_proj`` is called as a module, so its forward hooks act (LoRA on ``proj``, task-wise
      biases).
    """

    peft_in_proj: Tuple[Callable, ...] = ()

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int],
                identity: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: normalised tokens (B, L, d), ``hw_shape`` = (H, W) with H*W = L; returns
        ``identity + drop_path(proj_drop(attention))`` (B, L, d), ``identity`` = x by default."""
        from mmdet.models.layers import nchw_to_nlc, nlc_to_nchw
        x_q = x
        if self.sr_ratio > 1:
            x_kv = self.norm(nchw_to_nlc(self.sr(nlc_to_nchw(x, hw_shape))))
        else:
            x_kv = x
        if identity is None:
            identity = x_q
        if self.batch_first:  # two transposes, two tensors: as the toolbox, the split projection path
            x_q = x_q.transpose(0, 1)
            x_kv = x_kv.transpose(0, 1)
        out = _multi_head_attention(self.attn, x_q, x_kv, self.peft_in_proj)
        if self.batch_first:
            out = out.transpose(0, 1)
        return identity + self.dropout_layer(self.proj_drop(out))


def _split_packed(proj: torch.Tensor, n: int, E: int) -> Tuple[torch.Tensor, ...]:
    """(S, B, n*E) -> n contiguous (S, B, E), as torch's packed in-projection splits them."""
    proj = proj.unflatten(-1, (n, E)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
    return tuple(proj[i] for i in range(n))


def _multi_head_attention(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                          in_proj: Sequence[Callable]) -> torch.Tensor:
    """``mha(query, key, key)[0]`` for sequence-first ``query`` (L, B, E) and ``key`` (S, B, E), written
    out (the ``need_weights=True`` path of ``F.multi_head_attention_forward``, which PVT's call takes),
    with the projected q / k / v passed through ``in_proj`` and ``mha.out_proj`` called as a module."""
    E, h = mha.embed_dim, mha.num_heads
    hd = E // h
    w, b = mha.in_proj_weight, mha.in_proj_bias
    if key is query:
        q, k, v = _split_packed(F.linear(query, w, b), 3, E)
    else:
        w_q, w_kv = w.split([E, E * 2])
        b_q, b_kv = b.split([E, E * 2]) if b is not None else (None, None)
        q = F.linear(query, w_q, b_q)
        k, v = _split_packed(F.linear(key, w_kv, b_kv), 2, E)
    for fn in in_proj:
        changed = fn(query, key, q, k, v)
        if changed is not None:
            q, k, v = changed
    L, B, _ = query.shape
    q = q.reshape(L, B * h, hd).transpose(0, 1)
    k = k.reshape(k.shape[0], B * h, hd).transpose(0, 1)
    v = v.reshape(v.shape[0], B * h, hd).transpose(0, 1)
    weights = F.softmax(torch.bmm(q * math.sqrt(1.0 / float(hd)), k.transpose(-2, -1)), dim=-1)
    if mha.training and mha.dropout > 0.0:
        weights = F.dropout(weights, p=mha.dropout)
    out = torch.bmm(weights, v).transpose(0, 1).reshape(L * B, E)
    return mha.out_proj(out).view(L, B, E)


class InProjectionDelta:
    """``fn(x_q, x_kv, q, k, v)`` for :class:`SpatialReductionAttentionExtras` adding ``delta(x)`` to the
    rows ``rows = (lo, hi)`` of the fused projection ``[q; k; v]`` (3d outputs): ``delta`` maps the
    projection's input (..., d) to (..., hi - lo) (a LoRA branch ``s B A x``) or returns a (hi - lo,)
    vector (a task-wise bias); query rows read ``x_q``, key / value rows ``x_kv``. A plain object (not a
    closure): ``copy.deepcopy`` and pickling carry it with the model.

    Args:
        delta: a bound method of the injected module computing the change.
        rows: the rows of ``in_proj_weight`` (3d, d) it changes, e.g. (0, 3d) all, (2d, 3d) the values.
        dims: d.
    """

    def __init__(self, delta: Callable, rows: Tuple[int, int], dims: int):
        lo, hi = rows
        if not 0 <= lo < hi <= 3 * dims:
            raise ValueError(f'rows {rows} are not within the 3d = {3 * dims} rows of the fused projection')
        self.delta, self.rows, self.dims = delta, (lo, hi), dims

    def __call__(self, x_q: torch.Tensor, x_kv: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor):
        d, (lo, hi) = self.dims, self.rows
        out = [q, k, v]
        for x, parts in ((x_q, (0,)), (x_kv, (1, 2))):
            parts = [i for i in parts if lo < (i + 1) * d and hi > i * d]  # q / k / v blocks the rows touch
            if not parts:
                continue
            delta = self.delta(x)
            for i in parts:
                a, z = max(lo, i * d), min(hi, (i + 1) * d)  # rows of block i changed, within [lo, hi)
                piece = delta[..., a - lo:z - lo]
                if (a, z) == (i * d, (i + 1) * d):
                    out[i] = out[i] + piece
                else:
                    pad = (a - i * d, (i + 1) * d - z)
                    out[i] = out[i] + F.pad(piece, pad)
        return tuple(out)

    def __repr__(self) -> str:
        return f'InProjectionDelta({getattr(self.delta, "__qualname__", self.delta)}, rows={self.rows})'


def _spatial_reduction_classes() -> List[type]:
    """The toolbox classes :class:`SpatialReductionAttentionExtras` extends (those importable here)."""
    import importlib
    out = []
    for module, cls in TOOLBOX_SPATIAL_REDUCTION.values():
        try:
            out.append(getattr(importlib.import_module(module), cls))
        except ImportError:
            continue
    return out


def override_spatial_reduction_attention(sra: nn.Module, in_proj: Optional[Callable] = None) -> None:
    """Make the PVT ``SpatialReductionAttention`` ``sra`` an instance of its class +
    :class:`SpatialReductionAttentionExtras` (parameters, buffers and keys untouched), appending ``in_proj``
    (a callable of an injected module, see there) to its changes of the projection. Several calls stack.
    :func:`restore_window_attention` gives it its class back."""
    if not isinstance(sra, SpatialReductionAttentionExtras):
        if type(sra) not in _spatial_reduction_classes():
            raise ValueError(f'{type(sra).__name__} is not mmdet\'s PVT SpatialReductionAttention. '
                             f'Supported layouts: {SUPPORTED_LAYOUTS}')
        sra.__class__ = _extended(type(sra), SpatialReductionAttentionExtras)
    if in_proj is not None:
        sra.peft_in_proj = tuple(sra.__dict__.get('peft_in_proj', ())) + (in_proj,)


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
