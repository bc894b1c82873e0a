"""A plain timm ViT as the frozen trunk of a side-tuned or pyramid backbone.

The ViT is built by name with ``timm.create_model(name, pretrained=False)`` (weights come later from a
local checkpoint, see :mod:`mmpeft.backbones.vit_checkpoint`), without a classifier (``num_classes=0``,
``global_pool=''`` where the model allows it) and with ``dynamic_img_size=True``, so timm resamples the position
embedding to
the token grid of every input (bicubic, from the grid it was pretrained at).

:func:`vit_layer_outputs` runs the embedding and the blocks and returns what every layer produced,
optionally with *register tokens* (HST's Meta-Register) appended to each layer's input sequence;
:func:`vit_layer_sequences` returns the same as each layer's whole output sequence.
"""
import difflib
import math
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

# keyword arguments that would change what the trunk *is*; set here, not by the user
_FIXED_KWARGS = ('pretrained', 'num_classes', 'global_pool', 'dynamic_img_size')


def build_timm_vit(name: str, **kwargs) -> nn.Module:
    """A timm plain ViT without head, resampling its position embedding to any input size.

    Args:
        name: a timm model name (``'vit_base_patch16_224'``, ``'vit_large_patch16_224'``,
            ``'deit_small_patch16_224'``, ``'vit_base_patch14_reg4_dinov2'`` ...). A pretrained tag
            (``'vit_base_patch16_224.augreg_in21k'``) is accepted; nothing is downloaded.
        **kwargs: passed to ``timm.create_model`` and overriding the named architecture (e.g.
            ``depth=4, embed_dim=64, num_heads=2`` for a small test model, ``drop_path_rate``).

    Returns:
        The timm ``VisionTransformer`` (keys ``patch_embed.*``, ``cls_token``, ``pos_embed``,
        ``blocks.<i>.*``, ``norm.*`` as in timm checkpoints).

    Raises:
        ValueError: ``name`` is not a timm model (with close names), the model is not a plain ViT of
            timm's ``VisionTransformer`` family (no ``blocks`` of single-input transformer blocks,
            e.g. EVA / BEiT with rotary or relative position), or a fixed argument is passed.
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(name, str) or not timm.is_model(name):
        pool = timm.list_models()
        close = difflib.get_close_matches(str(name), pool, n=5, cutoff=0.6)
        hint = f'; close names: {close}' if close else ''
        raise ValueError(f'unknown timm model name {name!r}{hint} '
                         f"(see timm.list_models('vit_*'))")
    fixed = [k for k in _FIXED_KWARGS if k in kwargs]
    if fixed:
        raise ValueError(f'vit_kwargs {fixed} are set by mmpeft (no head, dynamic image size, '
                         'weights from a local checkpoint); remove them')
    not_vit = (f'timm model {name!r} is not a plain ViT of timm\'s VisionTransformer family '
               '(patch_embed, cls/register tokens, absolute position embedding, `blocks` taking one '
               'token sequence); choose a vit_* / deit_* model')
    try:
        try:
            # global_pool='': no pooling modules (fc_norm / attention pool); the final norm stays `norm`
            model = timm.create_model(name, pretrained=False, num_classes=0, global_pool='',
                                      dynamic_img_size=True, **kwargs)
        except AssertionError:
            # e.g. DeiT's distilled ViT insists on its token pooling; the pool is unused here anyway
            model = timm.create_model(name, pretrained=False, num_classes=0,
                                      dynamic_img_size=True, **kwargs)
    except TypeError as e:
        if 'dynamic_img_size' in str(e) or 'global_pool' in str(e):
            raise ValueError(f'{not_vit}: {e}') from e
        raise
    if not isinstance(model, VisionTransformer) or not hasattr(model, 'blocks'):
        raise ValueError(f'{not_vit}; it builds a {type(model).__name__}')
    return model


def vit_patch_size(vit: nn.Module) -> Tuple[int, int]:
    p = vit.patch_embed.patch_size
    return (p, p) if isinstance(p, int) else tuple(p)


def pad_to_multiple(x: torch.Tensor, multiple: Sequence[int]) -> torch.Tensor:
    """Zero-pad an ``(N, C, H, W)`` batch at the bottom / right to multiples of ``multiple``.

    Zero is the mean pixel after the toolboxes' normalisation, the same value mmdet / mmseg pad with.
    """
    h, w = x.shape[-2:]
    ph = (-h) % multiple[0]
    pw = (-w) % multiple[1]
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x


def check_input(x: torch.Tensor, patch_size: Sequence[int], owner: str, in_chans: int = 3) -> None:
    """Raise a clear error for inputs a ViT cannot embed (wrong rank/channels, smaller than a patch).

    A wrong channel count would otherwise fail inside the patch embedding's convolution with a
    message naming neither the image nor the fix.
    """
    if x.dim() != 4:
        raise ValueError(f'{owner} expects an (N, C, H, W) image batch, got shape {tuple(x.shape)}')
    if x.shape[1] != in_chans:
        raise ValueError(f'{owner}: input has {x.shape[1]} channel(s) (shape {tuple(x.shape)}), the model '
                         f'expects {in_chans}; load images as 3-channel color (LoadImageFromFile with '
                         f"color_type='color' converts grayscale and drops alpha), or build the backbone for "
                         f'{x.shape[1]} channels where it allows it (ViTPyramid: '
                         f'vit_kwargs=dict(in_chans={x.shape[1]}))')
    h, w = x.shape[-2:]
    if h < patch_size[0] or w < patch_size[1]:
        raise ValueError(f'{owner}: input of {h}x{w} pixels is smaller than one ViT patch '
                         f'({patch_size[0]}x{patch_size[1]}); resize the image to at least one patch')


def vit_in_chans(vit: nn.Module) -> int:
    """Image channels a timm ViT's patch embedding takes (``in_chans`` of ``timm.create_model``)."""
    return vit.patch_embed.proj.in_channels


def call_block(blk: nn.Module, *args: torch.Tensor, with_cp: bool = False) -> torch.Tensor:
    """``blk(*args)``, under activation checkpointing (``torch.utils.checkpoint``, non-reentrant, the
    RNG state replayed) when ``with_cp`` and grad is enabled: only the block's inputs are kept for the
    backward pass, its activations are recomputed there."""
    if with_cp and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(blk, *args, use_reentrant=False)
    return blk(*args)


def iter_vit_layers(vit: nn.Module, x: torch.Tensor, num_layers: Optional[int] = None,
                    register_tokens: Optional[torch.Tensor] = None, with_cp: bool = False
                    ) -> Iterator[Tuple[torch.Tensor, Tuple[int, int], torch.Tensor]]:
    """Run ``vit``'s embedding and first ``num_layers`` blocks, yielding after every layer.

    Args: as :func:`vit_layer_outputs`.

    Yields:
        per layer ``(seq, grid, tokens)``: ``seq`` the block's output ``(B, prefix + h*w + N, D)``
        (timm's prefix (cls / register) tokens, the patch tokens in raster order, then the layer's
        ``N`` Meta-Register outputs; ``N = 0`` without ``register_tokens``), ``grid`` ``(h, w)`` and
        ``tokens`` the ``(B, prefix + h*w, D)`` sequence the next layer gets. A consumer (HST's side
        network) can use layer ``i`` while layer ``i + 1`` is computed.
    """
    n_blocks = len(vit.blocks)
    num_layers = n_blocks if num_layers is None else num_layers
    if not 0 < num_layers <= n_blocks:
        raise ValueError(f'num_layers={num_layers} outside 1..{n_blocks} (blocks of the ViT)')
    if register_tokens is not None and register_tokens.shape[0] < num_layers:
        raise ValueError(f'register_tokens has {register_tokens.shape[0]} layers, '
                         f'{num_layers} are run')
    tokens = vit.patch_embed(x)  # (B, h, w, D) because dynamic_img_size=True
    b, h, w, d = tokens.shape
    tokens = vit._pos_embed(tokens)  # prepends cls / register tokens, adds resampled pos_embed
    tokens = vit.patch_drop(tokens)
    tokens = vit.norm_pre(tokens)
    n = 0 if register_tokens is None else register_tokens.shape[1]
    for i in range(num_layers):
        blk = vit.blocks[i]
        if n:
            reg = register_tokens[i].unsqueeze(0).expand(b, -1, -1).to(tokens.dtype)
            out = call_block(blk, torch.cat([tokens, reg], dim=1), with_cp=with_cp)
            tokens = out[:, :-n]
        else:
            out = tokens = call_block(blk, tokens, with_cp=with_cp)
        yield out, (h, w), tokens


def vit_layer_sequences(vit: nn.Module, x: torch.Tensor, num_layers: Optional[int] = None,
                        register_tokens: Optional[torch.Tensor] = None, with_cp: bool = False
                        ) -> Tuple[List[torch.Tensor], Tuple[int, int], torch.Tensor]:
    """Run ``vit``'s embedding and first ``num_layers`` blocks, keeping every layer's whole output.

    Args: as :func:`vit_layer_outputs`.

    Returns:
        ``seqs`` -- per layer the block's output ``(B, prefix + h*w + N, D)`` (see
        :func:`iter_vit_layers`); ``grid`` -- ``(h, w)``; ``last`` -- the ``(B, prefix + h*w, D)``
        sequence after the last layer run (before the final norm).
    """
    seqs: List[torch.Tensor] = []
    for out, grid, tokens in iter_vit_layers(vit, x, num_layers, register_tokens, with_cp=with_cp):
        seqs.append(out)
    return seqs, grid, tokens


def vit_layer_outputs(vit: nn.Module, x: torch.Tensor, num_layers: Optional[int] = None,
                      register_tokens: Optional[torch.Tensor] = None
                      ) -> Tuple[List[torch.Tensor], List[Optional[torch.Tensor]], torch.Tensor]:
    """Run ``vit``'s embedding and first ``num_layers`` blocks, keeping every layer's output.

    Args:
        vit: a model from :func:`build_timm_vit`.
        x: ``(B, 3, H, W)``, ``H`` and ``W`` multiples of the patch size.
        num_layers: how many blocks to run (default: all).
        register_tokens: ``(num_layers, N, D)`` learnable tokens; layer ``i`` gets ``N`` tokens
            appended to its input sequence (no position embedding: they only take part in that
            layer's attention and MLP) and its ``N`` output tokens are returned as ``register[i]``.
            They are dropped before the next layer, which gets tokens of its own (Meta-Register).

    Returns:
        ``patch`` -- per layer ``(B, h, w, D)`` patch tokens (prefix cls/register tokens of timm
        removed; views of the layer's output); ``register`` -- per layer ``(B, N, D)`` register
        outputs (``None`` without register tokens); ``last`` -- ``(B, 1 + h*w, D)`` full sequence
        after the last layer run (before the final norm), for callers that need timm's
        ``forward_features``.
    """
    seqs, (h, w), last = vit_layer_sequences(vit, x, num_layers, register_tokens)
    prefix = vit.num_prefix_tokens
    n = 0 if register_tokens is None else register_tokens.shape[1]
    patch = [s[:, prefix:prefix + h * w].unflatten(1, (h, w)) for s in seqs]
    register = [s[:, s.shape[1] - n:] if n else None for s in seqs]
    return patch, register, last


def stage_resolutions(height: int, width: int, strides: Sequence[int]) -> List[Tuple[int, int]]:
    """``ceil(H / s), ceil(W / s)`` for each stride: the part of a stride-``s`` map the image covers."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]
