"""PolyhistorSwin: a frozen mmseg Swin Transformer with task-conditioned adapters.

Three methods of the Polyhistor paper (Liu et al., NeurIPS 2022), chosen by ``mode``:

- ``'hyperformer'`` (baseline, eq. 2): per adapter a hyper-network ``W_hat_l in R^{k x 2dn}`` maps the task
  embedding ``V_t in R^k`` to the adapter weight ``[W_down; W_up^T] in R^{d x 2n}``.
- ``'polyhistor'`` (eq. 3): per adapter a pair of decomposed hyper-networks producing the rank-``r``
  factors ``Pi_p in R^{d x r}``, ``Pi_q in R^{2n x r}`` of that weight.
- ``'polyhistor_lite'`` (eqs. 4-6): one pair of hyper-networks shared by every adapter and task, fed
  ``[V_t; V_{l,i}]`` (``k/2`` each), emits Template Kernels ``d1 x 2n1`` (``d1`` = stage-1 width); per
  task and adapter, ``s`` Scaling Kernels ``s x s`` expand them by Kronecker products to the stage's
  ``(d1 s) x (2 n1 s)``.

Config words are the paper's symbols: ``reduction_ratio`` (rho = d/n), ``rank`` (r; an int, or ``'n/q'``
for ``max(1, n // q)`` per adapter), ``embed_dims_task`` (k), ``scales`` (s per stage, Lite). Defaults per
mode (:data:`MODE_DEFAULTS`) are those of appendix G (Polyhistor: rho=16, r=n/4, k=64; Lite: rho=2,
r=n/4, k=64) and of Tables 1/6 for Hyperformer (rho=8, k=64).

What the paper leaves open, and what is done here (the parameter counts these choices give are in
``tests/test_models/test_polyhistor_configs.py``):

- placement: Houlsby / Hyperformer style, two adapters per Swin block, on the output of the window
  attention and on the output of the MLP, each before its residual addition:
  ``x = x + h + branch(h)`` with ``h`` the sub-layer output (eq. 1's skip is the ``+ h``);
- the adapter branch is ``LN_{gamma,beta}(GELU(h W_down + b_down) W_up + b_up)``; Hyperformer and
  Polyhistor generate ``b_down, b_up, gamma, beta`` from the task embedding with a per-adapter
  hyper-network (``k (n + 3d)`` parameters); Lite keeps them as per-task parameters of each adapter;
- ``gamma, beta`` start at zero, so at initialisation the model computes exactly the frozen Swin;
- the backbone's own LayerNorms train (shared by the tasks; ``train_backbone_norms``, 26k parameters on
  Swin-T), as adapter tuning since Houlsby et al. does; it matters only for Lite's small counts;
- Lite's shared pair gives ``W_down`` and ``W_up^T`` their own rank-``r`` factors
  (``factorization='per_projection'``): the paper's Lite counts (Table 2 over k, Table 3 over rho) grow
  as ``2k(d+n)r``; ``'joint'`` is eq. 5 literally (``k(d+2n)r``). Polyhistor uses ``'joint'`` (Table 5).

Execution: adapters depend on the task, so the backbone runs once per task. ``forward(x, tasks)``
returns ``{task: [4 feature maps]}``; with ``batched=True`` all asked tasks run as one pass over
``T*B`` samples, task-major, each adapter applying per-task weights with one ``bmm`` (the tokens before
the first adapter, i.e. patch embedding and the first attention, are computed once and shared).
A single task is always one plain pass.

The Swin itself is mmseg's :class:`SwinTransformer` (this class subclasses it), so its state-dict keys
are unchanged; :class:`PretrainedSwin` loads official (Microsoft) Swin checkpoints as users have them,
converting the layout, and treats a missing or unexpected backbone key as an error.
"""
import re
from collections import OrderedDict
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmseg.models.backbones.swin import SwinBlock
from torch import Tensor

from ..peft.attachment import PEFTAttachment
from ..peft.hypernet import AdapterHyperNetwork, AdapterParams, DecomposedHyperNetwork, LiteAdapterSite, adapter_branch
from ..registry import MODELS
from .pretrained_swin import PretrainedSwin

MODES = ('polyhistor', 'polyhistor_lite', 'hyperformer')
DEFAULT_TASKS = ('semseg', 'parts', 'sal', 'normals')
POSITIONS = ('attn', 'ffn')

#: Defaults per mode. Polyhistor / Lite: appendix G. Hyperformer: the rho=8 row of Tables 1 and 6.
MODE_DEFAULTS = {
    'hyperformer': dict(reduction_ratio=8, rank=None, embed_dims_task=64, factorization=None),
    'polyhistor': dict(reduction_ratio=16, rank='n/4', embed_dims_task=64, factorization='joint'),
    'polyhistor_lite': dict(reduction_ratio=2, rank='n/4', embed_dims_task=64, factorization='per_projection'),
}


def resolve_rank(rank: Union[int, str], n: int) -> int:
    """``rank`` as an int, or ``'n/q'`` -> ``max(1, n // q)`` (e.g. n=6, 'n/4' -> 1)."""
    if isinstance(rank, bool):
        raise TypeError(f'rank must be an int or a string like "n/4", got {rank!r}')
    if isinstance(rank, int):
        if rank < 1:
            raise ValueError(f'rank must be >= 1, got {rank}')
        return rank
    if isinstance(rank, str):
        m = re.fullmatch(r'\s*n\s*/\s*(\d+)\s*', rank)
        if m and int(m.group(1)) > 0:
            return max(1, n // int(m.group(1)))
    raise ValueError(f'rank must be a positive int or a string "n/<int>" (e.g. "n/4"), got {rank!r}')


def _whole(name: str, value, allowed: str) -> int:
    """``value`` as an int if it is a whole number >= 1 (``2`` or ``2.0``); anything else is an error naming
    ``name``: ``int(2.5)`` would silently build another model than the one configured."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1 or value != int(value):
        raise ValueError(f'PolyhistorSwin: {name}={value!r} is not allowed; {name} must be {allowed}')
    return int(value)


def _repeat_groups(x: Tensor, groups: int) -> Tensor:
    """``(B, ...)`` -> ``(groups * B, ...)``, task-major (sample ``t * B + b`` is sample ``b`` for task t)."""
    return x.unsqueeze(0).expand(groups, *x.shape).reshape(groups * x.shape[0], *x.shape[1:])


@MODELS.register_module()
class PolyhistorSwin(PretrainedSwin):
    """Frozen Swin Transformer + task-conditioned adapters (Hyperformer, Polyhistor, Polyhistor-Lite).

    Args:
        mode: ``'polyhistor'``, ``'polyhistor_lite'`` or ``'hyperformer'``.
        tasks: names of the ``T`` tasks (one task embedding each), default the four PASCAL-Context tasks.
        reduction_ratio: rho = d / n (``d`` the stage width, ``n`` the adapter bottleneck; for Lite ``d``
            is the stage-1 width, the Template Kernel's). ``None``: the mode's default.
        rank: r, an int or ``'n/q'``; ignored by (and an error for) Hyperformer. ``None``: default.
        embed_dims_task: k, the task-embedding size (Lite: task and layer embeddings of k/2 each).
        scales: s per stage for Lite; ``None`` derives them from the stage widths (1, 2, 4, 8).
        factorization: ``'joint'`` (eqs. 3/5 as written) or ``'per_projection'``; ``None``: default.
        positions: where adapters go in each block, a subset of ``('attn', 'ffn')``.
        batched: run all asked tasks as one pass of ``T*B`` samples (else one pass per task).
        train_backbone_norms: also train the Swin's LayerNorms (shared by the tasks).
        frozen_eval: keep frozen dropout / drop-path modules in eval mode during training.
        **kwargs: :class:`SwinTransformer` arguments (``embed_dims``, ``depths``, ``num_heads``,
            ``window_size``, ``init_cfg=dict(type='Pretrained', checkpoint=...)`` ...).
    """

    task_conditioned = True
    _added_keys = re.compile(r'^(task_embeds|adapters\.|template_hypernet\.)')

    def __init__(self, mode: str, tasks: Sequence[str] = DEFAULT_TASKS,
                 reduction_ratio: Optional[int] = None, rank: Union[int, str, None] = None,
                 embed_dims_task: Optional[int] = None, scales: Optional[Sequence[int]] = None,
                 factorization: Optional[str] = None, positions: Sequence[str] = POSITIONS,
                 batched: bool = True, train_backbone_norms: bool = True, frozen_eval: bool = True,
                 **kwargs):
        if mode not in MODES:
            raise ValueError(f'PolyhistorSwin: mode must be one of {MODES}, got {mode!r}')
        tasks = tuple(tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f'PolyhistorSwin: tasks must be distinct names, got {tasks!r}')
        bad_pos = [p for p in positions if p not in POSITIONS]
        if bad_pos or not positions:
            raise ValueError(f'PolyhistorSwin: positions must be a non-empty subset of {POSITIONS}, '
                             f'got {tuple(positions)!r}')
        if mode == 'hyperformer' and rank is not None:
            raise ValueError('PolyhistorSwin: Hyperformer generates full adapter weights; rank must be None')
        super().__init__(**kwargs)
        defaults = MODE_DEFAULTS[mode]
        self.mode = mode
        self.tasks = tasks
        self.reduction_ratio = _whole(
            'reduction_ratio', reduction_ratio if reduction_ratio is not None else defaults['reduction_ratio'],
            'a whole number >= 1 dividing the adapter input sizes (n = d / rho), e.g. 1, 2, 4, 8, 16')
        self.rank = rank if rank is not None else defaults['rank']
        self.embed_dims_task = _whole(
            'embed_dims_task', embed_dims_task if embed_dims_task is not None else defaults['embed_dims_task'],
            'a whole number >= 2 (even for polyhistor_lite), e.g. 64')
        self.factorization = factorization if factorization is not None else defaults['factorization']
        self.positions = tuple(p for p in POSITIONS if p in positions)
        self.batched = batched
        k, rho = self.embed_dims_task, self.reduction_ratio
        if k < 2 or (mode == 'polyhistor_lite' and k % 2):
            need = ' and even for Lite ([task; layer] embeddings of k/2 each)' if mode == 'polyhistor_lite' else ''
            raise ValueError(f'PolyhistorSwin: embed_dims_task (k) must be >= 2{need}, got {k}')

        def bottleneck(d: int) -> int:
            if rho < 1 or d % rho:
                raise ValueError(f'PolyhistorSwin: reduction_ratio (rho={rho}) must divide the adapter input '
                                 f'size d={d} (n = d / rho); choose one dividing every stage width '
                                 f'{tuple(self.num_features)}')
            return d // rho

        # adapter sites, in forward order: (name, stage, block, position)
        self.sites: List[Tuple[str, int, int, str]] = [
            (f'stage{i}_block{j}_{pos}', i, j, pos)
            for i, stage in enumerate(self.stages) for j in range(len(stage.blocks)) for pos in self.positions]
        widths = self.num_features
        self.adapters = nn.ModuleDict()
        if mode == 'polyhistor_lite':
            d1 = widths[0]
            scales = (tuple(_whole('scales', s, 'whole numbers with d1 * s = width per stage, e.g. (1, 2, 4, 8)')
                            for s in scales) if scales is not None else tuple(w // d1 for w in widths))
            if len(scales) != len(widths) or any(d1 * s != w for s, w in zip(scales, widths)):
                raise ValueError(f'PolyhistorSwin: scales {scales} do not map the stage-1 width {d1} to the stage '
                                 f'widths {tuple(widths)} (need d1 * s = width per stage)')
            self.scales = scales
            n1 = bottleneck(d1)
            self.task_embeds = nn.Parameter(torch.randn(len(tasks), k // 2))  # V~_t
            self.template_hypernet = DecomposedHyperNetwork(k, d1, n1, resolve_rank(self.rank, n1),
                                                            self.factorization)
            for name, i, _, _ in self.sites:
                self.adapters[name] = LiteAdapterSite(len(tasks), k, d1, n1, scales[i])
        else:
            self.scales = None
            self.task_embeds = nn.Parameter(torch.randn(len(tasks), k))  # V_t
            for name, i, _, _ in self.sites:
                d = widths[i]
                n = bottleneck(d)
                r = None if mode == 'hyperformer' else resolve_rank(self.rank, n)
                self.adapters[name] = AdapterHyperNetwork(k, d, n, r, self.factorization or 'joint')

        # freeze at build time: the optimizer and DDP only ever see the trainable set
        patterns = [r'task_embeds$', r'adapters\.']
        if mode == 'polyhistor_lite':
            patterns.append(r'template_hypernet\.')
        if train_backbone_norms:
            patterns += [rf'{re.escape(n)}\.' for n, m in self.named_modules()
                         if isinstance(m, nn.LayerNorm)]
        PEFTAttachment(self).freeze(patterns, frozen_eval=frozen_eval)

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        super().init_weights()
        # loading pretrained weights must not change the trainable set
        self.peft.restore_trainable()

    # ------------------------------------------------------------------ adapters
    def task_index(self, tasks: Optional[Sequence[str]]) -> Tuple[Tuple[str, ...], Tensor]:
        """Validate ``tasks`` (``None``: all) and return them with their embedding indices."""
        if tasks is None:
            tasks = self.tasks
        if isinstance(tasks, str):
            tasks = (tasks,)
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown:
            raise KeyError(f'PolyhistorSwin: unknown task(s) {unknown}; this backbone was built for {self.tasks}')
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f'PolyhistorSwin: tasks must be a non-empty list of distinct names, got {tasks}')
        index = torch.tensor([self.tasks.index(t) for t in tasks], device=self.task_embeds.device)
        return tasks, index

    def adapter_params(self, index: Tensor) -> Dict[str, AdapterParams]:
        """Generate every adapter's parameters for the tasks ``index (T',)``: ``{site: AdapterParams}``."""
        v = self.task_embeds.index_select(0, index)
        if self.mode == 'polyhistor_lite':
            return {name: site(v, index, self.template_hypernet) for name, site in self.adapters.items()}
        return {name: gen(v) for name, gen in self.adapters.items()}

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, tasks: Optional[Sequence[str]] = None,
                batched: Optional[bool] = None) -> Dict[str, List[Tensor]]:
        """Features of ``x (B, 3, H, W)`` for each asked task.

        Args:
            x: images.
            tasks: task names (``None``: all tasks of the backbone), e.g. ``['sal']`` runs one pass.
            batched: override ``self.batched`` for this call.

        Returns:
            ``{task: [(B, C_i, H / 2^(i+2), W / 2^(i+2)) for each out index i]}``, in the order of ``tasks``.
        """
        self.check_input(x)
        tasks, index = self.task_index(tasks)
        params = self.adapter_params(index)
        batched = self.batched if batched is None else batched
        if batched and len(tasks) > 1:
            feats = self._forward_groups(x, params, groups=len(tasks))
            chunks = [f.chunk(len(tasks), dim=0) for f in feats]
            return OrderedDict((t, [c[j] for c in chunks]) for j, t in enumerate(tasks))
        out = OrderedDict()
        for j, t in enumerate(tasks):
            sel = torch.tensor([j], device=index.device)
            out[t] = self._forward_groups(x, {k: p.select(sel) for k, p in params.items()}, groups=1)
        return out

    def _forward_groups(self, x: Tensor, params: Dict[str, AdapterParams], groups: int) -> List[Tensor]:
        """One pass over ``groups`` task groups; ``params`` have a leading dimension ``groups``."""
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self.absolute_pos_embed
        x = self.drop_after_pos(x)
        expanded = groups == 1  # tokens are shared by all groups until the first adapter
        outs = []
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                pa = params.get(f'stage{i}_block{j}_attn')
                pf = params.get(f'stage{i}_block{j}_ffn')
                # everything bound now: with_cp re-runs fn in the backward pass, after the loop has moved on
                fn = partial(self._block, block, hw_shape=hw_shape, pa=pa, pf=pf, groups=groups, expanded=expanded)
                x = cp.checkpoint(fn, x, use_reentrant=False) if block.with_cp and x.requires_grad else fn(x)
                expanded = expanded or pa is not None or pf is not None
            out, out_hw_shape = x, hw_shape
            if stage.downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                out = out.view(-1, *out_hw_shape, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                outs.append(out if expanded else _repeat_groups(out, groups))
        return outs

    @staticmethod
    def _block(block: SwinBlock, x: Tensor, hw_shape, pa: Optional[AdapterParams], pf: Optional[AdapterParams],
               groups: int, expanded: bool) -> Tensor:
        """mmseg's ``SwinBlock`` computation with an adapter on each sub-layer output (before the residual)."""
        identity = x
        h = block.attn(block.norm1(x), hw_shape)
        if pa is not None:
            if not expanded:
                identity, h, expanded = _repeat_groups(identity, groups), _repeat_groups(h, groups), True
            h = h + _apply_adapter(h, pa, groups)
        x = identity + h
        identity = x
        h = block.ffn(block.norm2(x), identity=0.0)  # the FFN's output without its residual
        if pf is not None:
            if not expanded:
                identity, h = _repeat_groups(identity, groups), _repeat_groups(h, groups)
            h = h + _apply_adapter(h, pf, groups)
        return identity + h

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, tasks={self.tasks}, reduction_ratio={self.reduction_ratio}, '
                f'rank={self.rank!r}, embed_dims_task={self.embed_dims_task}, scales={self.scales}, '
                f'factorization={self.factorization!r}, positions={self.positions}, batched={self.batched}')


def _apply_adapter(h: Tensor, p: AdapterParams, groups: int) -> Tensor:
    """Adapter branch on ``h (groups * B, L, d)``, task-major, with per-group weights (one ``bmm``)."""
    gb, length, d = h.shape
    out = adapter_branch(h.reshape(groups, (gb // groups) * length, d), p)
    return out.reshape(gb, length, d)
