"""Bottleneck adapters: Houlsby / Pfeiffer adapters, low-rank adapters, shared adapters, AdaptFormer.

An adapter maps a token ``x`` in ``R^d`` through a bottleneck of ``n = d / rho`` units::

    A(x) = W_up act(W_down LN(x) + b_down) + b_up,    W_down in R^{n x d}, W_up in R^{d x n}

and is inserted into a frozen block either *sequentially* after a sub-layer ``f`` (``f(x) + s A(f(x))``)
or *in parallel* with it (``f(x) + s A(x)``, He et al.'s unified view; AdaptFormer). ``W_up`` starts
at zero, so training starts from the pretrained function.

Placement (``position``): ``'mlp'`` one adapter per block, after the MLP (Pfeiffer; the unified-view
paper's single FFN adapter), ``'attn'`` after the attention's output projection, ``'both'`` two per
block (Houlsby).

How the defaults reproduce Polyhistor's counts (Table 1 and 6, Swin-T, 4 tasks, in M): Adapter rho=2
8.69 and Shared Adapter rho=2 2.20 are one adapter per block (``'mlp'``) whose parameter count is
``2dn + n + d`` *plus 2d*: a LayerNorm of the adapter input (as in the adapter-controller code of
Hyperformer / Compacter that the paper builds on), task-wise in both. Without it the counts are 8.65
/ 2.16 and every rho row is 0.03-0.04M short; with it all nine rows of Table 6 match to 0.01M.
The Shared Adapter shares the projections across tasks and keeps task-wise norms. The low-rank
adapter's count (0.34) is met by rank-2 factorised projections at both positions (0.336).
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import PEFT_METHODS
from .layout import activation, find_blocks, resolve_positions
from .taskwise import TaskSwitch, TaskWise, TaskWiseMethod


class BottleneckAdapter(TaskWise):
    """``A(x) = W_up act(W_down LN(x) + b_down) + b_up`` with task-wise (or shared) parameters.

    Shapes (``Tp = 1`` when the projections are shared by all tasks, else T):
    ``down`` (Tp, n, d), ``up`` (Tp, d, n) — or their rank-r factors ``down_u`` (Tp, n, r),
    ``down_v`` (Tp, r, d), ``up_u`` (Tp, d, r), ``up_v`` (Tp, r, n); ``down_bias`` (Tp, n),
    ``up_bias`` (Tp, d); ``norm_weight`` / ``norm_bias`` (T, d). Input and output (..., d).

    Args:
        switch: the method's task switch.
        dims: d, the token width.
        hidden_dims: n, the bottleneck width.
        act: activation name (``relu``, ``gelu``, ``silu``).
        with_norm: a task-wise LayerNorm on the adapter input (see the module docstring).
        rank: r, factorise both projections as rank-r products (low-rank adapter); None: full.
        shared: one set of projections for all tasks (Shared Adapter); norms stay task-wise.
        scale: s, the factor on the adapter output.
        parallel: ``f(x) + s A(x)`` instead of ``f(x) + s A(f(x))``.
    """

    def __init__(self, switch: TaskSwitch, dims: int, hidden_dims: int, act: str = 'relu',
                 with_norm: bool = True, rank: Optional[int] = None, shared: bool = False,
                 scale: float = 1.0, parallel: bool = False):
        super().__init__(switch)
        self.dims, self.hidden_dims, self.rank, self.shared = dims, hidden_dims, rank, shared
        self.scale, self.parallel, self.with_norm = float(scale), parallel, with_norm
        tp = 1 if shared else switch.num_tasks
        self._make_weights(tp)
        self.down_bias = nn.Parameter(torch.empty(tp, hidden_dims))
        self.up_bias = nn.Parameter(torch.empty(tp, dims))
        if with_norm:
            self.norm_weight = nn.Parameter(torch.empty(switch.num_tasks, dims))
            self.norm_bias = nn.Parameter(torch.empty(switch.num_tasks, dims))
        self.act = activation(act)
        self.reset_parameters()

    # -- weights (overridden by the PHM family) ---------------------------------------------------
    def _make_weights(self, tp: int) -> None:
        d, n, r = self.dims, self.hidden_dims, self.rank
        if r is None:
            self.down = nn.Parameter(torch.empty(tp, n, d))
            self.up = nn.Parameter(torch.empty(tp, d, n))
        else:
            self.down_u = nn.Parameter(torch.empty(tp, n, r))
            self.down_v = nn.Parameter(torch.empty(tp, r, d))
            self.up_u = nn.Parameter(torch.empty(tp, d, r))
            self.up_v = nn.Parameter(torch.empty(tp, r, n))

    def _reset_weights(self) -> None:
        d = self.dims
        if self.rank is None:
            for i in range(self.down.shape[0]):
                nn.init.kaiming_uniform_(self.down.data[i], a=math.sqrt(5))
            nn.init.zeros_(self.up)
        else:
            # W_down = U V with Var(W) ~ that of a Kaiming-uniform linear (1 / 3d): Var(U)Var(V) r = 1/(3d)
            std = (3.0 * d * self.rank) ** -0.25
            nn.init.normal_(self.down_u, std=std)
            nn.init.normal_(self.down_v, std=std)
            nn.init.normal_(self.up_v, std=std)
            nn.init.zeros_(self.up_u)  # W_up = 0: identity at the start

    def down_weight(self, i: int) -> torch.Tensor:
        return self.down[i] if self.rank is None else self.down_u[i] @ self.down_v[i]

    def up_weight(self, i: int) -> torch.Tensor:
        return self.up[i] if self.rank is None else self.up_u[i] @ self.up_v[i]

    # -- common -----------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        self._reset_weights()
        nn.init.zeros_(self.down_bias)
        nn.init.zeros_(self.up_bias)
        if self.with_norm:
            nn.init.ones_(self.norm_weight)
            nn.init.zeros_(self.norm_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.t
        i = 0 if self.shared else t
        if self.with_norm:
            x = F.layer_norm(x, (self.dims,), self.norm_weight[t], self.norm_bias[t])
        h = self.act(F.linear(x, self.down_weight(i), self.down_bias[i]))
        return F.linear(h, self.up_weight(i), self.up_bias[i])

    def hook(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the sub-layer ``f``: ``f(x) + s A(f(x))`` (sequential) or ``f(x) + s A(x)``."""
        return output + self.scale * self(args[0] if self.parallel else output)

    def extra_repr(self) -> str:
        return (f'num_tasks={self.num_tasks}, dims={self.dims}, hidden_dims={self.hidden_dims}, '
                f'rank={self.rank}, shared={self.shared}, parallel={self.parallel}, scale={self.scale}')


@PEFT_METHODS.register_module()
class Adapter(TaskWiseMethod):
    """Bottleneck adapters in every transformer block (Houlsby et al. / Pfeiffer et al.).

    Args:
        reduction_ratio: rho = d / n, the down-projection ratio (Polyhistor Table 6: 1, 2, 4, 8, 16); must
            divide every block width d, and be >= 1 (see :meth:`bottleneck`).
        hidden_dims: n for every block instead of ``d / rho`` (AdaptFormer-64: 64); at most every d.
        position: ``'mlp'`` (one per block after the MLP, default), ``'attn'``, ``'both'`` (Houlsby).
        mode: ``'sequential'`` (after the sub-layer) or ``'parallel'`` (beside it, same input).
        scale: s, factor on the adapter output.
        act: activation of the bottleneck.
        with_norm: task-wise LayerNorm on the adapter input (needed for the paper's counts).
        rank: r, factorise the projections (low-rank adapter); None: full matrices.
        shared: share the projections across tasks (Shared Adapter).
        num_tasks, tasks: T task-wise sets (see :class:`~mmpeft.peft.taskwise.TaskWiseMethod`).
    """

    adapter_cls = BottleneckAdapter

    def __init__(self, reduction_ratio: float = 2, hidden_dims: Optional[int] = None,
                 position: str = 'mlp', mode: str = 'sequential', scale: float = 1.0,
                 act: str = 'relu', with_norm: bool = True, rank: Optional[int] = None,
                 shared: bool = False, num_tasks: Optional[int] = None,
                 tasks: Optional[Sequence[str]] = None, frozen_eval: bool = True):
        super().__init__(num_tasks=num_tasks, tasks=tasks, frozen_eval=frozen_eval)
        if hidden_dims is None and not (reduction_ratio and reduction_ratio > 0):
            raise ValueError(f'reduction_ratio must be positive, got {reduction_ratio!r}')
        if hidden_dims is not None and (not isinstance(hidden_dims, int) or hidden_dims < 1):
            raise ValueError(f'hidden_dims must be a positive int, got {hidden_dims!r}')
        if mode not in ('sequential', 'parallel'):
            raise ValueError(f"mode must be 'sequential' or 'parallel', got {mode!r}")
        if rank is not None and (not isinstance(rank, int) or rank < 1):
            raise ValueError(f'rank must be a positive int or None, got {rank!r}')
        activation(act)  # fail early on an unknown name
        self.reduction_ratio, self.hidden_dims = reduction_ratio, hidden_dims
        self.positions = resolve_positions(position)
        self.mode, self.scale, self.act, self.with_norm = mode, scale, act, with_norm
        self.rank, self.shared = rank, shared

    def bottleneck(self, dims: int, block: str = '') -> int:
        """n for a block of width d: ``hidden_dims``, or ``d / rho`` exactly (a fraction is an error, not
        silently floored); between 1 and d (a bottleneck wider than its input is not an adapter) and at
        least the low-rank ``rank`` (a larger one adds parameters, not rank)."""
        where = f'block {block!r} (width d={dims})' if block else f'width d={dims}'
        what = f'hidden_dims={self.hidden_dims}'
        if self.hidden_dims is not None:
            n = self.hidden_dims
        else:
            what = f'reduction_ratio={self.reduction_ratio}'
            exact = dims / self.reduction_ratio
            n = round(exact)
            if n < 1:
                raise ValueError(f'{type(self).__name__}: {what} leaves no hidden unit for {where} '
                                 f'(n = d / rho = {exact:g}); use reduction_ratio <= {dims}')
            if abs(exact - n) > 1e-6:
                raise ValueError(f'{type(self).__name__}: {what} does not divide {where} (n = d / rho = '
                                 f'{exact:g}); choose a reduction_ratio dividing every block width, or set hidden_dims')
        if n > dims:
            raise ValueError(f'{type(self).__name__}: {what} gives a bottleneck n={n} wider than {where}; '
                             f'use hidden_dims <= {dims} / reduction_ratio >= 1')
        if self.rank is not None and self.rank > n:
            raise ValueError(f'{type(self).__name__}: rank={self.rank} exceeds the bottleneck n={n} of {where}: '
                             f'the factorised projections cannot have a rank above min(n, d) = {n}; '
                             f'use rank <= {n}')
        return n

    def make_adapter(self, dims: int, block: str = '') -> BottleneckAdapter:
        return self.adapter_cls(self.switch, dims, self.bottleneck(dims, block), act=self.act,
                                with_norm=self.with_norm, rank=self.rank, shared=self.shared,
                                scale=self.scale, parallel=self.mode == 'parallel')

    def _inject(self, peft) -> None:
        parallel = self.mode == 'parallel'
        for blk in find_blocks(peft.model):
            for pos in self.positions:
                adapter = peft.add(blk.name, f'adapter_{pos}', self.make_adapter(blk.dims, blk.name))
                # sequential: after the attention's output projection / the MLP (before residual);
                # parallel: beside the whole attention / MLP, reading the same normalised input
                target = {('attn', False): blk.proj, ('attn', True): blk.attn,
                          ('mlp', False): blk.mlp, ('mlp', True): blk.ffn}[pos, parallel]
                peft.hook(target, adapter.hook)

    def __repr__(self) -> str:
        n = (f'hidden_dims={self.hidden_dims}' if self.hidden_dims
             else f'reduction_ratio={self.reduction_ratio}')
        return (f'{type(self).__name__}({n}, positions={self.positions}, mode={self.mode}, '
                f'rank={self.rank}, shared={self.shared}, num_tasks={self.num_tasks})')


@PEFT_METHODS.register_module()
class LowRankAdapter(Adapter):
    """Adapters whose projections are rank-r products (the low-rank adapter baseline of Compacter).

    Defaults (``rank=2`` at both positions, rho=2, with norm) give Polyhistor's 0.34M on Swin-T
    with 4 tasks; the paper does not state r or the placement (rank 1 gives 0.23M, one per block
    with rank 5 gives 0.33M).
    """

    def __init__(self, rank: int = 2, reduction_ratio: float = 2, position: str = 'both', **kwargs):
        super().__init__(reduction_ratio=reduction_ratio, position=position, rank=rank, **kwargs)


@PEFT_METHODS.register_module()
class SharedAdapter(Adapter):
    """One adapter per block shared by all tasks (its projections); task-wise input norms."""

    def __init__(self, reduction_ratio: float = 2, **kwargs):
        kwargs.setdefault('shared', True)
        super().__init__(reduction_ratio=reduction_ratio, **kwargs)


@PEFT_METHODS.register_module()
class AdaptFormer(Adapter):
    """AdaptFormer (Chen et al., 2022): a scaled bottleneck beside the MLP, reading its input.

    ``x = x' + MLP(LN(x')) + s * W_up ReLU(W_down LN(x'))`` with n = 64 ("AdaptFormer-64") and the
    fixed scale s = 0.1; the LN is the block's own (frozen) norm, so no extra norm.
    """

    def __init__(self, hidden_dims: int = 64, scale: float = 0.1, act: str = 'relu',
                 with_norm: bool = False, **kwargs):
        kwargs.setdefault('position', 'mlp')
        kwargs.setdefault('mode', 'parallel')
        super().__init__(hidden_dims=hidden_dims, scale=scale, act=act, with_norm=with_norm, **kwargs)
