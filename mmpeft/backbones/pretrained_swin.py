"""PretrainedSwin: mmseg's Swin Transformer that loads Swin checkpoints as users have them, strictly."""
import re
from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from mmseg.models.backbones.swin import SwinTransformer
from torch import Tensor

from ..registry import MODELS
from ..utils.checkpoint_io import describe_key_groups, is_moby_state_dict, split_moby_state_dict, unwrap_checkpoint

# keys of classification checkpoints that a dense backbone does not use (classifier, its final norm) and
# buffers the model derives from its window size
_IGNORED_CKPT_KEYS = re.compile(r'^(head\.|norm\.(weight|bias)$)|(relative_position_index|attn_mask)$')
# keys a classification checkpoint does not have: per-stage output norms (identity-initialised, as mmseg)
_NEW_SWIN_KEYS = re.compile(r'^norm\d+\.|relative_position_index$')
#: values of ``init_cfg``'s ``layout``: ``'auto'`` recognises MoBY files (``encoder.*`` beside ``encoder_k.*``)
CHECKPOINT_LAYOUTS = ('auto', 'moby')


def check_layout(layout, owner: str) -> str:
    """``layout`` if it is one of :data:`CHECKPOINT_LAYOUTS` (None means ``'auto'``), else a ValueError."""
    layout = 'auto' if layout is None else layout
    if layout not in CHECKPOINT_LAYOUTS:
        raise ValueError(f"{owner}: init_cfg layout={layout!r} is not one of {CHECKPOINT_LAYOUTS}: 'auto' "
                         "(default) loads official / toolbox Swin files and recognises MoBY's; 'moby' requires "
                         "a MoBY file (query encoder under 'encoder.')")
    return layout


def _mmseg_to_official_key(key: str) -> str:
    """The official layout's name of an mmseg Swin key (for messages only)."""
    for a, b in (('patch_embed.projection.', 'patch_embed.proj.'), ('.attn.w_msa.', '.attn.'),
                 ('.ffn.layers.0.0.', '.mlp.fc1.'), ('.ffn.layers.1.', '.mlp.fc2.')):
        key = key.replace(a, b)
    return re.sub(r'^stages\.', 'layers.', key)


def _official_to_mmseg(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official Swin layout (``layers.*``, ``patch_embed.proj``) -> mmseg's (``stages.*``, ...)."""
    from mmdet.models.backbones.swin import swin_converter  # public converter of the same layout
    return OrderedDict((k[len('backbone.'):], v) for k, v in swin_converter(state_dict).items())


@MODELS.register_module()
class PretrainedSwin(SwinTransformer):
    """mmseg's :class:`SwinTransformer` that loads Swin checkpoints as users have them, strictly.

    ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` accepts the official checkpoints
    (``swin_tiny_patch4_window7_224.pth``, weights under ``model``, ``layers.*`` layout, converted on
    load), mmseg-layout ones (``stages.*``, e.g. converted by mmseg's ``swin2mmseg.py``, optionally
    under ``backbone.``), full segmentor checkpoints (only ``backbone.*`` is taken) and MoBY's
    self-supervised checkpoints (``moby_swin_t_300ep_pretrained.pth``: the query encoder ``encoder.*``
    in the official layout is loaded; the key encoder ``encoder_k.*``, ``projector.*``,
    ``projector_k.*``, ``predictor.*`` and the queues are left out and listed in one log line).
    MoBY files are recognised by ``encoder.*`` keys beside ``encoder_k.*``; ``init_cfg``'s
    ``layout='moby'`` requires one (an error if no ``encoder.*`` key exists). Relative
    position bias tables are resized bicubically for another window size. Unlike mmseg
    (``strict=False``), a backbone weight missing from the checkpoint or a checkpoint weight the backbone
    lacks raises ``KeyError``; only the classifier (``head.*``, final ``norm.*``), derived buffers and
    the per-stage output norms ``norm0..3`` (absent from classification checkpoints,
    identity-initialised as in mmseg) are exempt.
    """

    #: regular expression of parameter names that subclasses add (not expected in a Swin checkpoint)
    _added_keys: Optional[re.Pattern] = None

    def __init__(self, *args, **kwargs):
        # mmseg indexes its stage widths with out_indices: a bad index is an IndexError deep inside it, and
        # a negative one builds but never matches a stage in forward (fewer outputs than asked)
        num_stages = len(kwargs.get('depths', (2, 2, 6, 2)))
        out_indices = kwargs.get('out_indices', (0, 1, 2, 3))
        bad = [i for i in out_indices if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_stages]
        if bad:
            raise ValueError(f'{type(self).__name__}: out_indices={tuple(out_indices)} has {bad} outside the '
                             f'{num_stages} stages of depths={tuple(kwargs.get("depths", (2, 2, 6, 2)))}: '
                             f'use indices in 0..{num_stages - 1}')
        super().__init__(*args, **kwargs)

    def check_input(self, x: Tensor) -> None:
        """Fail with the shapes named, not with a convolution error, on images that do not fit."""
        in_channels = self.patch_embed.projection.in_channels
        if x.dim() != 4 or x.shape[1] != in_channels:
            raise ValueError(f'{type(self).__name__}: expected images (B, C, H, W) with C = in_channels = '
                             f'{in_channels}, got shape {tuple(x.shape)}; convert the images (e.g. grey -> RGB '
                             f'in the pipeline, drop an alpha channel) or set the backbone\'s in_channels')

    def forward(self, x: Tensor):
        self.check_input(x)
        return super().forward(x)

    def train(self, mode: bool = True) -> 'PretrainedSwin':
        super().train(mode)  # mmseg's returns None; nn.Module.train returns the module
        return self

    def init_weights(self) -> None:
        if self.init_cfg is None or self.init_cfg.get('type') != 'Pretrained':
            super().init_weights()
            return
        checkpoint = self.init_cfg.get('checkpoint')
        if not checkpoint:
            raise ValueError(f'{type(self).__name__}: init_cfg of type Pretrained needs a checkpoint')
        self.load_pretrained(checkpoint, layout=check_layout(self.init_cfg.get('layout'), type(self).__name__))

    def load_pretrained(self, checkpoint: str, layout: str = 'auto') -> None:
        """Load ``checkpoint`` into the Swin weights (see the class docstring for layouts and checks).

        Args:
            checkpoint: path of the file.
            layout: ``'auto'`` (official, toolbox or MoBY files, recognised by their keys) or ``'moby'``.
        """
        layout = check_layout(layout, type(self).__name__)
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu', logger=None)
        sd, _, _ = unwrap_checkpoint(ckpt, checkpoint)  # module. / backbone. prefixes, container
        moby = layout == 'moby' or is_moby_state_dict(sd)
        if moby:
            sd, left_out = split_moby_state_dict(sd, checkpoint)
            print_log(f'{type(self).__name__}: {checkpoint} is a MoBY checkpoint: loading its query encoder '
                      f"('encoder.*', {len(sd)} tensors); left out: {describe_key_groups(left_out)}",
                      logger='current')
        official = any(k.startswith('layers.') for k in sd)
        if official:
            sd = _official_to_mmseg(sd)
        sd = OrderedDict((k, v) for k, v in sd.items() if not _IGNORED_CKPT_KEYS.search(k))
        own = self.state_dict()
        for key in [k for k in sd if k.endswith('relative_position_bias_table') and k in own]:
            sd[key] = _resize_bias_table(sd[key], own[key].shape, key)
        missing, unexpected = self.load_state_dict(sd, strict=False)
        added = [rx for rx in (self._added_keys, getattr(vars(self).get('peft'), 'added_keys', None))
                 if rx is not None]  # the class's own new modules, and those a PEFT method attached
        missing = [k for k in missing if not _NEW_SWIN_KEYS.search(k) and not any(rx.match(k) for rx in added)]
        if missing or unexpected:
            in_file = ''
            if missing and official:  # the names the file would have used
                named = [('encoder.' if moby else '') + _mmseg_to_official_key(k) for k in missing[:8]]
                in_file = f' (in the file\'s layout: {named}{" ..." if len(missing) > 8 else ""})'
            raise KeyError(f'{checkpoint} does not fit {type(self).__name__}: '
                           f'missing {missing[:8]}{" ..." if len(missing) > 8 else ""} ({len(missing)}){in_file}, '
                           f'unexpected {unexpected[:8]}{" ..." if len(unexpected) > 8 else ""} '
                           f'({len(unexpected)}). Check embed_dims / depths / num_heads against the checkpoint'
                           + ('' if moby or not any(k.startswith('encoder.') for k in unexpected) else
                              "; for a MoBY file whose query encoder is under 'encoder.' set init_cfg "
                              "layout='moby'"))
        print_log(f'{type(self).__name__}: loaded {len(sd)} tensors from {checkpoint}'
                  + (' (MoBY query encoder)' if moby else ''), logger='current')


def _resize_bias_table(table: Tensor, shape: torch.Size, key: str) -> Tensor:
    """Bicubically resize a ``((2w-1)^2, heads)`` relative position bias table to ``shape``."""
    if table.shape == shape:
        return table
    (l1, h1), (l2, h2) = table.shape, shape
    if h1 != h2:
        raise KeyError(f'{key}: checkpoint has {h1} heads, the model {h2}')
    s1, s2 = int(l1 ** 0.5), int(l2 ** 0.5)
    grid = table.permute(1, 0).reshape(1, h1, s1, s1)
    return F.interpolate(grid, size=(s2, s2), mode='bicubic').reshape(h2, l2).permute(1, 0).contiguous()
