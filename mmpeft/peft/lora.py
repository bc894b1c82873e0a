"""LoRA (Hu et al., 2021): a trainable low-rank update of frozen attention projections.

For a frozen linear ``y = W x + b`` with ``W`` in ``R^{d_out x d_in}``::

    y = W x + b + s * B A x,        A in R^{r x d_in},  B in R^{d_out x r}

with rank ``r`` and output scale ``s``. ``A`` is Kaiming-uniform, ``B`` zero, so training starts from
the pretrained function. After training ``W <- W + s B A`` folds the update into the frozen weight
(``backbone.peft.merge()``, :meth:`LoRABranch.merge_into`), and the merged network is the plain
architecture at the plain speed.

Defaults follow Polyhistor sec. 5.2 ("LoRA applied the low-rank decomposition on attention layers ...
rank r = 4 and the adapter output scale (i.e., 4)"): ``rank=4``, ``scaling=4`` on the fused ``qkv``
projection of every block. With ``num_tasks=T`` each target holds T pairs ``(A_t, B_t)``.

Polyhistor's count (Table 1: 0.32M on Swin-T, 4 tasks) is ``r (d + 3d)`` per block *plus 2d*: the
paper calls the scale an "adapter output scale", i.e. LoRA ran inside its adapter code, whose modules
carry a LayerNorm on their input (the same 2d that its Adapter and Compacter rows show, see
:mod:`mmpeft.peft.adapter`). ``norm=True`` reproduces that (0.318M) at the price of mergeability (a
LayerNorm inside the branch does not fold into ``W``); the default, plain LoRA, gives 0.283M.

mmdet's PVT packs its query / key / value projection in ``nn.MultiheadAttention.in_proj_weight`` (3d, d),
no ``nn.Linear``: there the ``qkv`` / ``q`` / ``k`` / ``v`` branches live under ``attn.attn`` (``lora_qkv``
...) and change the projected queries (from the tokens) and keys / values (from the spatially reduced
tokens) through :class:`~mmpeft.peft.layout.SpatialReductionAttentionExtras`; ``proj`` acts on
``attn.attn.out_proj``. Such an attachment does not merge (the attention runs through the extras class);
the MLP's ``fc1`` / ``fc2`` are 1x1 convolutions there, which LoRA does not target (an error).
"""
import math
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import PEFT_METHODS
from .layout import InProjectionDelta, find_blocks, get_module
from .taskwise import TaskSwitch, TaskWise, TaskWiseMethod

#: targets LoRA knows: the fused qkv (one pair over all 3d outputs), one of its q / k / v row blocks
#: (one pair each, as the LoRA paper's W_q / W_v), the attention output projection, the MLP linears
LORA_TARGETS = ('qkv', 'q', 'k', 'v', 'proj', 'fc1', 'fc2')


class LoRABranch(TaskWise):
    """``s * B_t A_t x`` added to output rows ``rows`` of one frozen linear.

    Shapes: ``A`` (T, r, d_in), ``B`` (T, d_rows, r); input ``x`` (..., d_in); output (..., d_out).
    """

    def __init__(self, switch: TaskSwitch, in_features: int, out_rows: int, rank: int, scaling: float,
                 rows: Optional[Tuple[int, int]] = None, dropout: float = 0., norm: bool = False):
        super().__init__(switch)
        self.rank, self.scaling, self.rows = rank, float(scaling), rows
        self.A = nn.Parameter(torch.empty(switch.num_tasks, rank, in_features))
        self.B = nn.Parameter(torch.empty(switch.num_tasks, out_rows, rank))
        if norm:  # task-wise LayerNorm on the branch input, (T, d_in) each
            self.norm_weight = nn.Parameter(torch.empty(switch.num_tasks, in_features))
            self.norm_bias = nn.Parameter(torch.empty(switch.num_tasks, in_features))
        self.norm = norm
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for t in range(self.num_tasks):
            # as nn.Linear initialises its weight: A random, B zero -> the update starts at zero
            nn.init.kaiming_uniform_(self.A.data[t], a=math.sqrt(5))
        nn.init.zeros_(self.B)
        if self.norm:
            nn.init.ones_(self.norm_weight)
            nn.init.zeros_(self.norm_bias)

    def delta_weight(self, t: int) -> torch.Tensor:
        """``s * B_t A_t``: (d_rows, d_in)."""
        return self.scaling * (self.B[t] @ self.A[t])

    def _rows(self, base: nn.Linear) -> torch.Tensor:
        return base.weight if self.rows is None else base.weight[self.rows[0]:self.rows[1]]

    @torch.no_grad()
    def merge_into(self, base: nn.Linear, t: int) -> None:
        """``W <- W + s B_t A_t`` (the mergeable interface of :class:`~mmpeft.peft.attachment.PEFTAttachment`)."""
        if self.norm:
            raise ValueError('LoRA(norm=True) cannot be merged: the LayerNorm inside each branch makes '
                             'the update depend non-linearly on the input')
        self._rows(base).add_(self.delta_weight(t).to(base.weight.dtype))

    @torch.no_grad()
    def unmerge_from(self, base: nn.Linear, t: int) -> None:
        """``W <- W - s B_t A_t``."""
        self._rows(base).sub_(self.delta_weight(t).to(base.weight.dtype))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """``s B_t A_t x`` (..., d_rows) for the branch input ``x`` (..., d_in) (after the branch norm)."""
        t = self.t
        if self.norm:
            x = F.layer_norm(x, x.shape[-1:], self.norm_weight[t], self.norm_bias[t])
        return F.linear(F.linear(self.dropout(x), self.A[t]), self.B[t]) * self.scaling

    def hook(self, module: nn.Linear, args, output: torch.Tensor) -> torch.Tensor:
        delta = self.delta(args[0])
        if self.rows is None:
            return output + delta
        lo, hi = self.rows
        return torch.cat([output[..., :lo], output[..., lo:hi] + delta, output[..., hi:]], dim=-1)

    def extra_repr(self) -> str:
        return (f'num_tasks={self.num_tasks}, rank={self.rank}, scaling={self.scaling}'
                + (f', rows={self.rows}' if self.rows else ''))


@PEFT_METHODS.register_module()
class LoRA(TaskWiseMethod):
    """Low-rank updates of frozen linears of every transformer block.

    Args:
        rank: r, the rank of ``B A``; at most ``min(d_out, d_in)`` of every targeted layer (larger is an
            error, equal a warning: see :meth:`_check_rank`).
        scaling: s, the output scale of the update (Polyhistor: 4). ``alpha`` overrides it as
            ``s = alpha / r`` (the LoRA paper's convention).
        alpha: see ``scaling``.
        targets: which linears of each block, from ``LORA_TARGETS``: ``'qkv'`` (one pair on the fused
            projection), ``'q'`` / ``'k'`` / ``'v'`` (one pair per row block of the fused projection),
            ``'proj'``, ``'fc1'``, ``'fc2'``.
        dropout: dropout on the branch input (LoRA paper), 0 by default.
        norm: a task-wise LayerNorm on the branch input (Polyhistor's count; not mergeable).
        num_tasks, tasks: T task-wise sets (see :class:`~mmpeft.peft.taskwise.TaskWiseMethod`).
    """

    mergeable = True

    def __init__(self, rank: int = 4, scaling: float = 4.0, alpha: Optional[float] = None,
                 targets: Sequence[str] = ('qkv',), dropout: float = 0., norm: bool = False,
                 num_tasks: Optional[int] = None, tasks: Optional[Sequence[str]] = None,
                 frozen_eval: bool = True):
        super().__init__(num_tasks=num_tasks, tasks=tasks, frozen_eval=frozen_eval)
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f'LoRA rank must be a positive int, got {rank!r}')
        targets = (targets,) if isinstance(targets, str) else tuple(targets)
        unknown = [t for t in targets if t not in LORA_TARGETS]
        if unknown or not targets:
            raise ValueError(f'unknown LoRA target(s) {unknown or targets!r}; choose from {LORA_TARGETS}')
        if 'qkv' in targets and {'q', 'k', 'v'} & set(targets):
            raise ValueError(f'LoRA targets {targets}: "qkv" already covers q, k and v')
        self.rank = rank
        self.scaling = alpha / rank if alpha is not None else scaling
        self.targets = targets
        self.dropout = dropout
        self.norm = norm
        self.mergeable = not norm

    def _sites(self, backbone: nn.Module) -> List[Tuple]:
        """(target, linear name, linear, updated rows, number of rows, block) for every targeted linear; on
        PVT the "linear" of q / k / v is the ``nn.MultiheadAttention`` holding the packed projection."""
        sites = []
        for blk in find_blocks(backbone):
            for target in self.targets:
                if blk.in_proj is not None and target in ('qkv', 'q', 'k', 'v'):  # PVT: packed in_proj_weight
                    d = blk.dims
                    i = 'qkv'.index(target) if target != 'qkv' else None
                    rows = None if i is None else (i * d, (i + 1) * d)
                    sites.append((target, blk.in_proj, get_module(backbone, blk.in_proj), rows,
                                  3 * d if i is None else d, blk))
                    continue
                fix = (f"choose LoRA targets from {('qkv', 'q', 'k', 'v', 'proj')} on this backbone"
                       if blk.family == 'pvt' else '')
                linear_name = (blk.out_proj if target == 'proj' else
                               blk.require('qkv' if target in ('q', 'k', 'v') else target,
                                           f'LoRA target {target!r}', fix))
                linear: nn.Linear = get_module(backbone, linear_name)
                rows, out_rows = None, linear.out_features
                if target in ('q', 'k', 'v'):
                    d = linear.in_features
                    i = 'qkv'.index(target)
                    rows, out_rows = (i * d, (i + 1) * d), d
                sites.append((target, linear_name, linear, rows, out_rows, blk))
        return sites

    def _check_rank(self, sites) -> None:
        """A rank above a layer's width adds parameters without adding rank (``B A`` has rank at most
        ``min(d_in, d_out)``): reject it. A rank equal to the width is a full-rank update, i.e. full
        fine-tuning of that weight with more parameters than the weight: allowed (a valid baseline), warned."""
        width = {name: (out_rows, _in_features(lin)) for _, name, lin, _, out_rows, _ in sites}
        too_big = [n for n, (d_out, d_in) in width.items() if self.rank > min(d_out, d_in)]
        if too_big:
            name = min(too_big, key=lambda n: min(width[n]))
            d_out, d_in = width[name]
            raise ValueError(
                f'LoRA rank={self.rank} exceeds the width of {len(too_big)} targeted layer(s), e.g. {name!r} '
                f'(update of shape {d_out} x {d_in}): B A cannot have a rank above min(d_out, d_in) = '
                f'{min(d_out, d_in)}, so the extra rank only adds parameters. Set rank <= '
                f'{min(min(w) for w in width.values())} (the narrowest targeted layer), or fine-tune fully')
        full = [n for n, w in width.items() if self.rank == min(w)]
        if full:
            warnings.warn(f'LoRA rank={self.rank} equals the width of {full[:3]}: a full-rank update with more '
                          f'parameters than the weight itself; a smaller rank is what LoRA is for')

    def _inject(self, peft) -> None:
        sites = self._sites(peft.model)
        self._check_rank(sites)
        for target, linear_name, linear, rows, out_rows, blk in sites:
            branch = LoRABranch(self.switch, _in_features(linear), out_rows, self.rank, self.scaling,
                                rows, self.dropout, self.norm)
            owner, _, local = linear_name.rpartition('.')
            if isinstance(linear, nn.MultiheadAttention):  # PVT: q / k / v rows of the packed projection
                peft.add(linear_name, f'lora_{target}', branch)
                peft.spatial_reduction_attention(blk.attn, in_proj=InProjectionDelta(
                    branch.delta, rows or (0, 3 * blk.dims), blk.dims))
                continue
            attr = f'lora_{target}' if target in ('q', 'k', 'v') else f'lora_{local}'
            peft.add(owner, attr, branch)
            if blk.in_proj is not None:  # PVT's out_proj: called as a module only by the extras class
                peft.spatial_reduction_attention(blk.attn)
            # merging folds s B A into the linear's weight; with the norm the branch is not linear
            peft.hook(linear_name, branch.hook, merge_with=None if self.norm else branch)

    def __repr__(self) -> str:
        return (f'LoRA(rank={self.rank}, scaling={self.scaling}, targets={self.targets}, '
                f'norm={self.norm}, num_tasks={self.num_tasks})')


def _in_features(linear: nn.Module) -> int:
    """d_in of an nn.Linear, or of the packed projection of an nn.MultiheadAttention (PVT)."""
    return linear.embed_dim if isinstance(linear, nn.MultiheadAttention) else linear.in_features
