"""SSF (Lian et al., 2022): scale and shift the features after every frozen operation.

For the output ``y`` of an operation with C channels::

    y' = gamma * y + beta,      gamma, beta in R^C

after every linear layer (attention ``qkv`` and ``proj``, MLP ``fc1`` and ``fc2``, Swin's patch
merging), every LayerNorm and the patch embedding convolution: the operations are found by type
(``nn.Linear``, ``nn.LayerNorm``, ``nn.Conv2d``) in the transformer part of the backbone (see
:func:`~mmpeft.peft.layout.transformer_scope`; modules a wrapper adds beside it, e.g. trainable
pyramid modules, are left alone). Channels-first norms (timm's ``LayerNorm2d``) are skipped.
``gamma = 1, beta = 0`` at the start (``init_std > 0`` draws them around that, as the SSF paper's
N(1, sigma) / N(0, sigma)).

Because ``gamma * (W x + b) + beta = (diag(gamma) W) x + (gamma * b + beta)`` (and likewise for a
LayerNorm's affine and a convolution), the trained factors fold into the frozen weights
(``backbone.peft.merge()``, :meth:`ScaleShift.merge_into`): the merged network is the plain
architecture. An operation without a bias (Swin's patch-merging reduction, ``qkv_bias=False``) gets a
scale only, so that the fold needs no new key; a LayerNorm without affine parameters gets nothing.
Under ``num_tasks=T`` every factor is task-wise.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..registry import PEFT_METHODS
from .layout import find_blocks, get_module, transformer_scope
from .taskwise import TaskSwitch, TaskWise, TaskWiseMethod

SSF_TYPES = (nn.Linear, nn.LayerNorm, nn.Conv2d)


class ScaleShift(TaskWise):
    """``gamma_t * y + beta_t`` on the channel axis of one operation's output.

    Shapes: ``gamma`` (T, C), ``beta`` (T, C) (absent when ``shift=False``); the channel axis is the
    last for linears and norms (tokens (..., C)) and 1 for convolutions ((B, C, H, W)).
    """

    def __init__(self, switch: TaskSwitch, channels: int, channel_dim: int = -1, shift: bool = True,
                 init_std: float = 0.):
        super().__init__(switch)
        self.channel_dim, self.init_std = channel_dim, init_std
        self.gamma = nn.Parameter(torch.empty(switch.num_tasks, channels))
        self.beta = nn.Parameter(torch.empty(switch.num_tasks, channels)) if shift else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.gamma, 1.0, self.init_std) if self.init_std else nn.init.ones_(self.gamma)
        if self.beta is not None:
            nn.init.normal_(self.beta, 0.0, self.init_std) if self.init_std else nn.init.zeros_(self.beta)

    def _view(self, v: torch.Tensor, ndim: int) -> torch.Tensor:
        return v if self.channel_dim == -1 else v.view(-1, *([1] * (ndim - 2)))

    def hook(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        t = self.t
        out = output * self._view(self.gamma[t], output.dim())
        return out if self.beta is None else out + self._view(self.beta[t], output.dim())

    @torch.no_grad()
    def merge_into(self, base: nn.Module, t: int) -> None:
        """Fold task ``t``'s factors into ``base``'s weight and bias: ``W <- gamma W``,
        ``b <- gamma b + beta`` (the mergeable interface of :class:`~mmpeft.peft.attachment.PEFTAttachment`)."""
        gamma = self.gamma[t].to(base.weight.dtype)
        shape = (-1,) + (1,) * (base.weight.dim() - 1)
        base.weight.mul_(gamma.view(shape))
        if base.bias is not None:
            base.bias.mul_(gamma)
            if self.beta is not None:
                base.bias.add_(self.beta[t].to(base.bias.dtype))

    @torch.no_grad()
    def unmerge_from(self, base: nn.Module, t: int) -> None:
        """``b <- (b - beta) / gamma``, ``W <- W / gamma``; a zero gamma cannot be undone (an error)."""
        gamma = self.gamma[t].to(base.weight.dtype)
        if bool((gamma == 0).any()):
            raise ValueError(f'SSF: a scale gamma of task {t} is exactly 0, so the merged weight lost '
                             f'that channel; unmerge is impossible (reload the unmerged weights)')
        if base.bias is not None:
            if self.beta is not None:
                base.bias.sub_(self.beta[t].to(base.bias.dtype))
            base.bias.div_(gamma)
        base.weight.div_(gamma.view((-1,) + (1,) * (base.weight.dim() - 1)))

    def extra_repr(self) -> str:
        return f'num_tasks={self.num_tasks}, channels={self.gamma.shape[1]}, shift={self.beta is not None}'


@PEFT_METHODS.register_module()
class SSF(TaskWiseMethod):
    """Scale-and-shift every linear, LayerNorm and Conv2d output of the backbone.

    Args:
        init_std: sigma of the N(1, sigma) / N(0, sigma) initialisation; 0 (default) starts at the
            identity, so the network starts as the pretrained one.
        num_tasks, tasks: T task-wise sets (see :class:`~mmpeft.peft.taskwise.TaskWiseMethod`).
    """

    mergeable = True

    def __init__(self, init_std: float = 0., num_tasks: Optional[int] = None,
                 tasks: Optional[Sequence[str]] = None, frozen_eval: bool = True):
        super().__init__(num_tasks=num_tasks, tasks=tasks, frozen_eval=frozen_eval)
        if init_std < 0:
            raise ValueError(f'init_std must be >= 0, got {init_std!r}')
        self.init_std = init_std

    def _inject(self, peft) -> None:
        backbone = peft.model
        blocks = find_blocks(backbone)
        if any(b.family == 'pvt' for b in blocks):
            raise ValueError('SSF does not support mmdet PyramidVisionTransformer (PVT): its attention projects '
                             'queries / keys / values and the output inside nn.MultiheadAttention (in_proj_weight, '
                             'out_proj.weight), where no hook can scale and shift them. Fix: another method on PVT '
                             '(LoRA, BitFit, adapters, Polyhistor), or SSF on a Swin / ViT backbone')
        scope = transformer_scope(blocks)
        prefix = scope + '.' if scope else ''
        ops = [(prefix + n, m) for n, m in get_module(backbone, scope).named_modules()
               if isinstance(m, SSF_TYPES) and n]
        for name, m in ops:
            if isinstance(m, nn.LayerNorm):
                # channels-first LayerNorm2d normalises dim 1 of (B, C, H, W): not a token-wise op
                if not m.elementwise_affine or type(m).__name__.endswith('2d'):
                    continue
                channels, channel_dim = m.normalized_shape[-1], -1
            elif isinstance(m, nn.Linear):
                channels, channel_dim = m.out_features, -1
            else:
                channels, channel_dim = m.out_channels, 1
            shift = getattr(m, 'bias', None) is not None
            ss = peft.add(name, 'ssf', ScaleShift(self.switch, channels, channel_dim, shift, self.init_std))
            peft.hook(name, ss.hook, merge_with=ss)

    def __repr__(self) -> str:
        return f'SSF(init_std={self.init_std}, num_tasks={self.num_tasks})'
