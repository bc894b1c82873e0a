"""Parameter-selection methods: train a subset of the existing weights, inject nothing.

- ``FullFinetune``: every parameter (the upper-bound row of both papers).
- ``FrozenBackbone``: none (the "decoders only" row of Polyhistor Table 1; "linear probing" in HST).
- ``BitFit``: every bias (Zaken et al.); on Swin this includes the biases of patch embedding and patch
  merging (their norms' biases too), as the Polyhistor appendix counts them.
- ``LNTuning``: the affine parameters of every LayerNorm (HST's LN tuning).
- ``RelativePositionBias``: the relative position bias tables of windowed attention (Swin).

Task-wise selection (``num_tasks=T > 1``, Polyhistor's multi-task baselines): the frozen tensors stay
shared and each task gets a zero-initialised delta of every selected tensor, ``(T, *shape)``, so task
t computes with ``bias + delta_t`` (BitFit) or ``table + delta_t`` (relative bias): the same as T
separate fine-tunings of that subset, in one backbone. Biases are added at their operation's output
(linear, conv, norm); tables enter through Swin's windowed attention (see
:func:`~mmpeft.peft.layout.override_window_attention`).

Counts (Swin-T, 4 tasks): relative bias 0.09M (Table 1: 0.09); BitFit 0.21M with the ``bias`` tensors
alone, 0.30M (Table 1: 0.30) when the relative position bias tables are tuned too, i.e. Polyhistor's
BitFit took every parameter with "bias" in its name; ``relative_position_bias=True`` reproduces it.

``nn.MultiheadAttention`` (mmdet's PVT) keeps its query / key / value bias as ``in_proj_bias``: BitFit
trains it too. Task-wise, its delta and that of ``out_proj.bias`` act through
:class:`~mmpeft.peft.layout.SpatialReductionAttentionExtras` (``nn.MultiheadAttention`` calls neither
projection as a module); an ``nn.MultiheadAttention`` outside a PVT block is an error.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from ..registry import PEFT_METHODS
from .base import PEFTMethod
from .layout import InProjectionDelta, find_blocks, get_module
from .taskwise import TaskSwitch, TaskWise, TaskWiseMethod


@PEFT_METHODS.register_module()
class FullFinetune(PEFTMethod):
    """Train every parameter of the backbone."""

    def __init__(self, frozen_eval: bool = False):
        super().__init__(frozen_eval=frozen_eval)

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        return ['.*']


@PEFT_METHODS.register_module()
class FrozenBackbone(PEFTMethod):
    """Train nothing in the backbone (decoders only / linear probing)."""

    allows_empty = True

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        return []


class TaskDelta(TaskWise):
    """Task-wise delta ``(T, *shape)`` of one frozen tensor, zero at the start.

    As a forward hook it adds ``delta_t`` to an operation's output along the channel axis (a bias);
    as ``table()`` it returns ``frozen_table + delta_t`` for Swin's windowed attention.
    """

    def __init__(self, switch: TaskSwitch, frozen: nn.Parameter, channel_dim: int = -1):
        super().__init__(switch)
        self.channel_dim = channel_dim
        self.delta = nn.Parameter(torch.zeros(switch.num_tasks, *frozen.shape))
        self._frozen = [frozen]  # plain list: the frozen tensor keeps its own key

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.delta)

    def hook(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        d = self.delta[self.t]
        if self.channel_dim == 1:
            d = d.view(-1, *([1] * (output.dim() - 2)))
        return output + d

    def table(self) -> torch.Tensor:
        return self._frozen[0] + self.delta[self.t]

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """``delta_t`` whatever the input (a bias delta as :class:`~mmpeft.peft.layout.InProjectionDelta`
        takes it)."""
        return self.delta[self.t]


#: operations whose bias is added to their output: channel axis of that output
_BIAS_OWNERS = ((nn.Linear, -1), (nn.LayerNorm, -1), (nn.Conv1d, 1), (nn.Conv2d, 1), (nn.Conv3d, 1),
                (nn.GroupNorm, 1), (nn.modules.batchnorm._BatchNorm, 1))


class _TaskWiseSelection(TaskWiseMethod):
    """Selection methods with optional task-wise deltas (see the module docstring)."""

    def inject(self, peft) -> None:
        if self.num_tasks == 1:
            return  # single task: train the selected tensors themselves, nothing to inject
        super().inject(peft)

    def _add_bias_deltas(self, peft) -> None:
        backbone = peft.model
        mha = {n: m for n, m in backbone.named_modules() if isinstance(m, nn.MultiheadAttention)}
        pvt = {}  # PVT: nn.MultiheadAttention name -> (its SpatialReductionAttention, d)
        if mha:
            try:
                pvt = {b.in_proj: (b.attn, b.dims) for b in find_blocks(backbone) if b.in_proj is not None}
            except ValueError:  # no block layout known here: every nn.MultiheadAttention bias is an error below
                pvt = {}
        for name, p in list(backbone.named_parameters()):
            owner_name, _, local = name.rpartition('.')
            parent = owner_name.rpartition('.')[0]
            in_proj = owner_name in mha and local == 'in_proj_bias'
            out_proj = local == 'bias' and parent in mha and owner_name == f'{parent}.out_proj'
            if in_proj or out_proj:
                where = owner_name if in_proj else parent
                if where not in pvt:
                    raise ValueError(f'task-wise {type(self).__name__}: "{name}" belongs to the nn.MultiheadAttention '
                                     f'{where!r}, which uses its projections inside one function (no hook sees '
                                     f'them); supported only inside mmdet PVT blocks')
                sra, d = pvt[where]
                if in_proj:
                    delta = peft.add(owner_name, 'task_bias', TaskDelta(self.switch, p))
                    peft.spatial_reduction_attention(sra, in_proj=InProjectionDelta(delta.value, (0, 3 * d), d))
                    continue
                peft.spatial_reduction_attention(sra)  # out_proj is called as a module: its hook acts
            if local != 'bias':
                continue
            owner = get_module(backbone, owner_name)
            dim = next((d for cls, d in _BIAS_OWNERS if isinstance(owner, cls)), None)
            if dim is None:
                raise ValueError(f'task-wise {type(self).__name__}: "{name}" belongs to a '
                                 f'{type(owner).__name__}, whose bias is not simply added to its output; '
                                 f'supported: {[c.__name__ for c, _ in _BIAS_OWNERS]}')
            delta = peft.add(owner_name, 'task_bias', TaskDelta(self.switch, p, dim))
            peft.hook(owner_name, delta.hook)

    def _add_table_deltas(self, peft) -> None:
        backbone = peft.model
        found = False
        for name, p in list(backbone.named_parameters()):
            owner_name, _, local = name.rpartition('.')
            if local != 'relative_position_bias_table':
                continue
            found = True
            delta = peft.add(owner_name, 'task_table', TaskDelta(self.switch, p))
            peft.window_attention(owner_name, table=delta.table)
        if not found:
            raise ValueError(f'{type(backbone).__name__} has no relative_position_bias_table')


@PEFT_METHODS.register_module()
class BitFit(_TaskWiseSelection):
    """Train all bias terms: every parameter whose name ends in ``bias``.

    Args:
        relative_position_bias: also train Swin's relative position bias tables (Polyhistor's count).
        num_tasks, tasks: T task-wise deltas instead of training the shared biases.
    """

    def __init__(self, relative_position_bias: bool = False, num_tasks: Optional[int] = None,
                 tasks: Optional[Sequence[str]] = None, frozen_eval: bool = True):
        super().__init__(num_tasks=num_tasks, tasks=tasks, frozen_eval=frozen_eval)
        self.relative_position_bias = relative_position_bias

    def _inject(self, peft) -> None:
        self._add_bias_deltas(peft)
        if self.relative_position_bias:
            self._add_table_deltas(peft)

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        if self.num_tasks > 1:
            return super().trainable_patterns(backbone)
        patterns = [r'(.*\.)?(in_proj_)?bias$']  # in_proj_bias: nn.MultiheadAttention's q / k / v bias
        if self.relative_position_bias:
            patterns.append(r'(.*\.)?relative_position_bias_table$')
        return patterns


@PEFT_METHODS.register_module()
class LNTuning(PEFTMethod):
    """Train the weight and bias of every ``nn.LayerNorm`` (by type, whatever the module is named)."""

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        names = [n for n, m in backbone.named_modules() if isinstance(m, nn.LayerNorm) and n]
        return [rf'{n.replace(".", r"[.]")}\.(weight|bias)$' for n in names]


@PEFT_METHODS.register_module()
class RelativePositionBias(_TaskWiseSelection):
    """Train the relative position bias tables (``relative_position_bias_table`` in mmcls/mmseg Swin).

    Args:
        num_tasks, tasks: T task-wise deltas of every table instead of training the shared tables.
    """

    def __init__(self, num_tasks: Optional[int] = None, tasks: Optional[Sequence[str]] = None,
                 frozen_eval: bool = True):
        super().__init__(num_tasks=num_tasks, tasks=tasks, frozen_eval=frozen_eval)

    def _inject(self, peft) -> None:
        self._add_table_deltas(peft)

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        if self.num_tasks > 1:
            return super().trainable_patterns(backbone)
        return [r'(.*\.)?relative_position_bias_table$']
