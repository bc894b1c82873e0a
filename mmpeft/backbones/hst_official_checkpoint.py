"""Checkpoints of the HST authors' released classification model (``ViT_HSN``) in mmpeft's layout.

The authors' training script saves the whole ``ViT_HSN`` state dict (timm ViT keys at the top level
beside the HST modules). :func:`convert_hst_official` renames it, key by key, to an mmpretrain
``ImageClassifier`` whose backbone is :class:`~mmpeft.backbones.HSTViT` (``out_type='pooled'``) and
whose head is ``LinearClsHead``. ``i`` is the ViT layer (0-based), ``j`` the side stage (1-4),
``b`` the block inside stage ``j`` (0-based)::

    released key                                    mmpeft key (inside the backbone)
    cls_token, pos_embed, patch_embed.proj.*,       vit.<same key>
      blocks.i.*, norm.*
    m_embeddings.i            (1, N, D) each        meta_tokens (L, N, D): concatenated in layer order
    T_Bridge_j.*                                    bridge.linears.{j-1}.*
    m_proj_norm{i+1}.*        (1-based)             bridge.register_norms.{i}.*
    m_patch_embed1.conv.0.weight                    side_network.stem.conv1.weight
    m_patch_embed1.conv.1.*   (BatchNorm2d)         side_network.stem.norm1.*
    m_patch_embed1.conv.3.*                         side_network.stem.conv2.*
    m_patch_embed1.norm.*                           side_network.stem.norm2.*
    m_patch_embed{j}.{proj,norm}.*  (j = 2, 3, 4)   side_network.downsamples.{j-2}.{proj,norm}.*
    m_block{j}.{b}.*                                side_network.stages.{j-1}.{b}.*
    m_norm{j}.*                                     side_network.norms.{j-1}.*
    fc_norm.{running_mean,running_var,              fc_norm.*
      num_batches_tracked}  (affine-free BN1d)
    head.{weight,bias}                              (outside the backbone) head.fc.* of LinearClsHead

Every source key is used exactly once; a key no rule matches, or a key the structure read off the
other keys implies but the dict lacks (a block's ``attn.k.bias``, ``m_block2.1`` when ``m_block2.2``
exists, an ``m_proj_norm`` per ViT layer ...), is a ``ValueError`` naming the keys. ``fc_norm`` and
``head`` are optional as groups (a dict without a classifier converts to a backbone), but complete
when present.

``tools/model_converters/hst_official_to_mmpeft.py`` converts a file and checks it against a config.
"""
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

NUM_STAGES = 4
WB = ('weight', 'bias')
BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
BN_STATS = ('running_mean', 'running_var', 'num_batches_tracked')  # an affine-free BatchNorm
VIT_BLOCK_PARTS = ('norm1', 'attn.qkv', 'attn.proj', 'norm2', 'mlp.fc1', 'mlp.fc2')
SIDE_BLOCK_PARTS = ('norm1', 'attn.q', 'attn.k', 'attn.v', 'attn.proj', 'norm2', 'mlp.fc1', 'mlp.fc2')

EXPECTED_LAYOUT = (
    "the HST authors' ViT_HSN state dict: timm ViT keys (cls_token, pos_embed, patch_embed.proj.*, "
    'blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*, norm.*), m_embeddings.<i>, '
    'm_patch_embed1.{conv.0,conv.1,conv.3,norm}.*, m_patch_embed{2,3,4}.{proj,norm}.*, '
    'm_block{1-4}.<b>.{norm1,attn.q,attn.k,attn.v,attn.proj,norm2,mlp.fc1,mlp.fc2}.*, m_norm{1-4}.*, '
    'm_proj_norm<i+1>.*, T_Bridge_{1-4}.*, and optionally fc_norm.{running_mean,running_var,'
    'num_batches_tracked} and head.{weight,bias}')

_META = re.compile(r'^m_embeddings\.(\d+)$')


def _preview(keys: Iterable[str], n: int = 10) -> str:
    keys = sorted(keys)
    return ', '.join(keys[:n]) + (f' ... ({len(keys)} in all)' if len(keys) > n else f' ({len(keys)})')


def is_hst_official(state_dict: Mapping[str, object]) -> bool:
    """Whether ``state_dict`` is in the released layout (it has ``m_patch_embed1.*`` and ``T_Bridge_1.*``)."""
    keys = [k for k in state_dict if isinstance(k, str)]
    return (any(k.startswith('m_patch_embed1.') for k in keys)
            and any(k.startswith('T_Bridge_1.') for k in keys))


def _indices(keys: Iterable[str], pattern: str) -> List[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys for m in [rx.match(k)] if m})


def _check_contiguous(found: Sequence[int], first: int, name: str) -> List[str]:
    """Problems of an index set that must be ``first, first + 1, ...`` without gaps (``name`` has ``{}``)."""
    if not found:
        return []
    gaps = sorted(set(range(first, found[-1] + 1)) - set(found))
    if found[0] < first:
        return [f'{name.format(found[0])} (indices start at {first})']
    if gaps:
        return [f'{", ".join(name.format(g) for g in gaps)} (the dict has {name.format(found[-1])}, so the '
                f'indices {first}..{found[-1]} must all be there)']
    return []


def _structure(state_dict: Mapping[str, torch.Tensor]) -> Tuple[int, List[int], List[str]]:
    """``(L, stage depths, problems)`` read off the key names: L ViT layers (``blocks.<i>``)."""
    keys = list(state_dict)
    problems: List[str] = []
    layers = _indices(keys, r'^blocks\.(\d+)\.')
    problems += _check_contiguous(layers, 0, 'blocks.{}')
    n_layers = layers[-1] + 1 if layers else 0
    if not n_layers:
        problems.append('blocks.<i>.* (no ViT blocks)')
    depths = []
    for j in range(1, NUM_STAGES + 1):
        blocks = _indices(keys, rf'^m_block{j}\.(\d+)\.')
        problems += _check_contiguous(blocks, 0, f'm_block{j}.{{}}')
        if not blocks:
            problems.append(f'm_block{j}.<b>.* (stage {j} has no side blocks)')
        depths.append(blocks[-1] + 1 if blocks else 0)
    metas = _indices(keys, _META.pattern)
    problems += _check_contiguous(metas, 0, 'm_embeddings.{}')
    norms = _indices(keys, r'^m_proj_norm(\d+)\.')
    problems += _check_contiguous(norms, 1, 'm_proj_norm{}')
    if n_layers:
        if not metas:
            problems.append(f'm_embeddings.0 ... m_embeddings.{n_layers - 1} (the Meta-Register tokens, '
                            f'one per ViT layer)')
        elif metas[-1] + 1 != n_layers:
            problems.append(f'm_embeddings: {metas[-1] + 1} tokens for {n_layers} ViT layers (blocks.*); '
                            f'the released model has one per layer')
        if not norms:
            problems.append(f'm_proj_norm1 ... m_proj_norm{n_layers} (a LayerNorm per ViT layer)')
        elif norms[-1] != n_layers:
            problems.append(f'm_proj_norm: {norms[-1]} LayerNorms (m_proj_norm1..{norms[-1]}) for {n_layers} '
                            f'ViT layers (blocks.*); the released model has one per layer')
        if all(depths) and sum(depths) != n_layers:
            problems.append(f'side blocks per stage {depths} sum to {sum(depths)}, not to the {n_layers} ViT '
                            f'layers (blocks.*) that feed them one each')
    return n_layers, depths, problems


def _rename_table(n_layers: int, depths: Sequence[int], fc_norm: bool,
                  head: bool) -> 'OrderedDict[str, Tuple[str, str]]':
    """Released key -> ``('backbone', key inside HSTViT)`` or ``('head', key inside LinearClsHead.fc)``.

    ``m_embeddings.*`` are not in the table (they are concatenated, not renamed).
    """
    t: Dict[str, str] = OrderedDict()  # backbone-relative names
    for k in ('cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias'):
        t[k] = 'vit.' + k
    for i in range(n_layers):
        for part in VIT_BLOCK_PARTS:
            for p in WB:
                t[f'blocks.{i}.{part}.{p}'] = f'vit.blocks.{i}.{part}.{p}'
    for p in WB:
        t[f'norm.{p}'] = f'vit.norm.{p}'
    for j in range(1, NUM_STAGES + 1):
        for p in WB:
            t[f'T_Bridge_{j}.{p}'] = f'bridge.linears.{j - 1}.{p}'
    for i in range(n_layers):
        for p in WB:
            t[f'm_proj_norm{i + 1}.{p}'] = f'bridge.register_norms.{i}.{p}'
    stem = 'side_network.stem.'
    t['m_patch_embed1.conv.0.weight'] = stem + 'conv1.weight'
    for p in BN_KEYS:
        t[f'm_patch_embed1.conv.1.{p}'] = stem + f'norm1.{p}'
    for p in WB:
        t[f'm_patch_embed1.conv.3.{p}'] = stem + f'conv2.{p}'
    for p in WB:
        t[f'm_patch_embed1.norm.{p}'] = stem + f'norm2.{p}'
    for j in range(2, NUM_STAGES + 1):
        for part in ('proj', 'norm'):
            for p in WB:
                t[f'm_patch_embed{j}.{part}.{p}'] = f'side_network.downsamples.{j - 2}.{part}.{p}'
    for j in range(1, NUM_STAGES + 1):
        for b in range(depths[j - 1]):
            for part in SIDE_BLOCK_PARTS:
                for p in WB:
                    t[f'm_block{j}.{b}.{part}.{p}'] = f'side_network.stages.{j - 1}.{b}.{part}.{p}'
        for p in WB:
            t[f'm_norm{j}.{p}'] = f'side_network.norms.{j - 1}.{p}'
    if fc_norm:
        for p in BN_STATS:
            t[f'fc_norm.{p}'] = f'fc_norm.{p}'
    table = OrderedDict((k, ('backbone', v)) for k, v in t.items())
    if head:
        for p in WB:
            table[f'head.{p}'] = ('head', p)
    return table


def _meta_tokens(state_dict: Mapping[str, torch.Tensor], n_layers: int) -> torch.Tensor:
    """``m_embeddings.0 .. L-1`` (each ``(1, N, D)``) -> ``(L, N, D)``."""
    tokens = [state_dict[f'm_embeddings.{i}'] for i in range(n_layers)]
    shape = tuple(tokens[0].shape)
    bad = [f'm_embeddings.{i} {tuple(t.shape)}' for i, t in enumerate(tokens)
           if t.dim() != 3 or t.shape[0] != 1 or tuple(t.shape) != shape]
    if bad:
        raise ValueError(f'Meta-Register tokens must all be (1, N, D) of one shape (the released model has '
                         f'(1, 1, D)); got {", ".join(bad[:10])}' + (f' (m_embeddings.0 is {shape})'
                                                                       if len(bad) < len(tokens) else ''))
    return torch.cat(tokens, dim=0)


def convert_hst_official(state_dict: Mapping[str, torch.Tensor], backbone_prefix: str = 'backbone.',
                         head_prefix: Optional[str] = 'head.fc.') -> Dict[str, torch.Tensor]:
    """Released ``ViT_HSN`` state dict -> mmpeft keys (see the module docstring for the table).

    Args:
        state_dict: the released model's state dict (unwrap a loaded file with
            :func:`mmpeft.utils.delta.state_dict_of` first).
        backbone_prefix: put before every backbone key: ``'backbone.'`` for an mmpretrain
            ``ImageClassifier``, ``''`` for ``HSTViT`` itself.
        head_prefix: where the classifier ``head.{weight,bias}`` go (``'head.fc.'``: mmpretrain's
            ``LinearClsHead``). ``None``: a backbone-only conversion; ``head.*``, and nothing else, is
            left out.

    Returns:
        a new dict; the tensors are the source's (not copied) except ``meta_tokens``, a new
        ``(L, N, D)`` tensor.

    Raises:
        ValueError: naming the keys no rule uses, the keys the structure requires but the dict lacks,
            or Meta-Register tokens of unequal shapes.
    """
    keys = list(state_dict)
    non_str = [repr(k) for k in keys if not isinstance(k, str)]
    if non_str:
        raise ValueError(f'state dict keys must be strings; got {", ".join(non_str[:10])}')
    n_layers, depths, problems = _structure(state_dict)
    fc_norm = any(k.startswith('fc_norm.') for k in keys)
    has_head = any(k.startswith('head.') for k in keys)
    table = _rename_table(n_layers, depths, fc_norm, has_head)
    metas = [k for k in keys if _META.match(k)]
    leftover = [k for k in keys if k not in table and k not in metas]
    missing = [k for k in table if k not in state_dict]
    if leftover or missing or problems:
        parts = []
        if leftover:
            parts.append(f'keys that no rule of the released layout uses: {_preview(leftover)}')
        if problems or missing:
            what = problems + ([_preview(missing)] if missing else [])
            parts.append(f'missing: {"; ".join(what)}')
        raise ValueError('convert_hst_official: not a complete state dict of the HST released model (ViT_HSN): '
                         + '. '.join(parts) + f'. Expected {EXPECTED_LAYOUT}.')

    out: Dict[str, torch.Tensor] = OrderedDict()
    out[backbone_prefix + 'meta_tokens'] = _meta_tokens(state_dict, n_layers)
    for src, (part, dst) in table.items():
        if part == 'backbone':
            out[backbone_prefix + dst] = state_dict[src]
        elif head_prefix is not None:  # None: the head is left out on purpose
            out[head_prefix + dst] = state_dict[src]
    return out


def hst_official_config_hints(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The architecture read off the released tensors, to compare with a config.

    Returns a dict with ``vit_depth`` (L), ``vit_embed_dim`` (D), ``vit_patch_size``, ``vit_img_size``
    (the grid of ``pos_embed`` times the patch; None if not square), ``embed_dims`` (``d_j``),
    ``depths`` (side blocks per stage), ``num_meta_tokens`` (N), ``mlp_ratio`` (side FFN ratio) and
    ``num_classes`` (None without ``head``). The numbers of attention heads are not in the tensors.

    Raises:
        ValueError: when ``state_dict`` is not in the released layout (see :func:`is_hst_official`).
    """
    if not is_hst_official(state_dict):
        raise ValueError(f'not an HST released (ViT_HSN) state dict: no m_patch_embed1.* / T_Bridge_1.* keys; '
                         f'expected {EXPECTED_LAYOUT}')
    keys = list(state_dict)

    def shape(key: str, dim: int) -> Optional[int]:
        t = state_dict.get(key)
        if not isinstance(t, torch.Tensor) or not -t.dim() <= dim < t.dim():
            return None
        return int(t.shape[dim])

    layers = _indices(keys, r'^blocks\.(\d+)\.')
    patch = shape('patch_embed.proj.weight', -1)
    img_size = None
    pos = state_dict.get('pos_embed')
    if isinstance(pos, torch.Tensor) and pos.dim() == 3 and patch:
        side = int(round((pos.shape[1] - 1) ** 0.5))  # minus the class token
        img_size = side * patch if side * side == pos.shape[1] - 1 else None
    embed_dims = [shape(f'm_norm{j}.weight', 0) for j in range(1, NUM_STAGES + 1)]
    depths = [len(_indices(keys, rf'^m_block{j}\.(\d+)\.')) for j in range(1, NUM_STAGES + 1)]
    fc1, d1 = shape('m_block1.0.mlp.fc1.weight', 0), embed_dims[0]
    return dict(
        vit_depth=layers[-1] + 1 if layers else 0,
        vit_embed_dim=shape('cls_token', -1) or shape('patch_embed.proj.weight', 0),
        vit_patch_size=patch,
        vit_img_size=img_size,
        embed_dims=embed_dims,
        depths=depths,
        num_meta_tokens=shape('m_embeddings.0', -2),
        mlp_ratio=fc1 / d1 if fc1 and d1 else None,
        num_classes=shape('head.weight', 0),
    )


def format_config_hints(hints: Mapping[str, object]) -> str:
    """:func:`hst_official_config_hints` as the config settings they correspond to (for printing)."""
    d4 = hints['embed_dims'][-1]
    return '\n'.join([
        'architecture of the checkpoint (compare with your config):',
        f"  backbone=dict(type='HSTViT', vit_kwargs=dict(depth={hints['vit_depth']}, "
        f"embed_dim={hints['vit_embed_dim']}, patch_size={hints['vit_patch_size']}, "
        f"img_size={hints['vit_img_size']}),",
        f"                embed_dims={hints['embed_dims']}, depths={hints['depths']}, "
        f"num_meta_tokens={hints['num_meta_tokens']}, mlp_ratio={hints['mlp_ratio']}, out_type='pooled')",
        f"  head=dict(type='LinearClsHead', num_classes={hints['num_classes']}, in_channels={d4})",
    ])
