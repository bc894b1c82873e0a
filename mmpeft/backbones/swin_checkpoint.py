"""Official (Microsoft) Swin checkpoints for the toolboxes' own Swin backbones.

mmseg, mmdet and mmpretrain name Swin weights alike (``patch_embed.projection``, ``stages.<i>.blocks.<j>
.attn.w_msa``, ``ffn.layers``, patch merging with the channels in ``nn.Unfold`` order); the official
``swin_tiny_patch4_window7_224.pth`` uses ``layers.<i>``, ``mlp.fc1`` and another merging order.
mmdet converts on load (``convert_weights=True``) and mmpeft's :class:`PretrainedSwin` does for mmseg's
Swin; mmpretrain does neither (its ``init_cfg=dict(type='Pretrained', prefix='backbone')`` wants a
file already converted). ``init_cfg=dict(type='PretrainedOfficialSwin', checkpoint=PATH)`` loads the
official file into a Swin that lets mmengine run its ``init_cfg`` (mmpretrain's; mmseg's and mmdet's
``SwinTransformer.init_weights`` read ``init_cfg['checkpoint']`` themselves whatever the type): mmdet's
public ``swin_converter`` converts the layout, the classifier's final ``norm`` becomes the backbone's last
output norm (mmpretrain's ``norm3``) and the classifier ``head`` is dropped. MoBY's self-supervised
checkpoints (``moby_swin_t_300ep_pretrained.pth``, the query encoder under ``encoder.`` in the official
layout) load the same way: the query encoder is taken, the rest of MoBY's training model is left out and
listed in one log line. Inside a :func:`~mmpeft.backbones.build_peft_backbone` every backbone weight
left unloaded is then an error (see ``peft_backbone.py``).
"""
from collections import OrderedDict
from typing import Dict

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit
from mmengine.registry import WEIGHT_INITIALIZERS
from mmengine.runner.checkpoint import CheckpointLoader, load_state_dict

from ..utils.checkpoint_io import describe_key_groups, is_moby_state_dict, split_moby_state_dict, state_dict_of
from .pretrained_swin import check_layout


def official_swin_to_toolbox(state: Dict[str, torch.Tensor], module: nn.Module) -> 'OrderedDict[str, torch.Tensor]':
    """Convert an official Swin state dict (``layers.*`` keys) to the toolboxes' layout for ``module``."""
    from mmdet.models.backbones.swin import swin_converter
    if not any(k.startswith('layers.') for k in state):
        return OrderedDict(state)  # already in the toolbox layout
    out = OrderedDict((k[len('backbone.'):], v) for k, v in swin_converter(state).items())
    n = len(getattr(module, 'stages', ()))
    own = module.state_dict()
    if n and f'norm{n - 1}.weight' in own:
        for name in ('weight', 'bias'):  # the classifier's final norm normalises the last stage's output
            if f'norm.{name}' in out:
                out[f'norm{n - 1}.{name}'] = out.pop(f'norm.{name}')
    return out


@WEIGHT_INITIALIZERS.register_module()
class PretrainedOfficialSwin(PretrainedInit):
    """``init_cfg=dict(type='PretrainedOfficialSwin', checkpoint=PATH)``: load an official Swin file.

    Accepts the official layout (weights under ``model``), or a toolbox-layout file (bare, under
    ``state_dict``, or with ``backbone.`` keys), so one config line works for both, and MoBY files
    (``encoder.*`` beside ``encoder_k.*``: the query encoder is loaded, the key encoder, projectors,
    predictor and queues are left out and listed). ``layout='moby'`` requires a MoBY file (an error if
    no ``encoder.*`` key exists); ``'auto'`` (default) recognises one.

    Args:
        checkpoint, prefix, map_location: as mmengine's ``Pretrained``; ``prefix`` does not combine
            with a MoBY file (its prefix is ``encoder.``).
        layout: ``'auto'`` or ``'moby'``.
    """

    def __init__(self, checkpoint: str, prefix=None, map_location='cpu', layout: str = 'auto') -> None:
        super().__init__(checkpoint, prefix=prefix, map_location=map_location)
        self.layout = check_layout(layout, type(self).__name__)

    def __call__(self, module: nn.Module) -> None:
        ckpt = CheckpointLoader.load_checkpoint(self.checkpoint, map_location=self.map_location, logger=None)
        try:
            state = state_dict_of(ckpt, self.checkpoint)
        except (KeyError, TypeError) as e:
            state = None
            why = e
        if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
            raise KeyError(f'{self.checkpoint}: no Swin state dict found (looked under state_dict, model and '
                           'the top level); give an official Swin checkpoint or a toolbox Swin checkpoint'
                           + (f' ({why})' if state is None else ''))
        if self.layout == 'moby' or (is_moby_state_dict(state) and self.prefix in (None, '', 'encoder', 'encoder.')):
            if self.prefix not in (None, '', 'encoder', 'encoder.'):
                raise ValueError(f"PretrainedOfficialSwin: layout='moby' takes the query encoder ('encoder.'); "
                                 f'drop prefix={self.prefix!r}')
            state, left_out = split_moby_state_dict(state, self.checkpoint)
            print_log(f'PretrainedOfficialSwin: {self.checkpoint} is a MoBY checkpoint: loading its query encoder '
                      f"('encoder.*', {len(state)} tensors); left out: {describe_key_groups(left_out)}",
                      logger='current')
            prefix = ''
        else:
            prefix = self.prefix or ('backbone' if any(k.startswith('backbone.') for k in state) else '')
        if prefix:
            prefix = prefix.rstrip('.') + '.'
            state = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
        state = official_swin_to_toolbox(state, module)
        print_log(f'PretrainedOfficialSwin: loading {len(state)} tensors from {self.checkpoint}',
                  logger='current')
        load_state_dict(module, state, strict=False, logger='current')
        # mmengine's BaseModule.init_weights defers only type='Pretrained' until after the children's
        # own init_weights; any other initializer runs first, so the children (mmpretrain's WindowMSA
        # re-draws its relative position bias table) would overwrite what was loaded. The loaded
        # sub-modules are marked initialised, mmengine's own way of skipping them.
        for m in module.modules():
            if m is not module and hasattr(m, '_is_init'):
                m._is_init = True

    def _get_init_info(self) -> str:
        return f'{type(self).__name__}: load from {self.checkpoint}'
