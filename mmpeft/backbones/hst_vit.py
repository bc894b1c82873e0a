"""HSTViT: Hierarchical Side-Tuning of a frozen timm plain ViT (Lin et al., HST, section 3).

::

    image ──► frozen timm ViT (+ Meta-Register: one learnable token per layer; block LayerNorms tuned)
      │             │ layer i: patch tokens F_p^i (B, h, w, D), register output F_mr^i (B, N, D)
      │             ▼
      │        T-Bridge (W_j shared per stage): F_mg^i (B, N+1, d_j), F_fg^i (B, H_j W_j, d_j)
      │             ▼
      └──► Hierarchical Side Network: stem (s4) ─ stage 1 ─ s8 ─ stage 2 ─ s16 ─ stage 3 ─ s32 ─ stage 4
                                       └─► (B, d_j, H/s_j, W/s_j), j = 1..4  ─► toolbox neck / head

The model is the one the authors released (``ViT_HSN``), which the paper's text describes less
exactly; where they differ the paper-literal form is an option (see ``stem``, ``register_norm``):

=========================================  =======================================  =================
released model (default)                   option                                   reproduces
=========================================  =======================================  =================
side stem conv3x3/s2 (no bias) - BN - ReLU ``stem='conv_ln'`` (conv - LN - GELU -    Tables 2-5 (their
- conv2x2/s2 - LN                          conv - LN, mmpeft's earlier reading)     runs) / --
LN on each layer's projected register      ``register_norm=False`` (eq. 1 as         Tables 2-5 / eq. 1
token (``m_proj_norm``)                    printed)
heads ``[2, 4, 8, 12]`` for every width    ``num_heads``                            Table 1
BatchNorm1d(affine=False) on the pooled    ``pooled_norm_cfg=None``                 Tables 2-3
vector (classification)
drop path over the frozen ViT's blocks too ``vit_drop_path_rate=0``                 Tables 2-3 recipes
xavier-uniform Meta-Register tokens        ``meta_token_init='trunc_normal'``       --
=========================================  =======================================  =================

LayerNorm eps as released: 1e-6 in the Side blocks, stage ends and register norms, 1e-5 in the stem
and the downsampling embeddings. GlobalT is the mean of the projected tokens after resizing to the
stage grid. A checkpoint trained with the authors' code loads with ``checkpoint_layout='hst_official'``
(backbone) or after ``tools/model_converters/hst_official_to_mmpeft.py`` (whole classifier).

Trainable (set in ``__init__``, the "freeze at build time" rule): the side network, the bridge, the
meta tokens and the ``norm1`` / ``norm2`` LayerNorms of the ViT blocks that feed the side network.
Everything else of the ViT (embeddings, attention, MLPs, final norm) is frozen, its dropout and frozen
norms kept in eval mode (its drop path follows ``vit_drop_path_rate``).

Parameter counts (``tools/analysis_tools/count_params.py``, trainable; the tests assert them):

====================================  ===================  ========================================
backbone                              backbone trainable   whole model (paper)
====================================  ===================  ========================================
ViT-B/16 + ``[32, 48, 64, 72]``       0.765M               0.772M VTAB CIFAR-100 = the released
                                                           model's 772,140 (paper: 0.78M, Tables 2/3)
ViT-B/16 + ``[64, 128, 256, 384]``    10.40M               + FPN 12.98M (Table 1: 13.21M);
                                                           Mask R-CNN 30.52M (30.6M), Cascade
                                                           68.36M (68.4M), ATSS 18.47M (18.5M),
                                                           Semantic FPN 14.62M (14.7M), UperNet
                                                           39.86M (39.9M)
ViT-L/16 + ``[64, 128, 256, 384]``    19.14M               Mask R-CNN 39.25M (39.62M); + FPN 21.71M
                                                           (Table 1: 19.86M, which Table 4 contradicts)
ViT-L/16 + ``[32, 48, 64, 72]``       1.36M                (Table 1: 0.78M, the ViT-B figure repeated;
                                                           the ViT-L LayerNorms and bridge alone exceed it)
====================================  ===================  ========================================

Speed: one forward path for training and inference; speed comes from ``torch.compile`` (mmengine's
``compile=True``; the model traces as one graph) and, for Table 9's parallel HST, from
``execution='parallel'``. The side network folds its two-token cross-attention's projections into
per-image vectors (arithmetic, no kernel trick) and keeps maps channels-last; the bridge projects each
ViT layer's output sequence in one product. ``benchmarks/hst_efficiency.py`` measures Table 9 / Figure 7.

Input sizes: any ``H x W`` of at least one ViT patch. The image is zero-padded at the bottom / right to
multiples of 32 (then, for a patch size that does not divide 32, further to multiples of the patch for
the ViT; the Fine-Grained branch is resized to the side network's grid either way), and the outputs
are cropped to the part the image covers: stage ``j`` is ``ceil(H / s_j) x ceil(W / s_j)`` for
``s_j`` = 4, 8, 16, 32 -- the sizes a ResNet or Swin gives. The ViT's position embedding is resampled
(bicubic, by timm) to each input's token grid.

Pretrained weights are loaded from a local file only (nothing is downloaded), in the layouts of
:mod:`mmpeft.backbones.vit_checkpoint` (timm, MAE, mmpretrain, mmseg), for example::

    mkdir -p pretrain && cd pretrain
    # ImageNet-21k ViT-B/16 (paper footnote 1) -- rename so configs find it:
    wget -O jx_vit_base_patch16_224_in21k.pth \\
        https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_patch16_224_in21k-e5005f0a.pth
    # MAE ViT-B/16 (paper footnote 2):
    wget https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth

and ``init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')``
(or ``pretrained='...'``). Note: the in21k ViTs were trained on images normalised with mean = std =
0.5 (127.5 in pixel units), MAE with the ImageNet mean / std; the configs set the data preprocessor
accordingly.
"""
import re
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule

from ..peft.attachment import PEFTAttachment
from ..registry import MODELS
from .hst_parallel import run_pipelined
from .side_network import HierarchicalSideNetwork
from .timm_vit import (
    build_timm_vit,
    check_input,
    iter_vit_layers,
    pad_to_multiple,
    stage_resolutions,
    vit_layer_outputs,
    vit_layer_sequences,
    vit_patch_size,
)
from .transformation_bridge import TransformationBridge
from .vit_checkpoint import LAYOUTS, load_vit_weights

OUT_TYPES = ('featmap', 'pooled')
EXECUTIONS = ('serial', 'parallel')
META_TOKEN_INITS = ('xavier_uniform', 'trunc_normal')
# ``scheme://...``: a URL or a toolbox download name (open-mmlab://, torchvision://, mmcls://, s3:// ...)
_DOWNLOAD_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*://')


def pretrained_checkpoint(pretrained: Optional[str], init_cfg,
                          owner: str) -> Tuple[Optional[str], Optional[str]]:
    """``(path, prefix)`` of the checkpoint given by ``pretrained`` or
    ``init_cfg=dict(type='Pretrained', checkpoint=PATH[, prefix='backbone.'])``.

    Only local files: a download name (``open-mmlab://resnet50_v1c``, ``torchvision://``, a URL) is
    rejected, because it usually is a segmentor-level ``model.pretrained`` of an upstream mmseg base
    config, which mmseg copies into the backbone, and meant for the base config's ResNet, not a ViT.
    """
    if pretrained is not None and not isinstance(pretrained, str):
        raise TypeError(f'{owner}: pretrained must be a path, got {type(pretrained).__name__}')
    ckpt = init_cfg.get('checkpoint') if isinstance(init_cfg, dict) else None
    for key, value in (('pretrained', pretrained), ('init_cfg.checkpoint', ckpt)):
        if isinstance(value, str) and _DOWNLOAD_NAME.match(value):
            raise ValueError(
                f'{owner}: {key}={value!r} is a download name, but {owner} loads a ViT checkpoint from a '
                f'local file only (and a name like this is usually the ResNet of an upstream base config: '
                f"mmseg copies a segmentor-level model.pretrained into the backbone). Set "
                f"model.pretrained=None in your config and give the local ViT file by "
                f"backbone.init_cfg=dict(type='Pretrained', checkpoint='pretrain/<vit>.pth').")
    if pretrained is not None and init_cfg is not None:
        raise ValueError(f'{owner}: got both pretrained={pretrained!r} and init_cfg={init_cfg!r}; give the '
                         f'checkpoint by one of them (if pretrained comes from a segmentor-level '
                         f'model.pretrained, set model.pretrained=None in your config)')
    if pretrained is not None:
        return pretrained, None
    if init_cfg is None:
        return None, None
    if not isinstance(init_cfg, dict) or init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg:
        raise ValueError(f"{owner}: init_cfg must be None or dict(type='Pretrained', checkpoint=PATH) "
                         f'(the trainable modules have their own initialisation); got {init_cfg!r}')
    unknown = set(init_cfg) - {'type', 'checkpoint', 'prefix', 'map_location'}
    if unknown:
        raise ValueError(f'{owner}: init_cfg keys {sorted(unknown)} are not supported '
                         '(the ViT checkpoint layout is chosen by `checkpoint_layout`)')
    return init_cfg['checkpoint'], init_cfg.get('prefix')


def even_depths(num_layers: int, num_stages: int, owner: str) -> List[int]:
    if num_layers % num_stages:
        raise ValueError(f'{owner}: the ViT has {num_layers} layers, which do not split evenly over '
                         f'{num_stages} side-network stages; give `depths` (summing to {num_layers})')
    return [num_layers // num_stages] * num_stages


@MODELS.register_module()
class HSTViT(BaseModule):
    """Frozen timm ViT + Meta-Register + T-Bridge + Hierarchical Side Network.

    Args:
        vit_name: timm model name, e.g. ``'vit_base_patch16_224'`` (ViT-B/16) or
            ``'vit_large_patch16_224'`` (ViT-L/16).
        vit_kwargs: more ``timm.create_model`` arguments overriding the architecture
            (``depth``, ``embed_dim``, ``num_heads``, ``img_size`` ...). ``img_size`` is the grid the
            position embedding is stored at (224 for the paper's checkpoints); inputs of other sizes
            resample it.
        embed_dims: side-network widths ``d_j`` (Table 1: ``[32, 48, 64, 72]`` for classification,
            ``[64, 128, 256, 384]`` for detection / segmentation).
        num_heads: side-network heads per stage (default ``[2, 4, 8, 12]``, the released model's, for
            the classification dims too).
        depths: ViT layers (= Side blocks) per stage, summing to the ViT depth (default: split evenly
            over the stages, 3 each for ViT-B, 6 each for ViT-L).
        mlp_ratio: Side-block FFN ratio (4).
        stem: side-network stem, ``'conv_bn'`` (released: conv3x3/s2 no bias - BN - ReLU - conv2x2/s2
            - LN) or ``'conv_ln'`` (mmpeft's earlier stem without BatchNorm, 64 parameters more at
            ``d_1 = 32``); see :mod:`mmpeft.backbones.side_network`.
        stem_norm_cfg: the ``conv_bn`` stem's norm (default ``dict(type='BN')``; the dense configs
            use ``SyncBN``, as mmdet / mmseg configs do for small per-GPU batches).
        stem_channels: hidden width of the ``conv_ln`` stem (default ``d_1 // 2``).
        register_norm: LayerNorm per ViT layer on its projected Meta-Register tokens (released,
            ``m_proj_norm``; ``2 d_j`` parameters per layer); ``False`` is eq. 1 as printed.
        kv_norm: LayerNorm on the Meta-Global tokens before the side cross-attention (off).
        num_meta_tokens: Meta-Register tokens per ViT layer ``N`` (1, Table 6; 0 disables it).
        use_global_token: GlobalT in the Meta-Global branch (Table 7).
        use_fine_grained: Fine-Grained injection (Table 8).
        share_bridge: one bridge linear per stage (Linear Weight Sharing, Table 8) or one per layer.
        tune_vit_norms: LN tuning of the ViT blocks' ``norm1`` / ``norm2`` (Table 8).
        drop_path_rate: stochastic depth of the Side blocks (linear over blocks).
        vit_drop_path_rate: stochastic depth of the frozen ViT's blocks in training (linear over its
            blocks, timm's rule); ``None`` (default): ``drop_path_rate``, as the authors' training
            script applies its ``--drop-path`` to both networks. ``0`` keeps the ViT deterministic.
            The ViT's dropout and frozen norms stay in eval mode either way.
        meta_token_init: ``'xavier_uniform'`` (released: each layer's ``(1, N, D)`` token) or
            ``'trunc_normal'`` (std 0.02).
        out_indices: stages returned (0-3: strides 4, 8, 16, 32). Only the stages up to the last one
            asked for (and the ViT layers feeding them) are built and run.
        out_type: ``'featmap'``: a tuple of ``(B, d_j, H_j, W_j)`` maps for ``out_indices``;
            ``'pooled'``: a 1-tuple with the ``(B, d_4)`` average of the last stage's (normed) map,
            through ``pooled_norm_cfg``, for mmpretrain's ``LinearClsHead``.
        pooled_norm_cfg: norm of the pooled vector (module ``fc_norm``; ``out_type='pooled'`` only):
            the released ``dict(type='BN1d', affine=False, eps=1e-6)`` (running statistics only, no
            parameters; needs more than one image per training batch), or ``None`` for the plain
            average.
        execution: ``'serial'`` (ViT, then side network) or ``'parallel'`` (Table 9's parallel HST:
            side block ``i`` runs as soon as ViT layer ``i`` is done, in a second thread and, on a GPU,
            a second CUDA stream; :mod:`mmpeft.backbones.hst_parallel`). Same outputs.
        with_cp: activation checkpointing (default ``False``): while grad is enabled, each block of the
            frozen ViT and each Side block runs under ``torch.utils.checkpoint.checkpoint``
            (``use_reentrant=False``), so only its inputs are kept for the backward pass and its
            activations are recomputed there -- less memory for about one more forward pass of those
            blocks. Same outputs and gradients (drop path draws the same masks on recompute), same
            parameters and state-dict keys. Serial execution only: ``execution='parallel'`` with
            ``with_cp=True`` is an error.
        pretrained: local path of the ViT checkpoint (shorthand for ``init_cfg``); a URL or
            ``open-mmlab://`` name is an error (see :func:`pretrained_checkpoint`).
        checkpoint_layout: ``'auto'``, ``'timm'``, ``'mae'``, ``'mmpretrain'`` or ``'mmseg'`` (the
            ViT alone), or ``'hst_official'``: a checkpoint saved by the HST authors' training script,
            which fills the whole backbone (ViT, meta tokens, bridge, side network, ``fc_norm``)
            strictly; its classifier is left to the head (convert the whole file with
            ``tools/model_converters/hst_official_to_mmpeft.py`` to keep it).
        init_cfg: ``None`` or ``dict(type='Pretrained', checkpoint=PATH)`` (``prefix='...'`` picks the
            ViT out of a bigger checkpoint; ``backbone.`` is found without it); the ViT weights are
            loaded strictly in :meth:`init_weights` (missing / unexpected keys are errors naming them).
    """

    strides = (4, 8, 16, 32)

    def __init__(self,
                 vit_name: str = 'vit_base_patch16_224',
                 vit_kwargs: Optional[dict] = None,
                 embed_dims: Sequence[int] = (64, 128, 256, 384),
                 num_heads: Optional[Sequence[int]] = None,
                 depths: Optional[Sequence[int]] = None,
                 mlp_ratio: float = 4.0,
                 stem: str = 'conv_bn',
                 stem_norm_cfg: Optional[dict] = None,
                 stem_channels: Optional[int] = None,
                 register_norm: bool = True,
                 kv_norm: bool = False,
                 num_meta_tokens: int = 1,
                 use_global_token: bool = True,
                 use_fine_grained: bool = True,
                 share_bridge: bool = True,
                 tune_vit_norms: bool = True,
                 drop_path_rate: float = 0.0,
                 vit_drop_path_rate: Optional[float] = None,
                 meta_token_init: str = 'xavier_uniform',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_type: str = 'featmap',
                 pooled_norm_cfg: Optional[dict] = dict(type='BN1d', affine=False, eps=1e-6),
                 execution: str = 'serial',
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 checkpoint_layout: str = 'auto',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=None)
        self.checkpoint, self.checkpoint_prefix = pretrained_checkpoint(pretrained, init_cfg, 'HSTViT')
        if checkpoint_layout not in LAYOUTS + ('hst_official', ):
            raise ValueError(f'HSTViT: checkpoint_layout {checkpoint_layout!r} is not one of '
                             f"{LAYOUTS + ('hst_official', )}")
        self.checkpoint_layout = checkpoint_layout
        if out_type not in OUT_TYPES:
            raise ValueError(f'HSTViT: out_type {out_type!r} is not one of {OUT_TYPES}')
        self.out_type = out_type
        if execution not in EXECUTIONS:
            raise ValueError(f'HSTViT: execution {execution!r} is not one of {EXECUTIONS}')
        self.execution = execution
        if with_cp and execution == 'parallel':
            # the recomputation would run in the backward pass, outside the pipeline's second thread /
            # CUDA stream that produced the activations (and that Table 9's speed-up depends on)
            raise ValueError("HSTViT: with_cp=True is not supported with execution='parallel'; use "
                             "execution='serial' with with_cp=True (activation checkpointing), or "
                             "execution='parallel' with with_cp=False")
        self.with_cp = bool(with_cp)
        if meta_token_init not in META_TOKEN_INITS:
            raise ValueError(f'HSTViT: meta_token_init {meta_token_init!r} is not one of {META_TOKEN_INITS}')
        embed_dims = list(embed_dims)
        if len(embed_dims) != 4:
            raise ValueError(f'HSTViT: embed_dims {embed_dims} must give 4 stages')
        out_indices = sorted(set(out_indices)) if out_type == 'featmap' else [3]
        if not out_indices or not all(0 <= i < 4 for i in out_indices):
            raise ValueError(f'HSTViT: out_indices {list(out_indices)} must be stages 0-3')
        self.out_indices = tuple(out_indices)
        if num_meta_tokens < 0:
            raise ValueError(f'HSTViT: num_meta_tokens={num_meta_tokens} must be >= 0')
        if num_meta_tokens == 0 and not use_global_token:
            raise ValueError('HSTViT: with num_meta_tokens=0 and use_global_token=False the '
                             'Meta-Global branch is empty')

        vit_kwargs = dict(vit_kwargs or {})
        if 'drop_path_rate' in vit_kwargs:
            raise ValueError('HSTViT: give the ViT\'s stochastic depth as vit_drop_path_rate=..., not in '
                             'vit_kwargs (it is kept out of the frozen-in-eval rule there)')
        self.vit_drop_path_rate = drop_path_rate if vit_drop_path_rate is None else vit_drop_path_rate
        self.vit = build_timm_vit(vit_name, drop_path_rate=self.vit_drop_path_rate, **vit_kwargs)
        num_layers = len(self.vit.blocks)
        depths = list(depths) if depths is not None else even_depths(num_layers, 4, 'HSTViT')
        if len(depths) != 4 or sum(depths) != num_layers or min(depths) < 1:
            raise ValueError(f'HSTViT: depths {depths} must be 4 positive numbers summing to the '
                             f'ViT depth {num_layers}')
        # Only the stages up to the last output are built, and only the ViT layers feeding them run.
        n_stages = self.out_indices[-1] + 1
        self.depths = depths[:n_stages]
        self.num_layers = sum(self.depths)
        self.embed_dims = embed_dims[:n_stages]
        self.patch_size = vit_patch_size(self.vit)

        dim = self.vit.embed_dim
        if num_meta_tokens:
            # (layers, N, D): layer i's own tokens; they get no position embedding
            self.meta_tokens = nn.Parameter(torch.zeros(self.num_layers, num_meta_tokens, dim))
            for i in range(self.num_layers):
                # each layer's (1, N, D) token as its own tensor (the released model's m_embeddings.i)
                if meta_token_init == 'xavier_uniform':
                    nn.init.xavier_uniform_(self.meta_tokens.data[i:i + 1])
                else:
                    nn.init.trunc_normal_(self.meta_tokens.data[i:i + 1], std=0.02)
        else:
            self.meta_tokens = None
        self.bridge = TransformationBridge(dim, self.embed_dims, self.depths, share_weights=share_bridge,
                                           use_global_token=use_global_token,
                                           use_fine_grained=use_fine_grained,
                                           register_norm=register_norm and num_meta_tokens > 0)
        for m in self.bridge.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.side_network = HierarchicalSideNetwork(
            self.embed_dims, self.depths,
            num_heads=None if num_heads is None else list(num_heads)[:n_stages],
            mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, stem=stem, norm_cfg=stem_norm_cfg,
            stem_channels=stem_channels, kv_norm=kv_norm, with_cp=self.with_cp)
        if out_type == 'pooled' and pooled_norm_cfg is not None:
            self.fc_norm = build_norm_layer(pooled_norm_cfg, self.embed_dims[-1])[1]
        else:
            self.fc_norm = None

        # freeze at build time: exactly the HST set trains
        patterns = [r'side_network\.', r'bridge\.']
        if self.meta_tokens is not None:
            patterns.append(r'meta_tokens$')
        if tune_vit_norms:
            layers = '|'.join(str(i) for i in range(self.num_layers))
            patterns.append(rf'vit\.blocks\.({layers})\.norm[12]\.')
        # frozen dropout / drop-path (and norms) of the ViT behave as pretrained: eval mode in training,
        # except the ViT's stochastic depth when it is part of the recipe (vit_drop_path_rate > 0)
        keep = (lambda m: type(m).__name__ == 'DropPath') if self.vit_drop_path_rate > 0 else None
        PEFTAttachment(self).freeze(patterns, eval_scope='vit', keep_training=keep)

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Load the ViT checkpoint (if any), strictly. The HST modules keep their own init, except with
        ``checkpoint_layout='hst_official'``, where the file fills the whole backbone."""
        if self.checkpoint is not None:
            if self.checkpoint_layout == 'hst_official':
                self._load_hst_official(self.checkpoint)
            else:
                load_vit_weights(self.vit, self.checkpoint, layout=self.checkpoint_layout,
                                 prefix=self.checkpoint_prefix)
        self._is_init = True

    def _load_hst_official(self, checkpoint: str) -> None:
        from ..utils.checkpoint_io import load_checkpoint_file, state_dict_of
        from .hst_official_checkpoint import convert_hst_official
        if self.checkpoint_prefix:
            raise ValueError(f"HSTViT: init_cfg prefix={self.checkpoint_prefix!r} does not apply to "
                             "checkpoint_layout='hst_official' (the authors' files hold the model at the top level)")
        state = convert_hst_official(state_dict_of(load_checkpoint_file(checkpoint), checkpoint),
                                     backbone_prefix='', head_prefix=None)
        if self.fc_norm is None:
            dropped = [k for k in state if k.startswith('fc_norm.')]
            if dropped:
                # a classifier's file used for a dense backbone (or one without the pooled norm)
                print_log(f'HSTViT: {checkpoint}: {dropped} not used (this backbone has no pooled fc_norm)',
                          logger='current')
                state = {k: v for k, v in state.items() if not k.startswith('fc_norm.')}
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = sorted(f'{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}'
                        for k in set(own) & set(state) if state[k].shape != own[k].shape)
        if missing or unexpected or shapes:
            raise KeyError(
                f"HSTViT: {checkpoint} (checkpoint_layout='hst_official') does not fit this backbone: "
                f'missing {missing[:10]}{" ..." if len(missing) > 10 else ""} ({len(missing)}), unexpected '
                f'{unexpected[:10]}{" ..." if len(unexpected) > 10 else ""} ({len(unexpected)}), shapes {shapes[:10]}. '
                'Build the backbone as the file was trained (embed_dims, depths, num_meta_tokens, '
                'out_type=\'pooled\' for a classifier; `python tools/model_converters/hst_official_to_mmpeft.py '
                f'{checkpoint} OUT` prints them).')
        self.load_state_dict(state, strict=True)

    # ------------------------------------------------------------------ forward
    def _vit_needs_grad(self) -> bool:
        if not torch.is_grad_enabled():
            return False
        if self.meta_tokens is not None and self.meta_tokens.requires_grad:
            return True
        return any(p.requires_grad for p in self.vit.parameters())

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, 3, H, W)`` -> tuple of ``(B, d_j, ceil(H/s_j), ceil(W/s_j))`` (or ``((B, d_4),)``)."""
        check_input(x, self.patch_size, 'HSTViT')
        h, w = x.shape[-2:]
        x_side = pad_to_multiple(x, (32, 32))
        x_vit = pad_to_multiple(x_side, self.patch_size)
        if self.execution == 'parallel' and not torch.compiler.is_compiling():  # threads are not traced
            maps = self._forward_parallel(x_side, x_vit)
        else:
            maps = self._forward_serial(x_side, x_vit)
        sizes = stage_resolutions(h, w, self.strides)
        maps = [m if tuple(m.shape[-2:]) == s else m[..., :s[0], :s[1]].contiguous()
                for m, s in zip(maps, sizes)]
        if self.out_type == 'pooled':
            pooled = maps[-1].mean(dim=(2, 3))                               # (B, d_4)
            if self.fc_norm is not None:
                if self.fc_norm.training and pooled.shape[0] == 1:
                    raise ValueError('HSTViT: the pooled output\'s BatchNorm1d (pooled_norm_cfg, as released) '
                                     'needs more than one image per training batch; raise the batch size or '
                                     'set pooled_norm_cfg=None')
                pooled = self.fc_norm(pooled)
            return (pooled,)
        return tuple(maps[i] for i in self.out_indices)

    def _forward_serial(self, x_side: torch.Tensor, x_vit: torch.Tensor) -> List[torch.Tensor]:
        with torch.set_grad_enabled(self._vit_needs_grad()):
            seqs, grid, _ = vit_layer_sequences(self.vit, x_vit, self.num_layers, self.meta_tokens,
                                                with_cp=self.with_cp)
        prefix = self.vit.num_prefix_tokens
        n_reg = 0 if self.meta_tokens is None else self.meta_tokens.shape[1]

        def inject(i: int, size: Tuple[int, int]):
            return self.bridge.forward_sequence(i, seqs[i], prefix, grid, n_reg, size)

        return self.side_network(x_side, inject)

    def _forward_parallel(self, x_side: torch.Tensor, x_vit: torch.Tensor) -> List[torch.Tensor]:
        """:meth:`_forward_serial` with the side network consuming each ViT layer as it is done."""
        vit_grad = self._vit_needs_grad()
        prefix = self.vit.num_prefix_tokens
        n_reg = 0 if self.meta_tokens is None else self.meta_tokens.shape[1]
        grid: List[Tuple[int, int]] = []

        def produce(pipe) -> None:
            with torch.set_grad_enabled(vit_grad):
                for i, (seq, g, _) in enumerate(iter_vit_layers(self.vit, x_vit, self.num_layers,
                                                                 self.meta_tokens)):
                    if not grid:
                        grid.append(g)  # written before the first put: visible to the consumer after get
                    pipe.put(i, seq)

        def consume(pipe) -> List[torch.Tensor]:
            def inject(i: int, size: Tuple[int, int]):
                seq = pipe.get(i)
                return self.bridge.forward_sequence(i, seq, prefix, grid[0], n_reg, size)
            return self.side_network(x_side, inject)

        return run_pipelined(self.num_layers, x_side.device, produce, consume)

    def forward_vit(self, x: torch.Tensor, with_meta_tokens: bool = False) -> torch.Tensor:
        """The ViT alone, as timm's ``forward_features``: ``(B, prefix + h*w, D)`` after the final norm.

        With ``with_meta_tokens=False`` (the default) the Meta-Register is left out, so with the
        pretrained LayerNorms this equals the plain pretrained ViT.
        """
        check_input(x, self.patch_size, 'HSTViT')
        x = pad_to_multiple(x, self.patch_size)
        meta = self.meta_tokens if with_meta_tokens else None
        n = len(self.vit.blocks) if meta is None else self.num_layers
        _, _, last = vit_layer_outputs(self.vit, x, n, meta)
        return self.vit.norm(last)
