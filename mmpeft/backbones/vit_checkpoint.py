"""Loading a plain ViT's weights from the checkpoint layouts users have, into a timm ViT.

Supported layouts (``layout='auto'`` tells them apart by their keys):

``timm``
    timm's own files, e.g. the ImageNet-21k ``jx_vit_base_patch16_224_in21k-e5005f0a.pth`` (keys
    ``patch_embed.proj.*``, ``blocks.<i>.*``, ``norm.*``, plus ``pre_logits.fc.*`` and a 21843-class
    ``head.*`` that are not used), a bare state dict or one under ``state_dict``.
``mae``
    MAE's ``mae_pretrain_vit_base.pth``: timm keys under ``model`` (a full MAE pre-training state
    with ``decoder_*`` / ``mask_token`` keys is also accepted; those are not used).
``mmpretrain``
    mmpretrain's ``VisionTransformer`` (``patch_embed.projection.*``, ``layers.<i>.ln1``,
    ``attn.qkv``, ``ffn.layers.0.0`` ...), bare or as a classifier checkpoint (``state_dict`` with
    ``backbone.`` / ``head.`` prefixes). :func:`mmpretrain_to_timm` converts the keys.
``mmseg``
    mmseg's ``VisionTransformer`` (``layers.<i>.attn.attn.in_proj_weight`` ...), also converted.

Keys the ViT trunk does not use (classifier ``head``, ``pre_logits``, ``fc_norm``, MAE decoder, the
other parts of a toolbox checkpoint) are *dropped explicitly* and listed in the log; any other
missing or unexpected key is an error naming the keys. A position embedding pretrained at another grid
is resampled (bicubic) to the model's grid, and the log says so.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..utils.checkpoint_io import unwrap_checkpoint

LAYOUTS = ('auto', 'timm', 'mae', 'mmpretrain', 'mmseg')

# (prefix, why) of checkpoint keys that a headless ViT trunk does not use
UNUSED_PREFIXES: Tuple[Tuple[str, str], ...] = (
    ('head.', 'classifier head'),
    ('head_dist.', 'distillation head'),
    ('pre_logits.', 'pre-logits layer of the in21k classifier'),
    ('fc_norm.', 'norm of the pooled feature (classifier)'),
    ('attn_pool.', 'attention-pooling classifier'),
    ('decoder', 'MAE decoder'),
    ('mask_token', 'MAE mask token'),
)

_MMPRETRAIN_RULES = (
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
    (r'^layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
    (r'^layers\.(\d+)\.attn\.qkv\.', r'blocks.\1.attn.qkv.'),
    (r'^layers\.(\d+)\.attn\.proj\.', r'blocks.\1.attn.proj.'),
    (r'^layers\.(\d+)\.attn\.gamma1\.weight$', r'blocks.\1.ls1.gamma'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^layers\.(\d+)\.ffn\.gamma2\.weight$', r'blocks.\1.ls2.gamma'),
    (r'^pre_norm\.', 'norm_pre.'),
    (r'^ln1\.', 'norm.'),          # final norm (final_norm=True)
    (r'^ln2\.', 'fc_norm.'),       # norm of the averaged feature map (out_type='avg_featmap')
    (r'^(cls_token|pos_embed)$', r'\1'),
)

_MMSEG_RULES = (
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
    (r'^layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
    (r'^layers\.(\d+)\.attn\.attn\.in_proj_weight$', r'blocks.\1.attn.qkv.weight'),
    (r'^layers\.(\d+)\.attn\.attn\.in_proj_bias$', r'blocks.\1.attn.qkv.bias'),
    (r'^layers\.(\d+)\.attn\.attn\.out_proj\.', r'blocks.\1.attn.proj.'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^ln1\.', 'norm.'),
    (r'^(cls_token|pos_embed)$', r'\1'),
)


def _sample(keys: List[str], n: int = 12) -> str:
    keys = sorted(keys)
    return ', '.join(keys[:n]) + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def _convert(state: Dict[str, torch.Tensor], rules, layout: str) -> 'OrderedDict[str, torch.Tensor]':
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    unknown = []
    for k, v in state.items():
        for pat, rep in rules:
            if re.match(pat, k):
                out[re.sub(pat, rep, k)] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise KeyError(f'{layout} ViT checkpoint has keys with no timm equivalent: {_sample(unknown)}')
    return out


def mmpretrain_to_timm(state: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Rename an mmpretrain ``VisionTransformer`` state dict (no ``backbone.`` prefix) to timm keys.

    Tensors are unchanged: both libraries store ``qkv`` as one ``(3D, D)`` linear in q, k, v order,
    the MLP as ``fc1`` / ``fc2`` and the position embedding as ``(1, 1 + h*w, D)``.
    """
    return _convert(state, _MMPRETRAIN_RULES, 'mmpretrain')


def mmseg_to_timm(state: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Rename an mmseg ``VisionTransformer`` state dict (``nn.MultiheadAttention`` based) to timm keys."""
    return _convert(state, _MMSEG_RULES, 'mmseg')


def detect_layout(state: Dict[str, torch.Tensor], container: str = 'root') -> str:
    keys = list(state)
    if any(k.startswith('blocks.') for k in keys):
        return 'mae' if container == 'model' else 'timm'
    if any(re.match(r'layers\.\d+\.attn\.attn\.in_proj_weight', k) for k in keys):
        return 'mmseg'
    if any(k.startswith('layers.') for k in keys) and 'patch_embed.projection.weight' in state:
        return 'mmpretrain'
    raise KeyError(f'cannot tell the layout of this ViT checkpoint (expected timm / MAE '
                   f'"blocks.<i>." or mmpretrain / mmseg "layers.<i>." keys); keys: {_sample(keys)}')


def to_timm_state(ckpt: dict, layout: str = 'auto', source: str = 'checkpoint',
                  prefix: Optional[str] = None) -> Tuple['OrderedDict[str, torch.Tensor]', str, List[str]]:
    """Unwrap and convert a checkpoint object to timm keys.

    Returns ``(state, layout, dropped)`` with ``dropped`` the non-backbone keys left out.
    """
    if layout not in LAYOUTS:
        raise ValueError(f'checkpoint layout {layout!r} is not one of {LAYOUTS}')
    state, container, dropped = unwrap_checkpoint(ckpt, source, prefix)
    found = detect_layout(state, container)
    if layout == 'auto':
        layout = found
    elif {layout, found} - {'timm', 'mae'} and layout != found:
        raise ValueError(f'{source}: layout {layout!r} was asked for but the keys are {found!r}')
    if layout == 'mmpretrain':
        state = mmpretrain_to_timm(state)
    elif layout == 'mmseg':
        state = mmseg_to_timm(state)
    return OrderedDict(state), layout, dropped


def _resample_pos_embed(vit: nn.Module, posemb: torch.Tensor) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed
    target = vit.pos_embed
    prefix = 0 if getattr(vit, 'no_embed_class', False) else vit.num_prefix_tokens
    n_old = posemb.shape[1] - prefix
    side = int(round(n_old ** 0.5))
    if side * side != n_old or posemb.shape[-1] != target.shape[-1]:
        raise ValueError(f'pos_embed of shape {tuple(posemb.shape)} cannot be resampled to '
                         f'{tuple(target.shape)}')
    return resample_abs_pos_embed(posemb, new_size=list(vit.patch_embed.grid_size),
                                  old_size=[side, side], num_prefix_tokens=prefix)


def load_vit_weights(vit: nn.Module, checkpoint: Union[str, dict], layout: str = 'auto',
                     prefix: Optional[str] = None, map_location: str = 'cpu',
                     logger: Optional[str] = 'current') -> Dict[str, object]:
    """Load a timm ViT's weights from a local file (or a loaded checkpoint dict), strictly.

    Args:
        vit: a timm ViT built by :func:`mmpeft.backbones.timm_vit.build_timm_vit`.
        checkpoint: path (anything mmengine's ``CheckpointLoader`` reads) or a checkpoint dict.
        layout: one of ``LAYOUTS``; ``'auto'`` detects it from the keys.
        prefix: the ViT's key prefix in a bigger checkpoint (``backbone.`` is found without it).

    Returns:
        A report: ``layout``, ``loaded`` (number of tensors), ``dropped`` (keys not used, with why).

    Raises:
        KeyError: naming every missing and unexpected key (after the documented drops).
        ValueError: naming every key whose shape does not fit.
    """
    source = checkpoint if isinstance(checkpoint, str) else 'checkpoint dict'
    if isinstance(checkpoint, str):
        from mmengine.runner.checkpoint import CheckpointLoader
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location, logger=logger)
    else:
        ckpt = checkpoint
    state, layout, other_parts = to_timm_state(ckpt, layout, str(source), prefix)
    # modules a PEFT method injected are new, not missing from the checkpoint
    from ..peft.attachment import injected_state_keys
    injected = set(injected_state_keys(vit))
    own = {k: v for k, v in vit.state_dict().items() if k not in injected}

    dropped: Dict[str, str] = {k: 'not part of the backbone' for k in other_parts}
    for k in list(state):
        if k in own:
            continue
        for prefix, why in UNUSED_PREFIXES:
            if k.startswith(prefix):
                dropped[k] = why
                del state[k]
                break

    if layout == 'mmseg' and 'patch_embed.proj.bias' in own and 'patch_embed.proj.bias' not in state:
        # mmseg's ViT defaults to patch_bias=False: no bias is exactly a zero bias
        state['patch_embed.proj.bias'] = torch.zeros_like(own['patch_embed.proj.bias'])
        print_log(f'ViT checkpoint {source}: mmseg ViT without patch-embedding bias, '
                  'patch_embed.proj.bias set to zeros', logger=logger)

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        msg = [f'ViT checkpoint {source} ({layout} layout) does not fit '
               f'{type(vit).__name__} with {len(vit.blocks)} blocks of width {vit.embed_dim}:']
        if missing:
            msg.append(f'missing keys: {_sample(missing)}')
        if unexpected:
            msg.append(f'unexpected keys: {_sample(unexpected)}')
        raise KeyError(' '.join(msg))

    # a position embedding of another grid (same width) is resampled; any other shape is an error
    resample = ('pos_embed' in state and state['pos_embed'].shape != own['pos_embed'].shape
                and state['pos_embed'].shape[-1] == own['pos_embed'].shape[-1])
    bad = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
           for k, v in state.items() if v.shape != own[k].shape and not (resample and k == 'pos_embed')]
    if bad:
        raise ValueError(f'ViT checkpoint {source}: shapes do not fit: ' + '; '.join(bad[:12])
                         + (f' ({len(bad)} in all)' if len(bad) > 12 else ''))
    if resample:
        old = tuple(state['pos_embed'].shape)
        state['pos_embed'] = _resample_pos_embed(vit, state['pos_embed'])
        print_log(f'pos_embed resampled from {old} to {tuple(own["pos_embed"].shape)}', logger=logger)

    result = vit.load_state_dict(state, strict=False)
    # strictness over the ViT's own keys was checked above; only injected keys may stay unloaded
    assert not result.unexpected_keys and set(result.missing_keys) <= injected, result
    if dropped:
        whys = sorted(set(dropped.values()))
        print_log(f'ViT checkpoint {source}: {len(dropped)} keys not used by the backbone were '
                  f'dropped ({"; ".join(whys)}): {_sample(list(dropped), 8)}', logger=logger)
    print_log(f'ViT checkpoint {source}: loaded {len(state)} tensors ({layout} layout)', logger=logger)
    return dict(layout=layout, loaded=len(state), dropped=dropped)
